"""Text classification: single texts or text pairs, multi-class (softmax) or multi-label (sigmoid).

With the default settings (``cls`` pooling, no hidden head layer) the model is the standard
``AutoModelForSequenceClassification`` of the backbone, which plain transformers loads and serves.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from taskhead.data.examples import ColumnExamples, values
from taskhead.data.readers import stream_data_table
from taskhead.data.validation import Problems, label_list, require_column, scalar_label, text_field
from taskhead.errors import DataError
from taskhead.tasks.base import Example, Features, SplitSummary, TaskBase, TaskTraits, directions

if TYPE_CHECKING:
    import torch

    from taskhead.config import DataConfig, ModelConfig


MAX_POS_WEIGHT = 100.0


class ClassificationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["classification"] = "classification"
    multi_label: bool = Field(False, description="Each text has zero or more labels (sigmoid + thresholds).")
    threshold: float = Field(0.5, gt=0, lt=1, description="Multi-label decision threshold.")
    tune_thresholds: bool = Field(False, description="Tune one threshold per label on the eval set.")
    class_weights: Literal["balanced"] | dict[str, float] | None = Field(
        None,
        description="Loss weights per class: `balanced` (inverse frequency; multi-label: BCE pos_weight = "
        "negatives / positives, at most 100) or a mapping label: weight (multi-label: pos_weight).",
    )
    long_texts: Literal["truncate", "sliding_window"] = Field(
        "truncate", description="Texts over max_length: truncate (counted) or windows with averaged logits."
    )
    stride: int = Field(32, ge=0, description="Tokens shared by neighbouring windows (sliding_window).")


def _sorted_labels(labels: set[str]) -> list[str]:
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


class ClassificationTask(TaskBase):
    name: ClassVar[str] = "classification"
    Options: ClassVar[type[BaseModel]] = ClassificationOptions
    traits: ClassVar[TaskTraits] = TaskTraits(
        packing=True,  # trains on packed rows (taskhead.engine.packing) where the model supports it
        fits_on_eval=True,  # multi-label thresholds (task.tune_thresholds)
        truncated_message=(
            "{n} of {total} examples are longer than model.max_length={max_length} and were truncated "
            "(task.long_texts=sliding_window avoids that)"
        ),
    )

    def __init__(
        self,
        options: ClassificationOptions,
        *,
        labels: list[str] | None = None,
        thresholds: list[float] | None = None,
        standard_head: bool | None = None,
        class_weights: list[float] | None = None,
        pairs: bool | None = None,
        **_: Any,
    ) -> None:
        self.options = options
        self.labels: list[str] = list(labels or [])
        self.thresholds = thresholds
        # loss weights per label, fixed from the training data's counts and saved in the run's state: a
        # reloaded run has no training data to count again (balanced weights would all be 0)
        self.class_weights = class_weights
        self.standard_head = standard_head
        self.pairs = pairs  # whether the model was trained on text pairs; None: unknown (older runs)

    # ------------------------------------------------------------------ data

    @property
    def default_metric(self) -> str:
        return "micro_f1" if self.options.multi_label else "accuracy"

    def eval_metrics(self, examples: list[Example]) -> dict[str, bool]:
        if self.options.multi_label:
            return directions("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss")
        return directions("accuracy", "macro_f1", "micro_f1", "weighted_f1")

    def _label_column(self, data: DataConfig) -> str | int | None:
        if self.options.multi_label:
            return data.columns.labels if data.columns.labels is not None else "labels"
        return data.columns.label

    # ColumnExamples, not the list the Task protocol annotates (its docstring says why)
    def read(  # type: ignore[override]
        self, path: str | Path, data: DataConfig, *, labelled: bool = True
    ) -> ColumnExamples:
        """Read and validate one data file as it is read (the file is never held whole); the examples are
        kept column by column (``ColumnExamples``: read-only mappings).

        Problems come in this order, each kind only when the ones before it found none: the file's own
        (unreadable, malformed lines), missing columns, an empty file, then the fields of every row.
        """
        cols = data.columns
        table = stream_data_table(path, data, text_column=str(cols.text))
        setting = "data.columns.labels" if self.options.multi_label else "data.columns.label"
        label_column = self._label_column(data) if labelled else None
        wanted = [(cols.text, "data.columns.text"), (cols.text_pair, "data.columns.text_pair")]
        wanted.append((label_column, setting))
        text_col = str(cols.text)
        pair_col = None if cols.text_pair is None else str(cols.text_pair)
        label_col = None if label_column is None else str(label_column)
        id_col = None if cols.id is None else str(cols.id)
        label_key = "labels" if self.options.multi_label else "label"
        keys = ["id"] if id_col is not None else []
        keys += ["text", "text_pair"] if pair_col is not None else ["text"]
        keys += [label_key] if label_col is not None else []
        examples = ColumnExamples(table.path, keys, shared=[label_key])
        problems = Problems(data.max_errors)  # of the rows' fields
        for row in table:  # raises the file's own problems (malformed lines: after its last row)
            seen = problems.total
            ex: dict[str, Any] = {"text": text_field(table, row, text_col, problems)}
            if id_col is not None:
                ex["id"] = row.values.get(id_col)
            if pair_col is not None:
                ex["text_pair"] = text_field(table, row, pair_col, problems)
            if label_col is not None:
                if self.options.multi_label:
                    ex["labels"] = label_list(table, row, label_col, data.label_delimiter, problems)
                else:
                    ex["label"] = scalar_label(table, row, label_col, problems)
            if problems.total == seen == 0:  # after a problem, nothing is returned: nothing more is kept
                examples.append(row.where, ex)
        columns = Problems(data.max_errors)
        for column, name in wanted:
            require_column(table, column, name, columns)
        columns.raise_if_any()
        if table.empty:
            raise DataError([f"{table.path}: no records; expected at least one"])
        problems.raise_if_any()
        return examples

    def to_example(self, record: Any, where: str) -> Example:
        if isinstance(record, str):
            record = {"text": record}
        elif isinstance(record, (tuple, list)) and len(record) == 2:
            record = {"text": record[0], "text_pair": record[1]}
        if not isinstance(record, dict):
            raise DataError(
                [
                    f"{where}: expected a text, a (text, text_pair) pair or a dict with 'text', "
                    f"found {type(record).__name__}"
                ]
            )
        ex: Example = {"_where": where}
        for key in ("id", "text", "text_pair"):
            if record.get(key) is not None:
                ex[key] = record[key]
        for key in ("text", "text_pair"):
            if key in ex and (not isinstance(ex[key], str) or not ex[key].strip()):
                raise DataError([f"{where}: {key}: expected a non-empty string, found {ex[key]!r}"])
        if "text" not in ex:
            raise DataError([f"{where}: text: missing"])
        problem = self._shape_problem(ex)
        if problem:
            raise DataError([problem])
        return ex

    def _shape_problem(self, ex: Example) -> str | None:
        """A located message when an input's shape (single text or pair) is not what the model was trained
        on: a pair given to a single-text model (or the reverse) would be read as something else."""
        if self.pairs is None or ("text_pair" in ex) == self.pairs:
            return None
        if self.pairs:
            return (
                f"{ex['_where']}: text_pair: missing; the model was trained on text pairs, so each input "
                f"must be a (text, text_pair) pair"
            )
        return (
            f"{ex['_where']}: text_pair: the model was trained on single texts, so an input must be one "
            f"text; found a (text, text_pair) pair"
        )

    def _gold(self, ex: Example) -> list[str]:
        return list(ex.get("labels") or []) if self.options.multi_label else [ex["label"]]

    def _golds(self, examples: Sequence[Example]) -> Iterator[Sequence[str]]:
        """Each example's ``_gold`` labels, read without building a ``ColumnExamples``' mappings."""
        if self.options.multi_label:
            return (labels or () for labels in values(examples, "labels"))
        if isinstance(examples, ColumnExamples) and "label" in examples.keys:
            return ((label,) for label in examples.stored("label"))
        return map(self._gold, examples)

    def prepare(self, splits: dict[str, list[Example]], data: DataConfig) -> list[str]:
        train = splits.get("train", [])
        warnings: list[str] = []
        counts = Counter(label for gold in self._golds(train) for label in gold)
        if data.labels:
            self.labels = list(data.labels)
        elif not self.labels:
            self.labels = _sorted_labels(set(counts))
        if not self.options.multi_label and len(self.labels) < 2:
            raise DataError(
                [
                    f"{train[0]['_where'].rsplit(':', 1)[0] if train else 'train'}: only one label "
                    f"({', '.join(self.labels)}) in the training data; expected at least two"
                ]
            )
        known = set(self.labels)
        for examples in splits.values():
            problems = Problems(data.max_errors)
            for i, gold in enumerate(self._golds(examples)):
                for label in gold:
                    if label not in known:
                        close = difflib.get_close_matches(label, self.labels, n=1)
                        hint = f"; did you mean {close[0]!r}?" if close else ""
                        shown = ", ".join(self.labels[:12]) + (", ..." if len(self.labels) > 12 else "")
                        source = "the training data" if not data.labels else "data.labels"
                        problems.add(
                            f"{examples[i]['_where']}: label: {label!r} is not a label of {source} "
                            f"(labels: {shown}){hint}"
                        )
            problems.raise_if_any()
        once = {label for label in self.labels if counts.get(label, 0) == 1}
        where = {label: i for i, gold in enumerate(self._golds(train)) for label in gold if label in once}
        for label in self.labels:
            if counts.get(label, 0) == 1:
                warnings.append(
                    f"{train[where[label]]['_where']}: label {label!r} occurs only once in the training data"
                )
            elif train and counts.get(label, 0) == 0:
                warnings.append(f"label {label!r} (data.labels) never occurs in the training data")
        if train:
            self.pairs = any(pair is not None for pair in values(train, "text_pair"))
            self._set_class_weights(counts, len(train))
        elif self.class_weights is None and isinstance(self.options.class_weights, dict):
            self._set_class_weights(counts, 0)  # a run saved before weights were kept: explicit ones rebuild
        return warnings

    def _set_class_weights(self, counts: Counter[str], n: int) -> None:
        cw = self.options.class_weights
        if cw is None:
            self.class_weights = None
        elif cw == "balanced" and self.options.multi_label:
            # BCE pos_weight: negatives / positives per label (capped), so rare labels are not drowned out
            self.class_weights = [
                min((n - counts.get(lbl, 0)) / max(counts.get(lbl, 0), 1), MAX_POS_WEIGHT)
                for lbl in self.labels
            ]
        elif cw == "balanced":
            k = len(self.labels)
            self.class_weights = [n / (k * max(counts.get(lbl, 0), 1)) for lbl in self.labels]
        else:
            unknown = sorted(set(cw) - set(self.labels))
            if unknown:
                raise DataError(
                    [
                        f"task.class_weights: {', '.join(map(repr, unknown))} not in the labels "
                        f"({', '.join(self.labels)})"
                    ]
                )
            self.class_weights = [float(cw.get(lbl, 1.0)) for lbl in self.labels]

    def summarize(self, name: str, examples: list[Example], features: Features | None) -> SplitSummary:
        key = "labels" if self.options.multi_label else "label"
        dist = Counter(
            label
            for gold in values(examples, key)
            if gold is not None
            for label in (gold if self.options.multi_label else (gold,))
        )
        return SplitSummary(
            name,
            len(examples),
            features.truncated if features else 0,
            features.windowed if features else 0,
            dict(dist.most_common()),
        )

    # ------------------------------------------------------------------ encoding

    def encode(self, examples: list[Example], tokenizer: Any, model: ModelConfig) -> Features:
        """Features for examples that may mix single texts and pairs: each is encoded as what it is.

        Raises:
            DataError: an input whose shape (single text or pair) differs from the training data's.
        """
        problems = [p for p in map(self._shape_problem, examples) if p]
        if problems:
            raise DataError(problems[:20], total=len(problems))
        parts: list[list[dict[str, Any]]] = [[] for _ in examples]
        long = 0
        for with_pair in (False, True):  # one tokenizer call per shape: one call takes one shape for all
            group = [i for i, ex in enumerate(examples) if ("text_pair" in ex) == with_pair]
            if group:
                encoded, n_long = self._tokenize([examples[i] for i in group], tokenizer, model, with_pair)
                long += n_long
                for i, example_parts in zip(group, encoded, strict=True):
                    parts[i] = example_parts
        inputs, owner_of = [], []
        label_index = {label: i for i, label in enumerate(self.labels)}
        for i, ex in enumerate(examples):
            target = self._target(ex, label_index)
            for part in parts[i]:
                inputs.append(part if target is None else {**part, "labels": target})
                owner_of.append(i)
        windowed = sum(1 for p in parts if len(p) > 1)
        return Features(inputs, owner_of, truncated=long - windowed, windowed=windowed)

    def _tokenize(
        self, examples: list[Example], tokenizer: Any, model: ModelConfig, with_pair: bool
    ) -> tuple[list[list[dict[str, list[int]]]], int]:
        """Token ids of examples of one shape: per example its parts (several with sliding windows), and
        how many examples were longer than ``model.max_length``."""
        texts = [ex["text"] for ex in examples]
        pairs = [ex["text_pair"] for ex in examples] if with_pair else None
        args = (texts, pairs) if pairs is not None else (texts,)
        full = tokenizer(*args, truncation=False, verbose=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in full]
        out = [[{k: full[k][i] for k in keys}] for i in range(len(examples))]
        long = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > model.max_length]
        if not long:
            return out, 0
        windows = self.options.long_texts == "sliding_window"
        sub = ([texts[i] for i in long], [pairs[i] for i in long]) if pairs else ([texts[i] for i in long],)
        kwargs: dict[str, Any] = {
            "truncation": "only_second" if (windows and pairs) else True,
            "max_length": model.max_length,
        }
        if windows:
            kwargs.update(stride=self.options.stride, return_overflowing_tokens=True)
        enc = tokenizer(*sub, **kwargs)
        owners = enc["overflow_to_sample_mapping"] if windows else range(len(long))
        for i in long:
            out[i] = []
        for j, owner in enumerate(owners):
            out[long[owner]].append({k: enc[k][j] for k in keys})
        return out, len(long)

    def _target(self, ex: Example, label_index: dict[str, int]) -> Any:
        if self.options.multi_label:
            if "labels" not in ex:
                return None
            vec = [0.0] * len(self.labels)
            for label in ex["labels"]:
                vec[label_index[label]] = 1.0
            return vec
        return label_index[ex["label"]] if "label" in ex else None

    # ------------------------------------------------------------------ model

    def _is_standard(self, model: ModelConfig) -> bool:
        return model.pooling == "cls" and model.head_hidden_size is None

    def build_model(self, backbone: str, model: ModelConfig, tokenizer: Any) -> torch.nn.Module:
        """The backbone with a head for ``self.labels``; a fine-tuned head in the backbone is reused with its
        rows matched by label name (``model.reuse_head``). Raises ConfigError for another label set."""
        from transformers import AutoModelForSequenceClassification

        from taskhead.engine.modeling import labelled_head, pooled_classifier

        self.standard_head = self._is_standard(model)
        if self.standard_head:
            extra = {"classifier_dropout": model.head_dropout} if model.head_dropout is not None else {}
            kind = "multi_label_classification" if self.options.multi_label else "single_label_classification"
            return labelled_head(
                AutoModelForSequenceClassification,
                backbone,
                model,
                tokenizer,
                self.labels,
                "classification",
                problem_type=kind,
                **extra,
            )
        return pooled_classifier(backbone, model, tokenizer, self.labels)

    def save_model(self, model: torch.nn.Module, directory: Path) -> None:
        if self.standard_head:
            model.save_pretrained(directory)  # type: ignore[operator]
        else:
            model.save(directory)  # type: ignore[operator]

    def load_model(self, directory: Path, model: ModelConfig) -> torch.nn.Module:
        from transformers import AutoModel, AutoModelForSequenceClassification

        from taskhead.engine.backbones import SAFE_LOADING

        common = {"trust_remote_code": model.trust_remote_code, **SAFE_LOADING}
        if self.standard_head:
            return AutoModelForSequenceClassification.from_pretrained(directory, **common)
        from taskhead.engine.modeling import PooledClassifier

        net = PooledClassifier(
            AutoModel.from_pretrained(directory, **common),
            len(self.labels),
            pooling=model.pooling,
            hidden_size=model.head_hidden_size,
            dropout=0.0,
            labels=self.labels,
        )
        net.load_head(directory)
        return net

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        import torch.nn.functional as F

        logits = outputs["logits"].float()
        if self.options.multi_label:
            pos_weight = logits.new_tensor(self.class_weights) if self.class_weights is not None else None
            total = F.binary_cross_entropy_with_logits(
                logits, labels.float(), pos_weight=pos_weight, reduction="sum"
            )
            return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())
        weight = None
        if self.class_weights is not None:
            weight = logits.new_tensor(self.class_weights)
        total = F.cross_entropy(logits, labels, weight=weight, reduction="sum")
        return total / (num_items_in_batch if num_items_in_batch is not None else labels.shape[0])

    # ------------------------------------------------------------------ outputs

    def _probabilities(self, outputs: np.ndarray, features: Features, n: int) -> np.ndarray:
        """Per-example probabilities; the logits of an example's windows are averaged first."""
        logits = np.zeros((n, outputs.shape[1]), dtype=np.float64)
        counts = np.zeros(n)
        np.add.at(logits, features.example_index, outputs)
        np.add.at(counts, features.example_index, 1)
        logits /= counts[:, None]
        if self.options.multi_label:
            return 1.0 / (1.0 + np.exp(-logits))
        logits -= logits.max(1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(1, keepdims=True)

    def _thresholds(self) -> np.ndarray:
        return np.asarray(self.thresholds or [self.options.threshold] * len(self.labels))

    def decode(
        self, outputs: np.ndarray | list[np.ndarray], features: Features, examples: list[Example]
    ) -> list[dict[str, Any]]:
        probs = self._probabilities(np.asarray(outputs), features, len(examples))  # per-sequence: one array
        thresholds = self._thresholds()
        predictions = []
        for ex, row in zip(examples, probs, strict=True):
            pred: dict[str, Any] = {"id": ex["id"]} if "id" in ex else {}
            if self.options.multi_label:
                pred["labels"] = [
                    lbl for lbl, p, t in zip(self.labels, row, thresholds, strict=True) if p >= t
                ]
            else:
                pred["label"] = self.labels[int(row.argmax())]
            # Unrounded: re-ranking and any other ordering of these scores must tell a confident model's
            # 0.99999991 from its 0.99999993 (rounded to 6 places both are 1.0 and tie).
            pred["scores"] = {lbl: float(p) for lbl, p in zip(self.labels, row, strict=True)}
            predictions.append(pred)
        return predictions

    def score(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict[str, Any]:
        from taskhead.evaluation import classification_metrics, multilabel_metrics

        index = {label: i for i, label in enumerate(self.labels)}
        if self.options.multi_label:
            gold = np.zeros((len(examples), len(self.labels)), dtype=int)
            pred = np.zeros_like(gold)
            for i, (ex, p) in enumerate(zip(examples, predictions, strict=True)):
                gold[i, [index[lbl] for lbl in ex["labels"]]] = 1
                pred[i, [index[lbl] for lbl in p["labels"]]] = 1
            return multilabel_metrics(gold, pred, self.labels)
        return classification_metrics(
            [index[ex["label"]] for ex in examples], [index[p["label"]] for p in predictions], self.labels
        )

    def fit_on_eval(self, outputs: np.ndarray, features: Features, examples: list[Example]) -> dict[str, Any]:
        if not (self.options.multi_label and self.options.tune_thresholds):
            return {}
        from taskhead.evaluation import best_thresholds

        probs = self._probabilities(outputs, features, len(examples))
        index = {label: i for i, label in enumerate(self.labels)}
        gold = np.zeros_like(probs, dtype=int)
        for i, ex in enumerate(examples):
            gold[i, [index[lbl] for lbl in ex["labels"]]] = 1
        self.thresholds = best_thresholds(probs, gold)
        return {"thresholds": dict(zip(self.labels, self.thresholds, strict=True))}

    def state(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "thresholds": self.thresholds,
            "standard_head": self.standard_head,
            "class_weights": self.class_weights,
            "pairs": self.pairs,
        }

    @property
    def example_input(self) -> str:
        """The model card's example input (Python literal): a pair for a model trained on text pairs."""
        return '[("some text", "another text")]' if self.pairs else '["some text"]'

    def model_card(self) -> str:
        kind = "multi-label (sigmoid)" if self.options.multi_label else "multi-class (softmax)"
        lines = [f"- Classification, {kind}, {len(self.labels)} labels: {', '.join(self.labels)}"]
        if self.options.multi_label:
            t = self.thresholds or [self.options.threshold]
            lines.append(
                f"- Decision thresholds: {'tuned per label on the eval set' if self.thresholds else t[0]}"
            )
        if self.standard_head:
            lines.append(
                "- `model/` is a standard transformers sequence-classification model: "
                "`pipeline('text-classification', model='RUN_DIR/model')` serves it without taskhead"
            )
        return "\n".join(lines)
