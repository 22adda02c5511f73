"""Metrics agree with scikit-learn on the same predictions; threshold tuning picks the best F1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

from taskhead.evaluation import best_thresholds, classification_metrics, multilabel_metrics


def test_multiclass_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    m = classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for avg in ("macro", "micro", "weighted"):
        assert m[f"{avg}_f1"] == pytest.approx(f1_score(y_true, y_pred, average=avg))
    _, _, f, s = precision_recall_fscore_support(y_true, y_pred)
    assert [m["per_class"][k]["f1"] for k in "abcd"] == pytest.approx(list(f))
    assert [m["per_class"][k]["support"] for k in "abcd"] == list(s)
    assert np.array(m["confusion_matrix"]["matrix"]).sum() == 200


def test_label_absent_from_predictions_counts_as_zero() -> None:
    m = classification_metrics([0, 0, 1], [0, 0, 0], ["x", "y", "z"])
    assert m["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["z"]["support"] == 0


def test_multilabel_against_sklearn() -> None:
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 2, (100, 5)), rng.integers(0, 2, (100, 5))
    m = multilabel_metrics(y_true, y_pred, list("abcde"))
    assert m["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y_true, y_pred))
    assert m["per_label"]["c"]["f1"] == pytest.approx(f1_score(y_true[:, 2], y_pred[:, 2]))


def test_best_thresholds_separates_when_possible() -> None:
    probs = np.array([[0.9, 0.2], [0.8, 0.25], [0.3, 0.05], [0.2, 0.3]])
    gold = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    t = best_thresholds(probs, gold, min_positives=1)
    assert 0.3 < t[0] <= 0.8
    assert 0.05 < t[1] <= 0.25
    pred = (probs >= np.array(t)).astype(int)
    assert (pred == gold).all()


def test_rare_labels_get_the_shared_micro_f1_threshold() -> None:
    rng = np.random.default_rng(0)
    gold = np.zeros((200, 2), dtype=int)
    gold[:100, 0] = 1
    gold[:3, 1] = 1  # three positives only
    probs = np.clip(gold * 0.7 + rng.uniform(0, 0.3, gold.shape), 0, 1)
    t = best_thresholds(probs, gold, min_positives=10)
    assert 0.3 <= t[0] <= 0.7
    shared = best_thresholds(probs, gold, min_positives=10**6)
    assert shared[0] == shared[1]
    assert t[1] == shared[1]
