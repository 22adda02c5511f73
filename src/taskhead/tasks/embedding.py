"""Sentence embeddings (SentenceBERT-style bi-encoders) trained with sentence-transformers' losses.

Data: pairs, triplets (with one or more hard negatives), labelled pairs (0/1) or scored pairs (0-1 or 0-5),
see ``taskhead.data.text_pairs``. The loss is ``task.loss``, or follows from the training data: scored
pairs -> CoSENT, labelled pairs -> contrastive, pairs and triplets -> in-batch negatives (MNRL).

Design choice: the sentence-transformers model and its loss are wrapped in one ``nn.Module`` whose forward
returns the loss (``model_computes_loss``), and taskhead's own Trainer runs it, rather than
``SentenceTransformerTrainer``. That trainer refuses to start without the ``datasets`` package (not a
taskhead dependency), and taskhead's Trainer already brings what a run needs here: the config's epochs,
batch size, learning rate, warm-up, seed and precision, checkpoints under ``RUN_DIR/checkpoints`` and
``--resume``, logs on stderr, best-model selection, and evaluation through the task's metrics. The losses
are sentence-transformers' own classes. The one thing added is the batch order: a Trainer subclass
(``task.make_trainer``) samples batches that never hold a text twice when the loss uses in-batch
negatives (``taskhead.data.batching.NoDuplicatesSampler``, length-grouped when ``train.group_by_length``).

``RUN_DIR/model`` is a sentence-transformers directory: ``SentenceTransformer("RUN_DIR/model")`` loads it
without taskhead and gives the same embeddings. Predictions: ``{"embedding": [...]}`` for a text and
``{"score": cosine}`` for a pair. Metrics: Spearman/Pearson (scored pairs), best-threshold accuracy/F1 and
average precision (labelled pairs), triplet accuracy (triplets), MRR and accuracy@k within the split (pairs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from taskhead.errors import ConfigError, DataError
from taskhead.tasks.base import Example, Features, SplitSummary, TaskBase, TaskTraits, directions

if TYPE_CHECKING:
    import torch

    from taskhead.config import DataConfig, ModelConfig

LossName = Literal["mnrl", "cached-mnrl", "triplet", "contrastive", "online-contrastive", "cosent", "cosine"]
LOSS_FITS: dict[str, tuple[str, ...]] = {  # loss -> the kinds of training data it takes
    "mnrl": ("pairs", "triplets"),
    "cached-mnrl": ("pairs", "triplets"),
    "triplet": ("triplets",),
    "contrastive": ("labelled",),
    "online-contrastive": ("labelled",),
    "cosent": ("scored", "labelled"),
    "cosine": ("scored", "labelled"),
}
DEFAULT_LOSS = {"scored": "cosent", "labelled": "contrastive", "triplets": "mnrl", "pairs": "mnrl"}
IN_BATCH_NEGATIVES = ("mnrl", "cached-mnrl")
EVAL_METRICS = {  # what score() reports per kind of eval data (thresholds are not metrics)
    "scored": ("spearman", "pearson"),
    "labelled": ("accuracy", "f1", "precision", "recall", "ap"),
    "triplets": ("triplet_accuracy",),
    "pairs": ("mrr", "accuracy_at_1", "accuracy_at_10"),
}
DEFAULT_METRIC = {"scored": "spearman", "labelled": "ap", "triplets": "triplet_accuracy", "pairs": "mrr"}


class EmbeddingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["embedding"] = "embedding"
    loss: LossName | None = Field(
        None,
        description="mnrl (in-batch negatives), cached-mnrl (mnrl in mini-batches: large batches), triplet, "
        "contrastive, online-contrastive, cosent, cosine; null: from the training data (scored pairs: "
        "cosent, labelled pairs: contrastive, pairs and triplets: mnrl).",
    )
    pooling: Literal["mean", "cls", "max"] | None = Field(
        None,
        description="Token vectors -> one vector; null: a sentence-transformers backbone's own, else mean.",
    )
    normalize: bool = Field(True, description="Unit-length embeddings (a Normalize module).")
    scale: float = Field(
        20.0, gt=0, description="mnrl, cached-mnrl, cosent: similarity scale (1/temperature)."
    )
    mini_batch_size: int = Field(
        32, ge=1, description="cached-mnrl: texts embedded at once (memory); the batch is train.batch_size."
    )
    margin: float | None = Field(
        None,
        gt=0,
        description="triplet: 0.5 (cosine) or 1.0 (euclidean) by default; contrastive: 0.5 by default.",
    )
    distance: Literal["cosine", "euclidean"] = Field("cosine", description="triplet, contrastive: distance.")
    normalize_scores: bool = Field(
        True, description="Scored pairs: divide scores by score_max (0-1 targets)."
    )
    score_max: float | None = Field(
        None, gt=0, description="Top of the score scale; null: 1 when every score is at most 1, else 5."
    )
    gather_across_devices: bool | None = Field(
        None,
        description="mnrl, cached-mnrl: with several training processes, score each anchor against the "
        "candidates of every process's batch (more negatives); null: on when training runs in several "
        "processes (--nproc, torchrun).",
    )


def _source(examples: list[Example]) -> str:
    return examples[0]["_where"].rsplit(":", 1)[0] if examples else "data"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def binary_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Labelled pairs: accuracy and F1 at their best cosine thresholds (a pair is similar when its score is at
    least the threshold), precision and recall at the best-F1 threshold, and average precision."""
    from sklearn.metrics import average_precision_score

    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(float)
    n, positives = len(y), y.sum()
    tp, fp = np.cumsum(y), np.cumsum(1 - y)
    cut = np.r_[s[:-1] > s[1:], True]  # the top k can be told apart from the rest by a threshold
    accuracy = np.where(cut, (tp + (n - positives - fp)) / n, -1)
    f1 = np.where(cut, 2 * tp / (np.arange(1, n + 1) + positives), -1)
    a, f = int(accuracy.argmax()), int(f1.argmax())
    return {
        "accuracy": float(accuracy[a]),
        "accuracy_threshold": float(s[a]),
        "f1": float(f1[f]),
        "f1_threshold": float(s[f]),
        "precision": float(tp[f] / (f + 1)),
        "recall": float(tp[f] / positives) if positives else 0.0,
        "ap": float(average_precision_score(y, scores[order])) if 0 < positives < n else float("nan"),
    }


class EmbeddingTask(TaskBase):
    name: ClassVar[str] = "embedding"
    Options: ClassVar[type[BaseModel]] = EmbeddingOptions
    traits: ClassVar[TaskTraits] = TaskTraits(
        model_computes_loss=True,  # EmbeddingModel.forward returns the sentence-transformers loss
        truncated_message=(
            "{n} of {total} examples have a text longer than model.max_length={max_length} tokens; "
            "it was truncated"
        ),
    )

    def __init__(
        self,
        options: EmbeddingOptions,
        *,
        loss: str | None = None,
        kind: str | None = None,
        score_max: float | None = None,
        pooling: str | None = None,
        dimension: int | None = None,
        **_: Any,
    ) -> None:
        self.options = options
        self.loss_name = loss
        self.kind = kind  # of the training data
        self.eval_kind: str | None = None
        self.score_max = score_max
        self.pooling = pooling
        self.dimension = dimension
        self._train_loss: Any = None  # the sentence-transformers loss module
        self._eval_loss: Any = None  # computes the loss from embeddings (eval splits)

    @property
    def default_metric(self) -> str:
        return DEFAULT_METRIC.get(self.eval_kind or self.kind or "scored", "spearman")

    def eval_metrics(self, examples: list[Example]) -> dict[str, bool]:
        kind = (examples[0].get("kind") if examples else None) or self.eval_kind or self.kind or "scored"
        return directions(*EVAL_METRICS[kind])

    # ------------------------------------------------------------------ data

    def _score_limit(self) -> float | None:
        return self.options.score_max or self.score_max

    def read(self, path: str | Path, data: DataConfig, *, labelled: bool = True) -> list[Example]:
        from taskhead.data.text_pairs import read_text_groups

        return read_text_groups(path, data, labelled=labelled, score_limit=self._score_limit())

    def to_example(self, record: Any, where: str) -> Example:
        if isinstance(record, str):
            texts: list[Any] = [record]
        elif isinstance(record, (tuple, list)) and len(record) == 2:
            texts = list(record)
        elif isinstance(record, dict) and ("text" in record or "anchor" in record):
            first = record.get("anchor", record.get("text"))
            second = record.get("positive", record.get("text_pair"))
            texts = [first] if second is None else [first, second]
        else:
            raise DataError(
                [
                    f"{where}: expected a text, a (text, text) pair or a dict with 'text' (and 'text_pair'), "
                    f"found {type(record).__name__}"
                ]
            )
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise DataError([f"{where}: text: expected a non-empty string, found {text!r}"])
        ex: Example = {"_where": where, "texts": texts}
        if isinstance(record, dict) and record.get("id") is not None:
            ex["id"] = record["id"]
        return ex

    def _choose_loss(self, train: list[Example]) -> str:
        kind = train[0]["kind"]
        name = self.options.loss or DEFAULT_LOSS[kind]
        from taskhead.data.text_pairs import KIND_NAMES

        if kind not in LOSS_FITS[name]:
            needs = " or ".join(KIND_NAMES[k] for k in LOSS_FITS[name])
            fits = ", ".join(n for n, kinds in LOSS_FITS.items() if kind in kinds)
            raise ConfigError(
                f"task.loss: {name} trains on {needs}, but {_source(train)} holds {KIND_NAMES[kind]}; "
                f"use task.loss={DEFAULT_LOSS[kind]} (losses for {KIND_NAMES[kind]}: {fits}) or give data "
                f"with the columns the loss needs"
            )
        negatives = len(train[0]["texts"]) - 2
        if name == "triplet" and negatives != 1:
            raise ConfigError(
                f"task.loss: triplet takes one negative per row, but {_source(train)} has {negatives} "
                f"negative columns; use task.loss=mnrl (any number of hard negatives) or keep one"
            )
        return name

    def prepare(self, splits: dict[str, list[Example]], data: DataConfig) -> list[str]:
        train = splits.get("train", [])
        if train:
            self.kind = train[0]["kind"]
            self.loss_name = self._choose_loss(train)
        if splits.get("eval"):
            self.eval_kind = splits["eval"][0]["kind"]
        scored = [ex for examples in splits.values() for ex in examples if "score" in ex]
        if self.score_max is None and scored:  # the scale of the training scores (else of the splits given)
            top = max(ex["score"] for ex in ([ex for ex in train if "score" in ex] or scored))
            self.score_max = self.options.score_max or (1.0 if top <= 1 else 5.0)
        out_of_range = [ex for ex in scored if ex["score"] > (self.score_max or 0)]
        if out_of_range:
            raise DataError(
                [
                    f"{ex['_where']}: score: {ex['score']:g} is out of range; expected a score from 0 to "
                    f"{self.score_max:g} (the scale of the training scores; task.score_max sets it)"
                    for ex in out_of_range[: data.max_errors]
                ],
                total=len(out_of_range),
            )
        if self.loss_name == "cosine" and not self.options.normalize_scores and (self.score_max or 1) > 1:
            raise ConfigError(
                f"task.normalize_scores: false leaves scores on a 0-{self.score_max:g} scale, but loss "
                f"cosine fits cosine similarities (at most 1); set task.normalize_scores=true"
            )
        return []

    def summarize(self, name: str, examples: list[Example], features: Features | None) -> SplitSummary:
        from taskhead.data.text_pairs import KIND_NAMES

        dist: dict[str, int] = {}
        kind = examples[0].get("kind") if examples else None
        if kind == "labelled":
            dist = {f"label {v}": sum(1 for ex in examples if ex["label"] == v) for v in (1, 0)}
        elif kind is not None:
            negatives = len(examples[0]["texts"]) - 2
            dist = {KIND_NAMES[kind] + (f" ({negatives} negatives)" if negatives > 1 else ""): len(examples)}
        truncated = features.truncated if features else 0
        return SplitSummary(name, len(examples), truncated, 0, dist)

    # ------------------------------------------------------------------ encoding

    def _target(self, ex: Example) -> float | None:
        if "score" in ex:
            scale = self.score_max if self.options.normalize_scores and self.score_max else 1.0
            return float(ex["score"]) / scale
        return float(ex["label"]) if "label" in ex else None

    def encode(self, examples: list[Example], tokenizer: Any, model: ModelConfig) -> Features:
        owners = [i for i, ex in enumerate(examples) for _ in ex["texts"]]
        flat = [text for ex in examples for text in ex["texts"]]
        full = tokenizer(flat, truncation=False, verbose=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in full]
        texts = [{k: full[k][j] for k in keys} for j in range(len(flat))]
        long = [j for j, ids in enumerate(full["input_ids"]) if len(ids) > model.max_length]
        if long:
            cut = tokenizer([flat[j] for j in long], truncation=True, max_length=model.max_length)
            for pos, j in enumerate(long):
                texts[j] = {k: cut[k][pos] for k in keys}
        inputs, start = [], 0
        for ex in examples:
            group = texts[start : start + len(ex["texts"])]
            start += len(ex["texts"])
            feature: dict[str, Any] = {**group[0], "more": group[1:]}
            target = self._target(ex)
            if target is not None:
                feature["labels"] = target
            inputs.append(feature)
        truncated = len({owners[j] for j in long})
        meta = [ex.get("kind") for ex in examples]
        return Features(inputs, list(range(len(examples))), truncated=truncated, meta=meta)

    def make_collator(self, tokenizer: Any, *, pad_to_multiple_of: int | None = None) -> Any:
        from taskhead.data.batching import TextGroupCollator

        return TextGroupCollator(tokenizer.pad_token_id, pad_to_multiple_of=pad_to_multiple_of)

    # ------------------------------------------------------------------ model

    def build_model(self, backbone: str, model: ModelConfig, tokenizer: Any) -> torch.nn.Module:
        if model.pooling != "cls" or model.head_hidden_size is not None:
            setting = "model.pooling" if model.pooling != "cls" else "model.head_hidden_size"
            raise ConfigError(
                f"{setting}: applies to classification; an embedding model's pooling is task.pooling"
            )
        from taskhead.tasks.embedding_model import EmbeddingModel, build_encoder, pooling_mode

        encoder = build_encoder(
            backbone,
            tokenizer,
            pooling=self.options.pooling,
            normalize=self.options.normalize,
            max_length=model.max_length,
            remote_code=model.trust_remote_code,
        )
        self.pooling = pooling_mode(encoder)
        self.dimension = encoder.get_embedding_dimension()
        return EmbeddingModel(encoder, self._losses(encoder))

    def _losses(self, encoder: Any) -> Any:
        """The training loss (None before a training split has chosen one); sets the eval-split loss."""
        from taskhead.tasks.embedding_model import make_loss

        if self.loss_name is None:
            return None
        self._train_loss = train = make_loss(self.loss_name, encoder, self.options, training=True)
        # evaluation runs the whole split in every process: its loss never gathers across processes; the
        # cached loss computes the same value from embeddings as the plain one
        self._eval_loss = make_loss(
            "mnrl" if self.loss_name == "cached-mnrl" else self.loss_name, encoder, self.options
        )
        return train

    def save_model(self, model: torch.nn.Module, directory: Path) -> None:
        model.encoder.save(str(directory), create_model_card=False)  # type: ignore[union-attr, operator]

    def load_model(self, directory: Path, model: ModelConfig) -> torch.nn.Module:
        from sentence_transformers import SentenceTransformer

        from taskhead.engine.backbones import SAFE_LOADING
        from taskhead.tasks.embedding_model import EmbeddingModel

        encoder = SentenceTransformer(
            str(directory),
            device="cpu",
            trust_remote_code=model.trust_remote_code,
            model_kwargs=dict(SAFE_LOADING),
        )
        return EmbeddingModel(encoder, self._losses(encoder))

    def make_trainer(self, **kwargs: Any) -> Any:
        """taskhead's Trainer, with duplicate-free batches when the loss takes in-batch negatives."""
        from taskhead.data.batching import NoDuplicatesSampler
        from taskhead.tasks.embedding_model import EmbeddingTrainer

        sampler = None
        if self.loss_name in IN_BATCH_NEGATIVES:
            train = kwargs["train_features"].inputs
            groups = [[tuple(f["input_ids"]), *(tuple(m["input_ids"]) for m in f["more"])] for f in train]
            lengths = [max(len(ids) for ids in g) for g in groups] if kwargs["group_by_length"] else None
            args = kwargs["args"]
            sampler = NoDuplicatesSampler(groups, args.train_batch_size, seed=args.seed, lengths=lengths)
            _, repeated = sampler.plan(0)
            if repeated:
                from taskhead.console import warn

                warn(
                    f"train: {repeated} of {len(groups)} rows share a text with too many other rows to fit "
                    f"in batches without duplicates; each epoch draws other rows in their place"
                )
        return EmbeddingTrainer(no_duplicates=sampler, **kwargs)

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        """The training loss of one batch from its embeddings (``outputs["embeddings"]``, one per text)."""
        loss: torch.Tensor = self._eval_loss.compute_loss_from_embeddings(outputs["embeddings"], labels)
        return loss

    # ------------------------------------------------------------------ outputs

    def run_outputs(
        self,
        model: torch.nn.Module,
        features: Features,
        collate: Any,
        *,
        batch_size: int,
        device: torch.device,
        precision: str = "fp32",
        loss_fn: Any = None,
        progress: str | None = None,
    ) -> tuple[list[np.ndarray], float | None]:
        """Embeddings of every text (one ``[texts, dim]`` array per feature) and, for a split the training
        loss fits, its mean loss over batches in input order."""
        from taskhead.tasks.embedding_model import embed_features

        outputs = embed_features(
            model,  # type: ignore[arg-type]
            features,
            collate,
            batch_size=batch_size,
            device=device,
            precision=precision,
            progress=progress,
        )
        fits = self.loss_name is not None and all(k in LOSS_FITS[self.loss_name] for k in features.meta)
        if loss_fn is None or self._eval_loss is None or not features.inputs or not fits:
            return outputs, None
        import torch

        total = 0.0
        for start in range(0, len(outputs), batch_size):
            chunk = outputs[start : start + batch_size]
            embeddings = [torch.from_numpy(np.stack([o[j] for o in chunk])) for j in range(len(chunk[0]))]
            labels = torch.tensor(
                [f.get("labels", 0.0) for f in features.inputs[start : start + batch_size]],
                dtype=torch.float32,
            )
            with torch.inference_mode():
                total += float(loss_fn({"embeddings": embeddings}, labels)) * len(chunk)
        return outputs, total / len(outputs)

    def _ranks(self, outputs: list[np.ndarray], chunk: int = 1024) -> np.ndarray:
        """Pairs: the rank of each anchor's own positive among all positives of the split (1 = best)."""
        anchors = _unit(np.stack([o[0] for o in outputs]))
        positives = _unit(np.stack([o[1] for o in outputs]))
        ranks = np.empty(len(outputs), dtype=np.int64)
        for start in range(0, len(outputs), chunk):
            sims = anchors[start : start + chunk] @ positives.T
            own = sims[np.arange(len(sims)), np.arange(start, start + len(sims))]
            ranks[start : start + chunk] = 1 + (sims > own[:, None]).sum(1)
        return ranks

    def decode(
        self, outputs: np.ndarray | list[np.ndarray], features: Features, examples: list[Example]
    ) -> list[dict[str, Any]]:
        pairs = bool(examples) and all(ex.get("kind") == "pairs" for ex in examples)
        ranks = self._ranks(list(outputs)) if pairs else None
        predictions = []
        for i, (ex, vectors) in enumerate(zip(examples, outputs, strict=True)):
            pred: dict[str, Any] = {"id": ex["id"]} if "id" in ex else {}
            if len(vectors) == 1:
                pred["embedding"] = vectors[0].tolist()
            else:
                # Unrounded: score() ranks and thresholds these (rounded, near scores would tie).
                pred["score"] = _cosine(vectors[0], vectors[1])
            if len(vectors) > 2:
                pred["negative_scores"] = [_cosine(vectors[0], v) for v in vectors[2:]]
            if ranks is not None:
                pred["rank"] = int(ranks[i])
            predictions.append(pred)
        return predictions

    def score(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict[str, Any]:
        kind = examples[0].get("kind") if examples else None
        if kind == "scored":
            from scipy.stats import pearsonr, spearmanr

            gold = np.array([ex["score"] for ex in examples])
            pred = np.array([p["score"] for p in predictions])
            return {"spearman": float(spearmanr(gold, pred)[0]), "pearson": float(pearsonr(gold, pred)[0])}
        if kind == "labelled":
            scores = np.array([p["score"] for p in predictions])
            return binary_metrics(scores, np.array([ex["label"] for ex in examples]))
        if kind == "triplets":
            wins = [p["score"] > max(p["negative_scores"]) for p in predictions]
            return {"triplet_accuracy": float(np.mean(wins))}
        if kind == "pairs":
            ranks = np.array([p["rank"] for p in predictions])
            return {
                "mrr": float(np.mean(1.0 / ranks)),
                "accuracy_at_1": float(np.mean(ranks == 1)),
                "accuracy_at_10": float(np.mean(ranks <= 10)),
            }
        raise DataError([f"{_source(examples)}: no gold scores, labels or pairs to evaluate against"])

    def state(self) -> dict[str, Any]:
        return {
            "loss": self.loss_name,
            "kind": self.kind,
            "score_max": self.score_max,
            "pooling": self.pooling,
            "dimension": self.dimension,
        }

    def model_card(self) -> str:
        from importlib.metadata import version

        from taskhead.data.text_pairs import KIND_NAMES

        o = self.options
        loss = self._train_loss
        settings = ", ".join(f"{k}={v}" for k, v in getattr(loss, "get_config_dict", dict)().items())
        lines = [
            f"- Sentence embeddings (bi-encoder): {self.dimension} dimensions, {self.pooling} pooling, "
            f"{'normalized' if o.normalize else 'not normalized'}",
            f"- Trained on {KIND_NAMES.get(self.kind or '', self.kind)} with `{type(loss).__name__}"
            f"({settings})` (task.loss {self.loss_name}; sentence-transformers "
            f"{version('sentence-transformers')})",
            "- `model/` is a sentence-transformers model; without taskhead:",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            "model = SentenceTransformer('RUN_DIR/model')",
            'print(model.encode(["some text", "another text"]).shape)',
            "```",
        ]
        if self.score_max:
            lines.append(
                f"- Scores on a 0-{self.score_max:g} scale; the model's scores are cosine similarities"
            )
        return "\n".join(lines)
