"""Re-ranking retrieved documents with a cross-encoder: a taskhead text-pair classification run.

The run reads ``(query, document text)`` pairs. The relevance score of a pair is, in this order:

1. a numeric ``score`` in the prediction, where the task gives one (regression);
2. the probability of the label named by ``label=`` (``--rerank-label``);
3. the probability of the first of the labels ``1``, ``relevant``, ``positive``, ``true``, ``yes``
   (case-insensitive) that the run has;
4. for a run with exactly two labels, the probability of the second one in the run's label order
   (``0``/``1`` sort numerically; ``irrelevant``/``relevant`` alphabetically);

otherwise an error asks for ``label``. Hits are re-ordered by that score, unrounded: the classification run's
probabilities are not rounded, so a confident model's 0.99999991 and 0.99999993 do not tie (ties keep the
retrieval order); each keeps its first-stage score as ``retrieval_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskhead.errors import RetrievalError

POSITIVE_LABELS = ("1", "relevant", "positive", "true", "yes")


class Reranker:
    """Scores (query, document) pairs with a text-pair classification run and re-orders hits."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        label: str | None = None,
        batch_size: int = 64,
        device: str = "auto",
        precision: str = "auto",
        trust_remote_code: bool = False,
    ) -> None:
        """Load the classification run ``run_dir`` (safetensors only; its own code only with
        ``trust_remote_code=True``).

        Raises:
            RetrievalError: not a single-label classification run, or no label meaning relevant.
            UnsafeWeightsError, ConfigError: as ``taskhead.Predictor``.
        """
        import taskhead

        self.run_dir = Path(run_dir)
        self.predictor = taskhead.load(
            self.run_dir,
            batch_size=batch_size,
            device=device,
            precision=precision,
            trust_remote_code=trust_remote_code,
        )
        if self.predictor.task.name != "classification" or getattr(
            self.predictor.task.options, "multi_label", False
        ):
            raise RetrievalError(
                f"{self.run_dir}: a {self.predictor.task.name!r} run; re-ranking needs a text-pair "
                f"classification run (single-label) that scores (query, document) pairs"
            )
        self.label = self._positive_label(label)

    def _positive_label(self, label: str | None) -> str | None:
        labels = self.predictor.labels
        if label is not None:
            if label not in labels:
                raise RetrievalError(
                    f"rerank label: {label!r} is not a label of {self.run_dir} (labels: {', '.join(labels)})"
                )
            return label
        lowered = {lbl.lower(): lbl for lbl in labels}
        for name in POSITIVE_LABELS:
            if name in lowered:
                return lowered[name]
        if len(labels) == 2:
            return labels[1]
        if not labels:
            return None  # a regression head: predictions carry "score"
        raise RetrievalError(
            f"{self.run_dir}: cannot tell which of its labels ({', '.join(labels)}) means relevant; "
            f"name it with --rerank-label (Python: label=...)"
        )

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The relevance score of each ``(query, document text)`` pair."""
        if not pairs:
            return []
        predictions = self.predictor.predict(list(pairs))
        return [self._score(p) for p in predictions]

    def _score(self, prediction: dict[str, Any]) -> float:
        if isinstance(prediction.get("score"), (int, float)):
            return float(prediction["score"])
        scores = prediction.get("scores") or prediction.get("probabilities") or {}
        if self.label is None or self.label not in scores:
            raise RetrievalError(
                f"{self.run_dir}: its predictions carry neither a score nor the label {self.label!r}"
            )
        return float(scores[self.label])

    def rerank(
        self, queries: Sequence[str], hits: Sequence[list[dict[str, Any]]], k: int
    ) -> list[list[dict]]:
        """Re-order each query's hits by cross-encoder score and keep the best ``k``; one batch for all."""
        pairs = [(q, h["text"]) for q, row in zip(queries, hits, strict=True) for h in row]
        scores = iter(self.score(pairs))
        out = []
        for row in hits:
            rescored = [{**h, "score": next(scores), "retrieval_score": h["score"]} for h in row]
            rescored.sort(key=lambda h: -h["score"])  # stable: ties keep the retrieval order
            out.append(rescored[:k])
        return out
