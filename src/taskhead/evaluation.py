"""Metric functions (thin wrappers of scikit-learn) and metric tables for people."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro/micro/weighted F1, per-class P/R/F1/support and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, labels=ids, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": list(labels),
            "matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        },
    }


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Micro/macro F1, subset accuracy, Hamming loss and per-label P/R/F1 for 0/1 indicator matrices."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    return {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(y_true, y_pred, average="samples", zero_division=0)),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "per_label": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
    }


def _f1_by_threshold(probs: np.ndarray, gold: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Micro-F1 over the given columns for each threshold of the grid."""
    pred = probs[None] >= grid[:, None, None]  # (grid, n, labels)
    positive = (gold == 1)[None]
    tp = (pred & positive).sum((1, 2))
    fp = (pred & ~positive).sum((1, 2))
    fn = (~pred & positive).sum((1, 2))
    return np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)


def _pick(grid: np.ndarray, f1: np.ndarray) -> float:
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])  # ties: the value nearest 0.5


def best_thresholds(
    probs: np.ndarray, gold: np.ndarray, *, min_positives: int = 50, grid: Sequence[float] | None = None
) -> list[float]:
    """Per-label decision thresholds tuned on (probs, gold).

    A label with at least ``min_positives`` positive examples gets the threshold that maximises its own F1;
    rarer labels get the one global threshold that maximises micro-F1 over all labels (a per-label value
    tuned on a handful of positives overfits and floods predictions with false positives).
    """
    grid_ = np.asarray(grid if grid is not None else np.round(np.arange(0.05, 0.96, 0.05), 2))
    shared = _pick(grid_, _f1_by_threshold(probs, gold, grid_))
    out = []
    for j in range(probs.shape[1]):
        if gold[:, j].sum() >= min_positives:
            out.append(_pick(grid_, _f1_by_threshold(probs[:, j : j + 1], gold[:, j : j + 1], grid_)))
        else:
            out.append(shared)
    return out


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The flat numeric part of a metrics dict (what the Trainer logs and selects on)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def score_outputs(
    task: Any, outputs: Any, features: Any, examples: Any, loss: float | None
) -> dict[str, Any]:
    """The metrics of one labelled split from the model's outputs on it: the task decodes the outputs of
    ``features`` (in input order, from the forward pass) against ``examples`` and scores them, then the mean
    ``loss`` is added (``add_loss``). The one scorer of the per-epoch evaluation
    (``TaskheadTrainer.evaluate``), the final eval/test scoring of ``train()`` and ``Predictor.evaluate``,
    so that all three report the same figures for the same outputs."""
    return add_loss(task.score(task.decode(outputs, features, examples), examples), loss, task)


def add_loss(metrics: dict[str, Any], loss: float | None, task: Any) -> dict[str, Any]:
    """The mean loss of a labelled split, and its perplexity for tasks that report one (language models)."""
    if loss is not None:
        metrics["loss"] = loss
        if task.traits.reports_perplexity:
            metrics["perplexity"] = perplexity(loss)
    return metrics


def metrics_table(metrics: dict[str, Any], title: str) -> Any:
    """A rich Table: headline figures, then the per-class breakdown when there is one."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    per = metrics.get("per_class") or metrics.get("per_label") or metrics.get("per_type")
    if per:
        table.add_column("label")
        for col in ("precision", "recall", "f1", "support"):
            table.add_column(col, justify="right")
        for name, row in per.items():
            table.add_row(
                name,
                f"{row['precision']:.4f}",
                f"{row['recall']:.4f}",
                f"{row['f1']:.4f}",
                str(row["support"]),
            )
        table.add_section()
    else:
        table.add_column("metric")
        table.add_column("value", justify="right")
    for key in scalar_metrics(metrics):
        value = metrics[key]
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        table.add_row(key, text, *([""] * (len(table.columns) - 2)))
    return table


def perplexity(mean_loss: float) -> float:
    """``exp(mean_loss)`` of a mean token cross-entropy in nats; ``inf`` where that overflows, NaN for NaN."""
    if math.isnan(mean_loss):
        return math.nan
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return math.inf
