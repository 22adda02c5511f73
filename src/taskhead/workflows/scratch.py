"""``model.backbone: scratch``: a small randomly initialised model with a tokenizer trained on the run's data.

The tokenizer (WordPiece, byte-level BPE or Unigram, trained with the ``tokenizers`` library on the texts
of the training split) and the model (any transformers architecture by its ``model_type``: bert, roberta,
gpt2, llama, t5, bart, ...) are written to ``RUN_DIR/scratch/`` before training. From there on the
scratch model is an ordinary backbone directory: every task loads it with its own ``AutoModelFor...``
class, so a scratch BERT pretrained with the ``language-modeling`` task, a scratch T5 for translation
or a scratch GPT-2 for completion all go through the same code as a pretrained backbone.

The special tokens and the template that wraps each input follow the architecture's role:
- encoders (architectures with a masked-LM head: bert, roberta, ...): ``[CLS] text [SEP]``, plus
  ``[MASK]``; such a model can also be warm-started into an encoder-decoder by the generation task;
- sequence-to-sequence models (t5, bart, ...): ``text </s>``, decoding starts from ``<pad>`` (as T5);
- decoder-only models (gpt2, llama, ...): no template; ``<|endoftext|>`` ends each document/target.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskhead.errors import ConfigError

if TYPE_CHECKING:
    from taskhead.config import ModelConfig, ScratchConfig
    from taskhead.tasks.base import Example

SCRATCH_DIR = "scratch"
STAMP = "scratch.json"  # what was built, so that --resume reuses the same tokenizer and initial weights

SPECIALS = {
    "encoder": {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
    "seq2seq": {"pad_token": "<pad>", "unk_token": "<unk>", "eos_token": "</s>", "mask_token": "<mask>"},
    "causal": {
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
    },
}

# per-architecture names of the same setting, filled from the generic ones unless the config names them
LAYERS = ("encoder_layers", "decoder_layers", "num_decoder_layers")
HEADS = ("encoder_attention_heads", "decoder_attention_heads", "num_key_value_heads")
FFN = ("intermediate_size", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim")
POSITIONS = ("max_position_embeddings", "n_positions")


def role(architecture: str) -> str:
    """``encoder``, ``seq2seq`` or ``causal`` for a transformers model_type."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    if architecture in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "seq2seq"
    if architecture in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if architecture in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    try:
        AutoConfig.for_model(architecture)
    except ValueError:
        raise ConfigError(
            f"model.scratch.architecture: unknown model type {architecture!r}; expected a transformers "
            f"model_type such as bert, roberta, gpt2, llama, t5 or bart"
        ) from None
    raise ConfigError(
        f"model.scratch.architecture: {architecture!r} has no language-model head in transformers; "
        f"expected an encoder (bert, roberta), a decoder (gpt2, llama) or an encoder-decoder (t5, bart)"
    )


def example_texts(examples: Iterable[Example]) -> Iterator[str]:
    """Every text of the examples (sources, targets, words, questions, ...): the tokenizer's training data."""
    for ex in examples:
        for key, value in ex.items():
            if key.startswith("_") or key == "id":
                continue
            if isinstance(value, str):
                yield value
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                yield from value if key != "tokens" else [" ".join(value)]


def train_tokenizer(texts: Iterable[str], options: ScratchConfig, kind: str) -> Any:
    """A fast transformers tokenizer trained on ``texts`` with the special tokens of the role ``kind``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS[kind]
    ordered = list(dict.fromkeys(specials.values()))
    unk = specials["unk_token"]
    lowercase = [normalizers.Lowercase()] if options.lowercase else []
    if options.tokenizer == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=unk))
        tok.normalizer = normalizers.BertNormalizer(lowercase=options.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer: Any = trainers.WordPieceTrainer(
            vocab_size=options.vocab_size, min_frequency=options.min_frequency, special_tokens=ordered
        )
    elif options.tokenizer == "bpe":
        tok = Tokenizer(models.BPE(unk_token=unk))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), *lowercase])
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=options.vocab_size,
            min_frequency=options.min_frequency,
            special_tokens=ordered,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:  # unigram, SentencePiece-style
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), *lowercase])
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=options.vocab_size, special_tokens=ordered, unk_token=unk
        )
    tok.train_from_iterator(texts, trainer=trainer)
    if kind == "encoder":
        cls, sep = specials["cls_token"], specials["sep_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
        )
    elif kind == "seq2seq":
        eos = specials["eos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1", special_tokens=[(eos, tok.token_to_id(eos))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


def model_config(options: ScratchConfig, model: ModelConfig, tokenizer: Any) -> Any:
    """The architecture's config at the requested size, wired to the tokenizer's special tokens."""
    from transformers import AutoConfig

    user = dict(options.config)
    hidden = int(user.get("hidden_size", options.hidden_size))
    layers = int(user.get("num_hidden_layers", options.num_layers))
    heads = int(user.get("num_attention_heads", options.num_heads))
    if hidden % heads:
        raise ConfigError(
            f"model.scratch: hidden_size {hidden} must be a multiple of num_attention_heads {heads}"
        )
    ids = {
        name.replace("_token", "_token_id"): tokenizer.convert_tokens_to_ids(t)
        for name, t in SPECIALS[role(options.architecture)].items()
        if name in ("pad_token", "bos_token", "eos_token")
    }
    try:
        config = AutoConfig.for_model(
            options.architecture,
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            **ids,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.scratch: {exc}") from None
    derived: dict[str, Any] = {}
    for names, value in ((LAYERS, layers), (HEADS, heads), (FFN, 4 * hidden)):
        derived.update({n: value for n in names if hasattr(config, n)})
    derived.update({n: max(512, model.max_length) for n in POSITIONS if hasattr(config, n)})
    if hasattr(config, "d_kv"):
        derived["d_kv"] = hidden // heads
    if getattr(config, "is_encoder_decoder", False):
        derived["decoder_start_token_id"] = tokenizer.pad_token_id
        derived["forced_bos_token_id"] = None
        derived["forced_eos_token_id"] = None
    for key, value in {**derived, **user}.items():
        setattr(config, key, value)
    return config


def build(
    options: ScratchConfig, model: ModelConfig, examples: list[Example], directory: Path, *, seed: int
) -> str:
    """Train the tokenizer, create the randomly initialised model, save both in ``directory``; returns it.

    A directory already holding a scratch model built with the same settings is reused (``--resume``).
    """
    import hashlib

    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, set_seed

    from taskhead.console import info
    from taskhead.workflows.files import atomic_write_json
    from taskhead.workflows.outputs import replace_dir

    kind = role(options.architecture)
    texts = list(example_texts(examples))
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    wanted = {"scratch": options.model_dump(), "max_length": model.max_length, "seed": seed, "data": digest}
    stamp = directory / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return str(directory)
    from taskhead.console import process_rank

    if process_rank() > 0:  # multi-process run: rank 0 builds, the others wait for its stamp
        return _wait_for(stamp, wanted, directory)
    if not texts:
        raise ConfigError("model.backbone: scratch needs training data to train its tokenizer on")
    tokenizer = train_tokenizer(texts, options, kind)
    config = model_config(options, model, tokenizer)
    auto = {"encoder": AutoModelForMaskedLM, "seq2seq": AutoModelForSeq2SeqLM, "causal": AutoModelForCausalLM}
    set_seed(seed)
    net = auto[kind].from_config(config)

    def fill(target: Path) -> None:
        tokenizer.save_pretrained(target)
        net.save_pretrained(target)
        atomic_write_json(target / STAMP, wanted)

    replace_dir(directory, fill)
    params = sum(p.numel() for p in net.parameters())
    info(
        f"scratch model: {options.architecture} ({kind}), {params / 1e6:.2f}M parameters, "
        f"{options.tokenizer} tokenizer with {len(tokenizer)} tokens trained on {len(texts)} texts"
    )
    return str(directory)


def _wait_for(stamp: Path, wanted: dict[str, Any], directory: Path, timeout: float = 1800.0) -> str:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(stamp.read_text()) == wanted:
                return str(directory)
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise ConfigError(f"model.backbone: scratch: rank 0 did not build {directory} within {timeout:g} s")
