"""Text generation: encoder-decoder and decoder-only models that write text token by token.

Three model families, chosen from the backbone (``architecture: auto``) or by name:
- ``encoder-decoder``: any sequence-to-sequence model of transformers (T5, BART, Marian, ...);
- ``warm-start``: an encoder-only backbone (the default MiniLM) warm-starts both halves of an
  ``EncoderDecoderModel`` (cross-attention added, weights optionally tied) — the offline default;
- ``decoder-only``: any causal language model, trained on prompt + completion with the loss masked on the
  prompt (``train_on_prompt`` to keep it).

Training uses the model's own loss (labels shifted inside the model). Evaluation and prediction generate
with the configured decoding settings and an explicit ``max_new_tokens``; metrics are ROUGE, BLEU and chrF
on detokenized text against every reference, tokenized for the script of the references or as
``metrics_tokenize`` says (SQuAD EM/F1 too for abstractive QA).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from taskhead.errors import ConfigError, DataError
from taskhead.tasks.base import Example, Features, SplitSummary, TaskBase, TaskTraits, directions

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from taskhead.config import DataConfig, ModelConfig
    from taskhead.engine.forward import Batch, StepOutput

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


class GenerationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["generation"] = "generation"
    architecture: Literal["auto", "encoder-decoder", "warm-start", "decoder-only"] = Field(
        "auto",
        description="`auto`: seq2seq backbones as they are, causal LMs decoder-only, encoders warm-start.",
    )
    tie_encoder_decoder: bool = Field(False, description="Warm start: share the encoder and decoder weights.")
    max_target_length: int = Field(
        128, ge=1, description="Target tokens kept for training (longer: counted)."
    )
    prompt_template: str = Field("{source}\n", description="Decoder-only: the prompt before the completion.")
    train_on_prompt: bool = Field(False, description="Decoder-only: also train on the prompt tokens.")
    qa_template: str = Field(
        "question: {question} context: {context}", description="Input of abstractive QA from a SQuAD file."
    )
    parallel: tuple[str, str] | None = Field(
        None,
        description="Parallel text files: [source suffix, target suffix], e.g. [en, de] for train.en/.de.",
    )
    max_new_tokens: int = Field(64, ge=1, description="Longest generated text, in tokens.")
    min_new_tokens: int = Field(
        0, ge=0, description="Shortest generated text, in tokens (at most max_new_tokens)."
    )
    num_beams: int = Field(1, ge=1, description="Beam search width (1: greedy or sampling).")
    length_penalty: float = Field(
        1.0,
        description="Beam search (num_beams > 1): exponent of the length in the score; > 0 favours longer.",
    )
    no_repeat_ngram_size: int = Field(0, ge=0, description="No n-gram of this size occurs twice (0: off).")
    early_stopping: bool = Field(
        False, description="Beam search (num_beams > 1): stop once num_beams complete candidates exist."
    )
    do_sample: bool = Field(False, description="Sample instead of greedy/beam search.")
    temperature: float = Field(1.0, gt=0, description="Sampling (do_sample): divides the logits.")
    top_k: int = Field(50, ge=0, description="Sampling (do_sample): the k likeliest tokens only (0: all).")
    top_p: float = Field(
        1.0, gt=0, le=1, description="Sampling (do_sample): the likeliest tokens up to this probability mass."
    )
    seed: int | None = Field(None, description="Sampling seed (reproducible samples).")
    metrics_tokenize: str = Field(
        "auto",
        description="Tokenizer of BLEU and ROUGE: `auto` (from the script of the references), or one of "
        "sacrebleu's: 13a, intl, zh, char, ja-mecab, ko-mecab, flores101, flores200, spm, none.",
    )

    @field_validator("metrics_tokenize")
    @classmethod
    def _tokenizer_available(cls, value: str) -> str:
        from taskhead.tasks.generation_metrics import tokenizer_problem

        problem = tokenizer_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("min_new_tokens")
    @classmethod
    def _min_within_max(cls, value: int, info: ValidationInfo) -> int:
        # transformers stops at max_new_tokens and drops a larger minimum without a word
        longest = info.data.get("max_new_tokens")
        if longest is not None and value > longest:
            raise ValueError(f"{value} exceeds max_new_tokens={longest}; expected at most {longest}")
        return value


# The options that only change how text is generated: chosen again at prediction time (`--set`).
DECODING_SETTINGS = (
    "max_new_tokens",
    "min_new_tokens",
    "num_beams",
    "length_penalty",
    "no_repeat_ngram_size",
    "early_stopping",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "seed",
)
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "seed")
BEAMS_ONLY = ("length_penalty", "early_stopping")


class GenerationTask(TaskBase):
    name: ClassVar[str] = "generation"
    Options: ClassVar[type[BaseModel]] = GenerationOptions
    traits: ClassVar[TaskTraits] = TaskTraits(
        sequence_labels=True,  # the collator pads labels as sequences of their own length
        # Training loss: ``loss`` below from the logits, normalised by the accumulated batch's target-token
        # count (``num_items_in_batch``), not the model's own per-micro-batch mean, which gradient
        # accumulation would multiply by the accumulation steps (encoder-decoder models get their decoder
        # inputs from the labels).
        model_computes_loss=False,
        reports_perplexity=True,  # exp of the mean target-token loss, next to the loss
        # Random batch order unless train.group_by_length says otherwise: on SciTLDR length-grouped batches
        # trained to ROUGE-1 23.6 against 28.1 in random order (benchmarks/README.md), at 1.8x the peer's
        # speed.
        group_by_length=False,
        lost_message=(
            "{n} of {total} targets are longer than task.max_target_length (decoder-only: or the room in "
            "model.max_length / the backbone's positions) and were cut for the loss (metrics use the whole "
            "references)"
        ),
        truncated_message=(
            "{n} of {total} sources are longer than model.max_length={max_length} allows (decoder-only: "
            "beside their target or task.max_new_tokens, within the backbone's positions); the prompt's "
            "end was kept"
        ),
    )

    def __init__(
        self, options: GenerationOptions, *, architecture: str | None = None, qa: bool = False, **_: Any
    ) -> None:
        self.options = options
        self.architecture = architecture
        self.qa = qa
        self.labels: list[str] = []
        self.tokenizer: Any = None
        self.prompt_room = 0  # decoder-only: prompt tokens kept for generation (set by encode)
        self._positions: dict[str, int | None] = {}  # backbone directory -> its position embeddings

    @property
    def default_metric(self) -> str:
        return "rougeL"

    def eval_metrics(self, examples: list[Example]) -> dict[str, bool]:
        from taskhead.tasks.generation_metrics import ROUGE_TYPES

        names = [*ROUGE_TYPES, "bleu", "chrf"]
        return directions(*names, *(("exact_match", "f1") if self.qa else ()))

    @property
    def causal(self) -> bool:
        return self.architecture == "decoder-only"

    @property
    def loss_shifts_labels(self) -> bool | None:
        """Whether ``loss`` predicts ``labels[:, 1:]`` (decoder-only): the target count skips position 0."""
        return self.causal

    # ------------------------------------------------------------------ reading

    def read(self, path: str | Path, data: DataConfig, *, labelled: bool = True) -> list[Example]:
        """Source/target pairs from parallel text files (``task.parallel``), a SQuAD file (abstractive QA
        through ``task.qa_template``) or a table; unlabelled input also from standard input or text lines."""
        fmt, spec = data.format, str(path)
        suffix = Path(spec).suffix.lower()
        plain = not labelled and self.options.parallel is None  # parallel files take precedence
        if plain and spec == "-" and fmt == "auto":  # standard input: JSON Lines or text lines
            return self._read_stdin(data)
        if plain and (fmt == "text" or (fmt == "auto" and suffix == ".txt")):
            from taskhead.data.readers import numbered_lines, read_text_source

            lines = numbered_lines(read_text_source(path, data.encoding))
            return [{"_where": f"{path}:{n}", "source": line} for n, line in lines if line.strip()]
        examples = []
        for p in self._read_pairs(path, data, labelled=labelled):
            ex: Example = {"_where": p.where, "source": p.source}
            if p.id is not None:
                ex["id"] = p.id
            if labelled:
                ex["targets"] = list(p.targets)
            examples.append(ex)
        return examples

    def _read_stdin(self, data: DataConfig) -> list[Example]:
        from taskhead.data.readers import read_table

        column = str(data.columns.source or "source")
        table = read_table("-", "auto", text_column=column)
        return [
            self.to_example({"source": row.values.get(column), "id": row.values.get("id")}, table.loc(row))
            for row in table.rows
        ]

    def _read_pairs(self, path: str | Path, data: DataConfig, *, labelled: bool) -> list[Any]:
        """``seq2seq`` pairs from parallel files, a SQuAD file or a table."""
        from taskhead.data import seq2seq

        fmt, spec = data.format, str(path)
        if self.options.parallel is not None and fmt in ("auto", "text"):
            src, tgt = self.options.parallel
            stem = spec[: -len(src) - 1] if spec.endswith(f".{src}") else spec
            return seq2seq.read_parallel(
                f"{stem}.{src}",
                f"{stem}.{tgt}" if labelled else None,
                labelled=labelled,
                encoding=data.encoding,
                max_errors=data.max_errors,
            )
        if (
            fmt in ("auto", "jsonl")
            and Path(spec).suffix.lower() == ".json"
            and _is_squad(path, data.encoding)
        ):
            self.qa = True
            pairs, skipped = seq2seq.pairs_from_squad(
                path,
                template=self.options.qa_template,
                labelled=labelled,
                encoding=data.encoding,
                max_errors=data.max_errors,
            )
            if skipped:
                from taskhead.console import warn

                warn(
                    f"{path}: {skipped} unanswerable questions skipped (abstractive QA needs an answer text)"
                )
            return pairs
        cols = data.columns
        return seq2seq.read_pairs(
            path,
            "auto" if fmt == "auto" else fmt,
            source=str(cols.source or "source"),
            target=str(cols.target or "target"),
            labelled=labelled,
            header=data.header,
            encoding=data.encoding,
            quoting=data.quoting,
            reference_delimiter=None,  # several references: a JSON Lines list
            max_errors=data.max_errors,
            id_column=str(cols.id or "id"),
        )

    def to_example(self, record: Any, where: str) -> Example:
        """One input: a source text, a dict with ``source`` (or ``text``), or a question and its context
        (a ``(question, context)`` pair or a dict) put through ``task.qa_template``."""
        if isinstance(record, str):
            record = {"source": record}
        elif isinstance(record, (tuple, list)) and len(record) == 2:
            record = {"question": record[0], "context": record[1]}
        if not isinstance(record, dict):
            raise DataError(
                [
                    f"{where}: expected a source text, a dict with 'source' (or 'text'), or a question and "
                    f"its context; found {type(record).__name__}"
                ]
            )
        source = record.get("source", record.get("text"))
        if source is None and self.options.parallel and self.options.parallel[0] in record:
            source = record[self.options.parallel[0]]  # a run trained on train.en/train.de takes {"en": ...}
        if source is None and ("question" in record or "context" in record):
            parts = {key: record.get(key) for key in ("question", "context")}
            for key, value in parts.items():
                if not isinstance(value, str) or not value.strip():
                    raise DataError([f"{where}: {key}: expected a non-empty string, found {value!r}"])
            source = self.options.qa_template.format(**parts)
        if not isinstance(source, str) or not source.strip():
            raise DataError(
                [
                    f"{where}: source: expected a non-empty text (a string, or a dict with 'source', 'text' "
                    f"or 'question' and 'context'), found {source!r}"
                ]
            )
        ex: Example = {"_where": where, "source": source}
        if record.get("id") is not None:
            ex["id"] = record["id"]
        return ex

    def summarize(self, name: str, examples: list[Example], features: Features | None) -> SplitSummary:
        refs = sum(len(ex.get("targets", [])) for ex in examples)
        dist = {"references": refs} if refs else {}
        return SplitSummary(name, len(examples), features.truncated if features else 0, 0, dist)

    # ------------------------------------------------------------------ encoding

    def _resolve_architecture(self, backbone: str, model: ModelConfig) -> str:
        if self.architecture is not None:
            return self.architecture
        if self.options.architecture != "auto":
            return self.options.architecture
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(backbone, trust_remote_code=model.trust_remote_code)
        if getattr(config, "is_encoder_decoder", False):
            return "encoder-decoder"
        if any(a.endswith(CAUSAL_SUFFIXES) for a in getattr(config, "architectures", None) or []):
            return "decoder-only"
        return "warm-start"

    def encode(self, examples: list[Example], tokenizer: Any, model: ModelConfig) -> Features:
        self.tokenizer = tokenizer
        if self.architecture is None:
            from taskhead.engine.backbones import backbone_dir

            self.architecture = self._resolve_architecture(backbone_dir(tokenizer, model), model)
        limit = self.options.max_target_length
        labelled = bool(examples) and "targets" in examples[0]
        if self.causal:
            return self._encode_causal(examples, tokenizer, model, labelled=labelled)
        inputs, meta, cut_sources, cut_targets = [], [], 0, 0
        enc = tokenizer([ex["source"] for ex in examples], truncation=False, verbose=False)
        keys = [k for k in ("input_ids", "attention_mask") if k in enc]
        targets = (
            tokenizer(text_target=[ex["targets"][0] for ex in examples], verbose=False)["input_ids"]
            if labelled
            else None
        )
        for i in range(len(examples)):
            item = {k: enc[k][i][: model.max_length] for k in keys}
            if len(enc["input_ids"][i]) > model.max_length:
                cut_sources += 1
                item["input_ids"][-1] = enc["input_ids"][i][-1]  # keep the closing special token
            if targets is not None:
                ids = list(targets[i])
                if self.architecture == "warm-start" and ids and ids[0] == tokenizer.cls_token_id:
                    ids = ids[1:]  # the decoder starts from [CLS]; it learns the text and [SEP]
                if len(ids) > limit:
                    cut_targets += 1
                    ids = [*ids[: limit - 1], ids[-1]]
                item["labels"] = ids
            inputs.append(item)
            meta.append(0)
        return Features(
            inputs, list(range(len(examples))), truncated=cut_sources, lost=cut_targets, meta=meta
        )

    def sequence_room(self, tokenizer: Any, model: ModelConfig) -> int:
        """Decoder-only: the longest sequence the model may see, ``model.max_length`` or the backbone's
        positions if fewer (a longer one fails with an index error in the position embeddings)."""
        from taskhead.engine.backbones import backbone_dir

        directory = backbone_dir(tokenizer, model)
        if directory not in self._positions:  # encode runs per chunk and per served request: read it once
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(directory, trust_remote_code=model.trust_remote_code)
            self._positions[directory] = getattr(config, "max_position_embeddings", None)
        positions = self._positions[directory]
        return min(model.max_length, positions) if positions else model.max_length

    def _encode_causal(
        self, examples: list[Example], tokenizer: Any, model: ModelConfig, *, labelled: bool
    ) -> Features:
        """Prompt + target (training) and prompt + ``max_new_tokens`` (generation) within ``sequence_room``.

        A target is cut to ``max_target_length`` and to the room left after one prompt token (counted in
        ``lost``); a prompt is cut from the left, keeping its end next to the answer, to fit beside its
        target and beside ``max_new_tokens`` (counted in ``truncated``). ``meta`` is the training prompt's
        length; generation uses its last ``prompt_room`` tokens.
        """
        room = self.sequence_room(tokenizer, model)
        new = self.options.max_new_tokens
        if new >= room:
            raise ConfigError(
                f"task.max_new_tokens: {new} leaves no room for a prompt in {room} tokens (model.max_length "
                f"or the backbone's positions, whichever is fewer); use at most {room - 1}"
            )
        self.prompt_room = room - new
        target_room = min(self.options.max_target_length, room - 1)  # at least one prompt token
        eos = tokenizer.eos_token_id
        prompts = [self.options.prompt_template.format(source=ex["source"]) for ex in examples]
        p_enc = tokenizer(prompts, truncation=False, verbose=False)["input_ids"]
        targets = [ex["targets"][0] for ex in examples] if labelled else []
        t_enc = tokenizer(targets, add_special_tokens=False, verbose=False)["input_ids"] if labelled else []
        inputs, meta, cut_prompts, cut_targets = [], [], 0, 0
        for i, prompt in enumerate(p_enc):
            target: list[int] = []
            if labelled:
                target = [*t_enc[i], eos]
                if len(target) > target_room:
                    cut_targets += 1
                    target = [*target[: target_room - 1], eos]
            keep = min(room - len(target), self.prompt_room) if labelled else self.prompt_room
            if len(prompt) > keep:
                cut_prompts += 1
            prompt = prompt[-(room - len(target)) :]  # the training prompt; generation keeps prompt_room
            ids = prompt + target
            item: dict[str, Any] = {"input_ids": ids, "attention_mask": [1] * len(ids)}
            if labelled:
                item["labels"] = (prompt if self.options.train_on_prompt else [-100] * len(prompt)) + target
            inputs.append(item)
            meta.append(len(prompt))
        return Features(
            inputs, list(range(len(examples))), truncated=cut_prompts, lost=cut_targets, meta=meta
        )

    # ------------------------------------------------------------------ model

    def build_model(self, backbone: str, model: ModelConfig, tokenizer: Any) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, EncoderDecoderModel

        from taskhead.engine.backbones import SAFE_LOADING
        from taskhead.engine.modeling import no_classification_head

        no_classification_head(model, "generation")
        self.architecture = self._resolve_architecture(backbone, model)
        common = {"trust_remote_code": model.trust_remote_code, **SAFE_LOADING}
        if self.architecture == "warm-start":
            if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
                raise ConfigError(
                    "task.architecture: warm-start needs a tokenizer with [CLS] and [SEP] tokens "
                    "(BERT-style); use a sequence-to-sequence or causal backbone instead"
                )
            net = EncoderDecoderModel.from_encoder_decoder_pretrained(
                backbone,
                backbone,
                tie_encoder_decoder=self.options.tie_encoder_decoder,
                encoder_use_safetensors=True,
                decoder_use_safetensors=True,
            )
            net.config.decoder_start_token_id = tokenizer.cls_token_id
            net.config.eos_token_id = tokenizer.sep_token_id
            net.config.pad_token_id = tokenizer.pad_token_id
            net.config.vocab_size = net.config.decoder.vocab_size
        elif self.architecture == "encoder-decoder":
            net = AutoModelForSeq2SeqLM.from_pretrained(backbone, **common)
        else:
            net = AutoModelForCausalLM.from_pretrained(backbone, **common)
            net.config.pad_token_id = tokenizer.pad_token_id
        from taskhead.engine.modeling import fit_embeddings

        return fit_embeddings(net, tokenizer)

    def save_model(self, model: torch.nn.Module, directory: Path) -> None:
        """``save_pretrained`` with ``generation_config.json`` holding the decoder start, end and pad tokens
        and the run's decoding settings, so that plain transformers' ``generate`` decodes as taskhead does."""
        model.generation_config = self.generation_config(model)  # type: ignore[assignment]
        model.save_pretrained(directory)  # type: ignore[operator]

    # ------------------------------------------------------------------ decoding settings

    def decoding_settings(self) -> dict[str, Any]:
        """The run's decoding settings (``--set`` keys) and their values."""
        return {key: getattr(self.options, key) for key in DECODING_SETTINGS}

    def with_decoding(self, settings: dict[str, Any], where: str = "--set") -> GenerationTask:
        """A copy of this task that decodes with ``settings`` over the run's own.

        Raises:
            ConfigError: an unknown key (with the closest match) or a value out of range, starting with
                ``where``.
        """
        import difflib

        from pydantic import ValidationError

        for key in settings:
            if key not in DECODING_SETTINGS:
                close = difflib.get_close_matches(str(key), DECODING_SETTINGS, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ConfigError(
                    f"{where} {key}: not a decoding setting (expected one of "
                    f"{', '.join(DECODING_SETTINGS)}){hint}"
                )
        try:
            options = GenerationOptions.model_validate({**self.options.model_dump(), **settings})
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(part) for part in err["loc"])
            raise ConfigError(
                f"{where} {key}: {err['msg']} (got {settings.get(key, err.get('input'))!r})"
            ) from None
        for keys, needs, ok in (
            (SAMPLING_ONLY, "do_sample=true", options.do_sample),
            (BEAMS_ONLY, "num_beams > 1", options.num_beams > 1),
        ):
            idle = [key for key in keys if key in settings]
            if idle and not ok:  # transformers would ignore them: say so instead of decoding as before
                raise ConfigError(
                    f"{where} {idle[0]}: applies only with {needs} (this decoding has do_sample="
                    f"{str(options.do_sample).lower()}, num_beams={options.num_beams}); set that too"
                )
        task = GenerationTask(options, architecture=self.architecture, qa=self.qa)
        task.tokenizer = self.tokenizer
        return task

    def load_model(self, directory: Path, model: ModelConfig) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        from taskhead.engine.backbones import SAFE_LOADING

        auto = AutoModelForCausalLM if self.causal else AutoModelForSeq2SeqLM
        return auto.from_pretrained(directory, trust_remote_code=model.trust_remote_code, **SAFE_LOADING)

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        """Token cross-entropy, shifted for causal models (their logits predict the next token)."""
        import torch.nn.functional as F

        logits = outputs["logits"].float()
        if self.causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        total = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum().clamp(min=1)
        return total / count

    # ------------------------------------------------------------------ generation

    def generation_config(self, model: Any) -> Any:
        from transformers import GenerationConfig

        o = self.options
        kwargs: dict[str, Any] = {
            "max_new_tokens": o.max_new_tokens,
            "min_new_tokens": o.min_new_tokens,
            "num_beams": o.num_beams,
            "length_penalty": o.length_penalty,
            "no_repeat_ngram_size": o.no_repeat_ngram_size,
            "early_stopping": o.early_stopping,
            "do_sample": o.do_sample,
            "pad_token_id": model.config.pad_token_id,
            "eos_token_id": model.config.eos_token_id,
        }
        if o.do_sample:
            kwargs.update(temperature=o.temperature, top_k=o.top_k, top_p=o.top_p)
        start = getattr(model.config, "decoder_start_token_id", None)
        if start is not None:
            kwargs["decoder_start_token_id"] = start
        return GenerationConfig(**kwargs)

    def run_outputs(
        self,
        model: PreTrainedModel,
        features: Features,
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        *,
        batch_size: int,
        device: torch.device,
        precision: str = "fp32",
        loss_fn: Any = None,
        progress: str | None = None,
    ) -> tuple[list[np.ndarray], float | None]:
        """Generated token ids per feature (input order) and the mean teacher-forced loss when labelled
        (weighted by target tokens), through ``engine.forward.forward_in_order``; ``model`` is the run's
        transformers seq2seq or causal LM."""
        from taskhead.engine.forward import forward_in_order

        config = self.generation_config(model)
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        # Seeded sampling draws each input's sample alone, from the seed: in a batch, one row's random draws
        # depend on which rows share it (the server merges requests), so a request's sample would change
        # with its batch mates and with batch_size.
        seeded = self.options.do_sample and self.options.seed is not None
        generated, loss = forward_in_order(
            model,
            features.inputs,
            lambda batch: self._generate_batch(model, batch, features, config, pad, seeded),
            lengths=features.lengths(),
            batch_size=1 if seeded else batch_size,
            device=device,
            precision=precision,
            collate=collate,
            progress=progress,
        )
        return generated, loss

    def _generate_batch(
        self, model: Any, batch: Batch, features: Features, config: Any, pad: Any, seeded: bool
    ) -> StepOutput:
        """One batch: the teacher-forced loss (summed over target tokens) when labelled, then ``generate``
        on the prompts (decoder-only prompts padded on the left)."""
        import torch

        from taskhead.engine.forward import StepOutput

        if seeded:
            torch.manual_seed(self.options.seed)
        loss, tokens = 0.0, 0
        if "labels" in batch.items[0]:
            padded = batch.padded()
            tokens = int((padded["labels"] != -100).sum())
            loss = float(model(**padded).loss) * tokens
        prompts = [  # decoder-only: the prompt's end that leaves room for max_new_tokens
            f["input_ids"][: features.meta[i]][-self.prompt_room :] if self.causal else f["input_ids"]
            for f, i in zip(batch.items, batch.index, strict=True)
        ]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for j, p in enumerate(prompts):  # decoder-only prompts are padded on the left
            if self.causal:
                ids[j, width - len(p) :], mask[j, width - len(p) :] = torch.as_tensor(p), 1
            else:
                ids[j, : len(p)], mask[j, : len(p)] = torch.as_tensor(p), 1
        out = model.generate(
            input_ids=ids.to(batch.device), attention_mask=mask.to(batch.device), generation_config=config
        )
        out = out[:, width:] if self.causal else out
        return StepOutput([row.cpu().numpy() for row in out], loss, tokens)

    def decode(
        self, outputs: np.ndarray | list[np.ndarray], features: Features, examples: list[Example]
    ) -> list[dict[str, Any]]:
        texts = self.tokenizer.batch_decode([list(map(int, o)) for o in outputs], skip_special_tokens=True)
        predictions = []
        for ex, text in zip(examples, texts, strict=True):
            pred: dict[str, Any] = {"id": ex["id"]} if "id" in ex else {}
            pred["generated"] = text.strip()
            predictions.append(pred)
        return predictions

    def score(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict[str, Any]:
        from taskhead.tasks.generation_metrics import text_metrics

        hyps = [p["generated"] for p in predictions]
        refs = [ex["targets"] for ex in examples]
        metrics: dict[str, Any] = text_metrics(hyps, refs, tokenize=self.options.metrics_tokenize)
        if self.qa:
            from taskhead.tasks.squad_metrics import squad_scores

            keys = [str(k) for k in range(len(examples))]
            qa = squad_scores(dict(zip(keys, hyps, strict=True)), dict(zip(keys, refs, strict=True)))
            metrics.update(exact_match=qa["exact_match"], f1=qa["f1"])
        return metrics

    def state(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "qa": self.qa}

    def model_card(self) -> str:
        o = self.options
        mode = (
            "sampling"
            if o.do_sample
            else (f"beam search ({o.num_beams} beams)" if o.num_beams > 1 else "greedy")
        )
        lines = [
            f"- Text generation, {self.architecture} model; decoding: {mode}, "
            f"max_new_tokens {o.max_new_tokens} (choose others at prediction time: "
            "`taskhead predict RUN_DIR input.txt --set num_beams=4`)",
            "- `model/generation_config.json` holds these decoding settings and the decoder's start, end and "
            "pad tokens, so plain transformers generates as taskhead does:",
            "",
            "```python",
        ]
        source = "some text"
        if self.qa:
            source = o.qa_template.format(question="what is it", context="some text")
        if self.causal:
            prompt = o.prompt_template.format(source=source)
            lines += [
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "",
                "tokenizer = AutoTokenizer.from_pretrained('RUN_DIR/model')",
                "model = AutoModelForCausalLM.from_pretrained('RUN_DIR/model')",
                f"inputs = tokenizer({prompt!r}, return_tensors='pt')  # task.prompt_template",
                "out = model.generate(**inputs)",
                "print(tokenizer.decode(out[0, inputs['input_ids'].shape[1] :], skip_special_tokens=True))",
            ]
        else:
            lines += [
                "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
                "",
                "tokenizer = AutoTokenizer.from_pretrained('RUN_DIR/model')",
                "model = AutoModelForSeq2SeqLM.from_pretrained('RUN_DIR/model')",
                f"inputs = tokenizer([{source!r}], return_tensors='pt')",
                "print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))",
            ]
        return "\n".join([*lines, "```"])


def _is_squad(path: str | Path, encoding: str) -> bool:
    from taskhead.data.squad import is_squad_json

    return str(path) != "-" and is_squad_json(path, encoding)
