"""Language modeling: masked-LM pretraining of encoders, causal-LM pretraining of decoders, on raw text.

Used to pretrain a small model from scratch (``model.backbone: scratch``, tokenizer trained on the data) or to
continue pretraining a backbone on in-domain text (domain adaptation). The run's ``model/`` (or the run
directory itself) is then a backbone that every other task accepts as ``model.backbone``.

Training and evaluation text is concatenated, documents separated by the end token (causal) or [SEP]
(masked), and cut into blocks of ``block_size`` tokens (the last, shorter block is kept). Masked-LM batches
are masked afresh each time (15 % of tokens: 80 % [MASK], 10 % random, 10 % kept; transformers'
``DataCollatorForLanguageModeling``); evaluation masks with a fixed seed, so scores compare across epochs.
Metrics: loss and perplexity (per target token), and masked-token accuracy for masked LMs.

Prediction on single texts: a causal LM scores each text (loss, perplexity); a masked LM fills each mask
token of the text with its ``top_k`` candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from taskhead.engine.backbones import backbone_dir
from taskhead.errors import ConfigError, DataError
from taskhead.tasks.base import Example, Features, SplitSummary, TaskBase, TaskTraits, directions

if TYPE_CHECKING:
    import torch

    from taskhead.config import DataConfig, ModelConfig
    from taskhead.engine.forward import Batch, StepOutput

TEXT_SUFFIXES = (".txt", ".tokens", ".raw", ".text")


class LanguageModelingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["language-modeling"] = "language-modeling"
    objective: Literal["auto", "mlm", "clm"] = Field(
        "auto", description="`mlm` masked (encoders), `clm` causal (decoders); auto: from the backbone."
    )
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="Share of tokens masked (masked LM).")
    block_size: int | None = Field(
        None, ge=8, description="Tokens per training block; null: model.max_length."
    )
    documents: Literal["line", "paragraph"] = Field(
        "line", description="Text files: one document per line, or per blank-line-separated paragraph."
    )
    top_k: int = Field(5, ge=1, description="Masked LM prediction: candidates per mask token.")


class MaskingCollator:
    """Pads a batch and masks it for masked-LM training (transformers' masking rule and generator)."""

    def __init__(
        self, tokenizer: Any, probability: float, *, seed: int | None, pad_to_multiple_of: int | None = None
    ) -> None:
        import torch
        from transformers import DataCollatorForLanguageModeling

        from taskhead.data.collate import PadCollator

        self.pad = PadCollator(tokenizer.pad_token_id, pad_to_multiple_of=pad_to_multiple_of)
        self.masker = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=probability, seed=seed
        )
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        keys = ("input_ids", "attention_mask", "token_type_ids")
        batch = self.pad([{k: f[k] for k in keys if k in f} for f in features])
        special = torch.isin(batch["input_ids"], self.special) | (batch["attention_mask"] == 0)
        if self.masker.seed is not None and getattr(self.masker, "generator", None) is None:
            self.masker.create_rng("pt")
        batch["input_ids"], batch["labels"] = self.masker.torch_mask_tokens(
            batch["input_ids"], special_tokens_mask=special
        )
        return batch


class LanguageModelingTask(TaskBase):
    name: ClassVar[str] = "language-modeling"
    Options: ClassVar[type[BaseModel]] = LanguageModelingOptions
    traits: ClassVar[TaskTraits] = TaskTraits(
        # Training loss: ``loss`` below, normalised by the accumulated batch's target-token count
        # (``num_items_in_batch``); a model's own mean loss would be multiplied by the accumulation steps.
        model_computes_loss=False,
        reports_perplexity=True,
        truncated_message=(
            "{n} of {total} texts are longer than the block size and were cut (prediction scores whole "
            "blocks)"
        ),
    )

    def __init__(self, options: LanguageModelingOptions, *, objective: str | None = None, **_: Any) -> None:
        self.options = options
        self.objective = objective if objective is not None else None
        self.labels: list[str] = []
        self.tokenizer: Any = None

    @property
    def default_metric(self) -> str:
        return "loss"

    def eval_metrics(self, examples: list[Example]) -> dict[str, bool]:
        # before the backbone is read, objective auto may still become a masked LM (which reports accuracy)
        masked = self.masked if self.objective else self.options.objective in ("mlm", "auto")
        return directions("perplexity", *(("accuracy",) if masked else ()))

    @property
    def masked(self) -> bool:
        return self.objective == "mlm"

    @property
    def loss_shifts_labels(self) -> bool | None:
        """Whether ``loss`` predicts ``labels[:, 1:]`` (causal LM): the target count skips position 0."""
        return not self.masked

    @property
    def example_input(self) -> str:
        """The model card's example input (Python literal): a masked LM fills a mask."""
        if not self.masked:
            return '["some text"]'
        mask = getattr(self.tokenizer, "mask_token", None) or "[MASK]"
        return repr([f"some {mask} text"])

    # ------------------------------------------------------------------ reading

    def read(self, path: str | Path, data: DataConfig, *, labelled: bool = True) -> list[Example]:
        """Documents of a text file (per line or paragraph) or of a table's text column.

        Examples read as labelled (training, evaluation) are grouped into blocks; unlabelled ones
        (prediction) are scored or filled one by one.
        """
        from taskhead.data.readers import read_data_table, read_text_source

        spec = str(path)
        fmt = self.input_format(path, data)
        if fmt in ("text", "paragraphs"):
            text = read_text_source(path, data.encoding)
            examples = self._documents(spec, text, labelled)
        else:
            column = str(data.columns.text)
            table = read_data_table(path, data, text_column=column, fmt=fmt)
            problems, examples = [], []
            for row in table.rows:
                value = row.values.get(column)
                if not isinstance(value, str) or not value.strip():
                    what = "missing" if value is None else f"empty or not text ({value!r})"
                    problems.append(f"{table.loc(row)}: {column}: {what}; expected the document's text")
                    if len(problems) >= data.max_errors:
                        break
                    continue
                ex: Example = {"_where": table.loc(row), "text": value, "_group": labelled}
                if row.values.get(str(data.columns.id or "id")) is not None:
                    ex["id"] = row.values[str(data.columns.id or "id")]
                examples.append(ex)
            if problems:
                raise DataError(problems)
        if not examples:
            raise DataError([f"{spec}: no text found; expected one document per line (or per paragraph)"])
        return examples

    def input_format(self, path: str | Path, data: DataConfig, *, labelled: bool = False) -> str:
        """``text`` (one document a line), ``paragraphs`` (documents separated by blank lines) for text
        files and standard input, else the table format of the extension or ``data.format``."""
        from taskhead.data.readers import detect_format

        suffix = Path(str(path)).suffix.lower()
        if data.format == "text" or (data.format == "auto" and (suffix in TEXT_SUFFIXES or str(path) == "-")):
            return "text" if self.options.documents == "line" else "paragraphs"
        return detect_format(path, data.format)

    def _documents(self, spec: str, text: str, group: bool) -> list[Example]:
        from taskhead.data.readers import split_lines

        lines = split_lines(text)
        if self.options.documents == "line":
            return [
                {"_where": f"{spec}:{n}", "text": line.strip(), "_group": group}
                for n, line in enumerate(lines, 1)
                if line.strip()
            ]
        docs, current, start = [], [], 0
        for n, line in enumerate([*lines, ""], 1):
            if line.strip():
                start = start or n
                current.append(line.strip())
            elif current:
                docs.append({"_where": f"{spec}:{start}", "text": "\n".join(current), "_group": group})
                current, start = [], 0
        return docs

    def to_example(self, record: Any, where: str) -> Example:
        if isinstance(record, dict):
            text, ident = record.get("text"), record.get("id")
        else:
            text, ident = record, None
        if not isinstance(text, str) or not text.strip():
            raise DataError([f"{where}: text: expected a non-empty text (a string or a dict with 'text')"])
        ex: Example = {"_where": where, "text": text, "_group": False}
        if ident is not None:
            ex["id"] = ident
        return ex

    def summarize(self, name: str, examples: list[Example], features: Features | None) -> SplitSummary:
        dist: dict[str, int] = {}
        if features is not None:
            dist = {"blocks": len(features.inputs), "tokens": sum(features.lengths())}
        return SplitSummary(name, len(examples), features.truncated if features else 0, 0, dist)

    # ------------------------------------------------------------------ encoding

    def _resolve_objective(self, backbone: str, model: ModelConfig) -> str:
        if self.objective is not None:
            return self.objective
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )

        config = AutoConfig.from_pretrained(backbone, trust_remote_code=model.trust_remote_code)
        kind = config.model_type
        if getattr(config, "is_encoder_decoder", False):
            raise ConfigError(
                f"task: language-modeling trains encoders (masked LM) and decoders (causal LM); "
                f"{kind} is an encoder-decoder model; fine-tune it with task: generation"
            )
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or [])
        wanted = self.options.objective
        if wanted == "auto":
            wanted = "clm" if causal or kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "mlm"
        supported = (
            MODEL_FOR_MASKED_LM_MAPPING_NAMES if wanted == "mlm" else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        )
        if kind not in supported:
            head = "masked" if wanted == "mlm" else "causal"
            raise ConfigError(
                f"task.objective: {wanted}: transformers has no {head}-LM head for {kind!r} models"
            )
        self.objective = wanted
        return wanted

    def block_size(self, model: ModelConfig) -> int:
        return self.options.block_size or model.max_length

    def encode(self, examples: list[Example], tokenizer: Any, model: ModelConfig) -> Features:
        self.tokenizer = tokenizer
        if self.objective is None:
            self._resolve_objective(backbone_dir(tokenizer, model), model)
        if self.masked and tokenizer.mask_token_id is None:
            raise ConfigError("task.objective: mlm needs a tokenizer with a mask token; use objective: clm")
        grouped = [ex for ex in examples if ex.get("_group")]
        if grouped and len(grouped) != len(examples):
            raise DataError(["language-modeling: cannot mix block-grouped and single texts in one call"])
        size = self.block_size(model)
        if grouped:
            return self._blocks(examples, tokenizer, size)
        return self._singles(examples, tokenizer, size)

    def _blocks(self, examples: list[Example], tokenizer: Any, size: int) -> Features:
        """Concatenate the documents (separated by the end or [SEP] token) and cut fixed-size blocks."""
        ids = tokenizer([ex["text"] for ex in examples], add_special_tokens=False, verbose=False)["input_ids"]
        sep = tokenizer.sep_token_id if self.masked else tokenizer.eos_token_id
        prefix, suffix = _special_wrap(tokenizer) if self.masked else ([], [])
        room = size - len(prefix) - len(suffix)
        stream: list[int] = []
        starts: list[tuple[int, int]] = []  # (position in the stream, document index)
        for i, doc in enumerate(ids):
            starts.append((len(stream), i))
            stream += doc + ([sep] if sep is not None else [])
        inputs, owner = [], []
        doc = 0
        for begin in range(0, len(stream), room):
            while doc + 1 < len(starts) and starts[doc + 1][0] <= begin:
                doc += 1
            block = stream[begin : begin + room]
            block = prefix + block + suffix
            item: dict[str, Any] = {"input_ids": block, "attention_mask": [1] * len(block)}
            if not self.masked:
                item["labels"] = list(block)
            inputs.append(item)
            owner.append(doc)
        return Features(inputs, owner, meta=["block"] * len(inputs))

    def _singles(self, examples: list[Example], tokenizer: Any, size: int) -> Features:
        enc = tokenizer(
            [ex["text"] for ex in examples], add_special_tokens=self.masked, verbose=False, truncation=False
        )
        inputs, cut = [], 0
        for ex, full in zip(examples, enc["input_ids"], strict=True):
            ids = list(full)
            if len(ids) > size:
                cut += 1
                ids = ids[: size - 1] + ids[-1:] if self.masked else ids[:size]
            if self.masked and tokenizer.mask_token_id not in ids:
                raise DataError(
                    [
                        f"{ex['_where']}: text: expected at least one {tokenizer.mask_token} to fill "
                        f"(a masked language model predicts masked words)"
                    ]
                )
            inputs.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
        return Features(inputs, list(range(len(examples))), truncated=cut, meta=["single"] * len(inputs))

    def make_collator(self, tokenizer: Any, *, pad_to_multiple_of: int | None = None) -> Any:
        """Training batches: masked afresh for masked LMs, labels = inputs for causal LMs (model shifts)."""
        from taskhead.data.collate import PadCollator

        if self.masked:
            return MaskingCollator(
                tokenizer, self.options.mlm_probability, seed=None, pad_to_multiple_of=pad_to_multiple_of
            )
        return PadCollator(tokenizer.pad_token_id, pad_to_multiple_of=pad_to_multiple_of)

    # ------------------------------------------------------------------ model

    def build_model(self, backbone: str, model: ModelConfig, tokenizer: Any) -> torch.nn.Module:
        from taskhead.engine.modeling import no_classification_head, standard_head

        no_classification_head(model, "language-modeling")
        objective = self._resolve_objective(backbone, model)
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

        auto = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
        net = standard_head(auto, backbone, model, tokenizer, "language-modeling")
        if net.config.pad_token_id is None:
            net.config.pad_token_id = tokenizer.pad_token_id
        return net

    def load_model(self, directory: Path, model: ModelConfig) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

        from taskhead.engine.backbones import SAFE_LOADING

        auto = AutoModelForMaskedLM if self.masked else AutoModelForCausalLM
        return auto.from_pretrained(directory, trust_remote_code=model.trust_remote_code, **SAFE_LOADING)

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        """Mean cross-entropy over target tokens (masked ones, or every next token for causal LMs)."""
        import torch.nn.functional as F

        logits = outputs["logits"].float()
        if not self.masked:
            logits, labels = logits[:, :-1], labels[:, 1:]
        total = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum().clamp(min=1)
        return total / count

    # ------------------------------------------------------------------ scoring

    def run_outputs(
        self,
        model: torch.nn.Module,
        features: Features,
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        *,
        batch_size: int,
        device: torch.device,
        precision: str = "fp32",
        loss_fn: Any = None,
        progress: str | None = None,
    ) -> tuple[list[Any], float | None]:
        """Per feature: ``[nll sum, target tokens, correct]``, or (masked texts to fill) the top candidates
        of each mask token; and the token-weighted mean loss. Never materialises whole-vocabulary logits of
        a split. Batches through ``engine.forward.forward_in_order``."""
        from taskhead.data.collate import PadCollator
        from taskhead.engine.forward import forward_in_order

        fill = self.masked and features.meta[:1] == ["single"]  # masked texts to fill, not blocks to score
        if self.masked and not fill:
            batcher: Any = MaskingCollator(self.tokenizer, self.options.mlm_probability, seed=0)
        else:
            batcher = PadCollator(self.tokenizer.pad_token_id)

        def labelled(items: list[dict[str, Any]]) -> Any:
            if not self.masked:  # score every text: labels are the inputs, padding ignored
                items = [{**f, "labels": f["input_ids"]} for f in items]
            return batcher(items)

        return forward_in_order(
            model,
            features.inputs,
            lambda batch: self._score_batch(model, batch, fill),
            lengths=features.lengths(),
            batch_size=batch_size,
            device=device,
            precision=precision,
            collate=labelled,
            progress=progress,
        )

    def _score_batch(self, model: Any, batch: Batch, fill: bool) -> StepOutput:
        """One batch: the fill candidates of each mask token, or per text ``[nll sum, target tokens,
        correct]`` with the batch's nll summed over its target tokens."""
        import torch.nn.functional as F

        from taskhead.engine.forward import StepOutput

        padded = batch.padded()
        labels = padded.pop("labels", None)
        logits = model(**padded).logits.float()
        if fill:
            return StepOutput(self._fill(logits, padded["input_ids"]))
        if not self.masked:
            logits, labels = logits[:, :-1], labels[:, 1:]
            labels = labels.masked_fill(padded["attention_mask"][:, 1:] == 0, -100)
        nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        target = labels != -100
        correct = (logits.argmax(-1) == labels) & target
        rows = [
            np.array([float(nll[j].sum()), int(target[j].sum()), int(correct[j].sum())])
            for j in range(len(batch.index))
        ]
        return StepOutput(rows, float(nll.sum()), int(target.sum()))

    def _fill(self, logits: torch.Tensor, input_ids: torch.Tensor) -> list[Any]:
        """Per row: ``(token ids, probabilities)`` of the ``top_k`` candidates for each mask token."""
        probs = logits.softmax(-1)
        out = []
        for j in range(len(input_ids)):
            positions = (input_ids[j] == self.tokenizer.mask_token_id).nonzero().flatten().tolist()
            top = [probs[j, p].topk(self.options.top_k) for p in positions]
            out.append([(t.indices.tolist(), t.values.tolist()) for t in top])
        return out

    def decode(
        self, outputs: np.ndarray | list[Any], features: Features, examples: list[Example]
    ) -> list[dict[str, Any]]:
        predictions: list[dict[str, Any]] = [{"id": ex["id"]} if "id" in ex else {} for ex in examples]
        if examples and not examples[0].get("_group") and self.masked:
            for pred, cands in zip(predictions, outputs, strict=True):
                pred["fills"] = [
                    [
                        {"token": self.tokenizer.convert_ids_to_tokens(t), "score": round(float(s), 6)}
                        for t, s in zip(ids, scores, strict=True)
                    ]
                    for ids, scores in cands
                ]
            return predictions
        sums = np.zeros((len(examples), 3))
        for row, ex_index in zip(outputs, features.example_index, strict=True):
            sums[ex_index] += row  # a block counts for the document it starts in
        for pred, (nll, tokens, correct) in zip(predictions, sums, strict=True):
            pred["tokens"] = int(tokens)
            pred["nll"] = float(nll)
            if tokens:
                pred["loss"] = float(nll / tokens)
                pred["perplexity"] = _perplexity(nll / tokens)
            if self.masked:
                pred["correct"] = int(correct)
        return predictions

    def score(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict[str, Any]:
        tokens = sum(p.get("tokens", 0) for p in predictions)
        if not tokens:
            return {}
        nll = sum(p.get("nll", 0.0) for p in predictions)
        metrics: dict[str, Any] = {"perplexity": _perplexity(nll / tokens), "tokens": tokens}
        if self.masked:
            metrics["accuracy"] = sum(p.get("correct", 0) for p in predictions) / tokens
        return metrics

    def state(self) -> dict[str, Any]:
        return {"objective": self.objective}

    def model_card(self) -> str:
        if self.masked:
            what, auto = "masked language model", "AutoModelForMaskedLM"
            use = [
                "from transformers import pipeline",
                "",
                "fill = pipeline('fill-mask', model='RUN_DIR/model')",
                'print(fill(f"some {fill.tokenizer.mask_token} text"))',
            ]
        else:
            what, auto = "causal language model", "AutoModelForCausalLM"
            use = [
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "",
                "tokenizer = AutoTokenizer.from_pretrained('RUN_DIR/model')",
                "model = AutoModelForCausalLM.from_pretrained('RUN_DIR/model')",
                'inputs = tokenizer("some text", return_tensors="pt")',
                "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=20)[0]))",
            ]
        return "\n".join(
            [
                f"- Language modeling: {what}; block size {self.options.block_size or 'model.max_length'}",
                f"- `model/` loads with transformers' `{auto}.from_pretrained('RUN_DIR/model')`; use the run "
                f"directory as `model.backbone` of another task to fine-tune it:",
                "",
                "```python",
                *use,
                "```",
            ]
        )


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def _special_wrap(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text (``[CLS]`` ... ``[SEP]``)."""
    probe = "a"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    return [], []
