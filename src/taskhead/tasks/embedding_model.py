"""The torch side of the embedding task (imported only when a model is built or loaded).

- ``build_encoder``: a sentence-transformers model from a backbone: a sentence-transformers directory as it
  is (``minilm``), or a plain encoder as Transformer + Pooling; then the pooling and normalization asked for.
- ``make_loss``: the sentence-transformers loss for a loss name and the task options.
- ``EmbeddingModel``: the encoder and its loss as one module whose ``forward`` returns the loss, so that
  taskhead's Trainer trains it like any model (``model_computes_loss``).
- ``EmbeddingTrainer``: that Trainer with duplicate-free batches for losses with in-batch negatives.
- ``embed_features``: every text of every feature embedded in length-sorted batches, back in input order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

from taskhead.data.batching import TEXT_KEYS, NoDuplicatesSampler
from taskhead.engine.trainer import TaskheadTrainer
from taskhead.errors import ConfigError

if TYPE_CHECKING:
    from taskhead.data.types import Features


def build_encoder(
    backbone: str, tokenizer: Any, *, pooling: str | None, normalize: bool, max_length: int, remote_code: bool
) -> SentenceTransformer:
    """Transformer -> Pooling (-> Dense ...) (-> Normalize). ``pooling`` None keeps a sentence-transformers
    backbone's own pooling (mean for a plain encoder)."""
    from taskhead.engine.backbones import SAFE_LOADING

    remote: dict[str, Any] = {"trust_remote_code": True} if remote_code else {}
    weights = {**remote, **SAFE_LOADING}
    if (Path(backbone) / "modules.json").is_file():
        modules = list(
            SentenceTransformer(backbone, device="cpu", trust_remote_code=remote_code, model_kwargs=weights)
        )
    else:
        modules = [Transformer(backbone, model_kwargs=weights, config_kwargs=remote, processor_kwargs=remote)]
    first = modules[0]
    if not isinstance(first, Transformer):
        raise ConfigError(
            f"model.backbone: {backbone}: the first module is a {type(first).__name__}; "
            f"expected a transformer encoder"
        )
    limit = getattr(first.auto_model.config, "max_position_embeddings", None)
    if limit and max_length > limit:
        raise ConfigError(f"model.max_length: {max_length} exceeds the backbone's {limit} positions")
    existing = next((m for m in modules if isinstance(m, Pooling)), None)
    mode = pooling or (existing.pooling_mode if existing is not None else "mean")
    if existing is None:
        modules.insert(1, Pooling(first.get_embedding_dimension(), mode))
    elif existing.pooling_mode != mode:
        modules[modules.index(existing)] = Pooling(existing.embedding_dimension, mode)
    modules = [m for m in modules if not isinstance(m, Normalize)] + ([Normalize()] if normalize else [])
    first.processor = tokenizer  # one tokenizer object: taskhead's (extra special tokens included)
    from taskhead.engine.modeling import fit_embeddings

    fit_embeddings(first.auto_model, tokenizer)
    encoder = SentenceTransformer(modules=modules, device="cpu")
    encoder.max_seq_length = max_length  # plain sentence-transformers truncates where taskhead does
    return encoder


def pooling_mode(encoder: SentenceTransformer) -> str:
    mode = next((m.pooling_mode for m in encoder if isinstance(m, Pooling)), "none")
    return mode if isinstance(mode, str) else "+".join(mode)


def is_normalized(encoder: SentenceTransformer) -> bool:
    return any(isinstance(m, Normalize) for m in encoder)


def gathers_across_devices(options: Any) -> bool:
    """Whether in-batch-negative losses gather the candidates of every training process: the option, or
    (null) whether this process is one of several (``WORLD_SIZE`` > 1, set by --nproc and torchrun)."""
    choice = getattr(options, "gather_across_devices", None)
    if choice is not None:
        return bool(choice)
    from taskhead.console import process_count

    return process_count() > 1


def make_loss(
    name: str, encoder: SentenceTransformer, options: Any, *, training: bool = False
) -> torch.nn.Module:
    """The sentence-transformers loss for ``task.loss`` (names as in EmbeddingOptions). Only a training loss
    gathers in-batch negatives across processes (evaluation runs the whole split in each process)."""
    from sentence_transformers.sentence_transformer import losses

    cosine = options.distance == "cosine"
    gather = training and gathers_across_devices(options)
    if name == "mnrl":
        return losses.MultipleNegativesRankingLoss(encoder, scale=options.scale, gather_across_devices=gather)
    if name == "cached-mnrl":
        return losses.CachedMultipleNegativesRankingLoss(
            encoder,
            scale=options.scale,
            mini_batch_size=options.mini_batch_size,
            gather_across_devices=gather,
        )
    if name == "triplet":
        metric = losses.TripletDistanceMetric.COSINE if cosine else losses.TripletDistanceMetric.EUCLIDEAN
        margin = options.margin if options.margin is not None else (0.5 if cosine else 1.0)
        return losses.TripletLoss(encoder, distance_metric=metric, triplet_margin=margin)
    if name in ("contrastive", "online-contrastive"):
        siamese = losses.SiameseDistanceMetric
        metric = siamese.COSINE_DISTANCE if cosine else siamese.EUCLIDEAN
        margin = options.margin if options.margin is not None else 0.5
        kind = losses.ContrastiveLoss if name == "contrastive" else losses.OnlineContrastiveLoss
        return kind(encoder, distance_metric=metric, margin=margin)
    if name == "cosent":
        return losses.CoSENTLoss(encoder, scale=options.scale)
    if name == "cosine":
        return losses.CosineSimilarityLoss(encoder)
    raise ConfigError(f"task.loss: unknown loss {name!r}")


class EmbeddingModel(torch.nn.Module):
    """A SentenceTransformer and the loss that trains it. ``forward(texts, labels)`` returns ``{"loss"}``;
    ``embed(batch)`` returns the sentence embeddings of one padded batch of texts."""

    loss_fn: torch.nn.Module | None

    def __init__(self, encoder: SentenceTransformer, loss: torch.nn.Module | None) -> None:
        super().__init__()
        self.encoder = encoder
        # not registered as a submodule: the loss holds `encoder` again (no duplicate weights in checkpoints)
        object.__setattr__(self, "loss_fn", loss)

    def forward(
        self, texts: list[dict[str, torch.Tensor]], labels: torch.Tensor | None = None
    ) -> dict[str, Any]:
        if self.loss_fn is None:
            raise RuntimeError("this embedding model was loaded without a training loss")
        return {"loss": self.loss_fn(texts, labels)}

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        embeddings: torch.Tensor = self.encoder(dict(batch))["sentence_embedding"]
        return embeddings


class EmbeddingTrainer(TaskheadTrainer):
    """TaskheadTrainer whose training batches never hold a text twice when ``no_duplicates`` is given."""

    def __init__(self, *args: Any, no_duplicates: NoDuplicatesSampler | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.no_duplicates = no_duplicates

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        if self.no_duplicates is None:
            return super()._get_train_sampler(train_dataset)
        return self.no_duplicates


def _text(feature: dict[str, Any], position: int) -> dict[str, Any]:
    if position == 0:
        return {k: feature[k] for k in TEXT_KEYS if k in feature}
    text: dict[str, Any] = feature["more"][position - 1]
    return text


def embed_features(
    model: EmbeddingModel,
    features: Features,
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
    progress: str | None,
) -> list[np.ndarray]:
    """One ``[texts, dim]`` float32 array per feature (its anchor, positive, negatives...), input order.

    Every text of every feature is one input of ``engine.forward.forward_in_order`` (length-sorted batches,
    dynamic padding, the one precision rule)."""
    from taskhead.engine.forward import Batch, StepOutput, forward_in_order

    slots = [(i, j) for i, f in enumerate(features.inputs) for j in range(1 + len(f.get("more", ())))]
    texts = [_text(features.inputs[i], j) for i, j in slots]

    def step(batch: Batch) -> StepOutput:
        return StepOutput(list(model.embed(batch.padded()).float().cpu().numpy()))

    vectors, _ = forward_in_order(
        model,
        texts,
        step,
        lengths=[len(t["input_ids"]) for t in texts],
        batch_size=batch_size,
        device=device,
        precision=precision,
        collate=collate,
        progress=progress,
    )
    out: list[np.ndarray] = []
    start = 0
    for f in features.inputs:
        width = 1 + len(f.get("more", ()))
        rows = vectors[start : start + width]
        out.append(np.stack(rows).astype(np.float32, copy=False) if rows else np.empty((0, 0), np.float32))
        start += width
    return out
