"""Slow tier: the real MiniLM backbone on public benchmark data in ../shared/datasets.

Reference figures measured here with a plain Hugging Face Trainer (FIELD-NOTES): SST-2 4,000 sentences,
2 epochs, dynamic padding: dev accuracy 0.837; TREC 3 epochs, lr 1e-4: test accuracy 0.964.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset, write_jsonl

import taskhead

pytestmark = pytest.mark.slow


def test_sst2_4000_sentences_2_epochs(tmp_path: Path) -> None:
    folder = shared_dataset("sst2")
    lines = (folder / "train.tsv").read_text(encoding="utf-8").splitlines()
    random.Random(0).shuffle(body := lines[1:])
    (tmp_path / "train.tsv").write_text("\n".join([lines[0], *body[:4000]]) + "\n", encoding="utf-8")
    config = {
        "task": "classification",
        "output_dir": str(tmp_path / "run"),
        "model": {"backbone": "minilm", "max_length": 128},
        "data": {
            "train": str(tmp_path / "train.tsv"),
            "eval": str(folder / "dev.tsv"),
            "format": "tsv",
            "quoting": "none",
            "columns": {"text": "sentence", "label": "label"},
        },
        "train": {"epochs": 2, "batch_size": 32, "learning_rate": 5e-5, "save_strategy": "no", "seed": 42},
    }
    run = taskhead.train(config, quiet=True)
    accuracy = run.metrics["eval"]["accuracy"]
    assert run.metrics["eval"]["per_class"]["0"]["support"] == 428
    # seed spread measured here (2026-11-26, seeds 42, 1, 2, 3): packed batches (the default) 0.8245, 0.8372,
    # 0.8314, 0.8463; the same random batches unpacked 0.8417, 0.8394, 0.8349, 0.8303: 0.82 is the
    # reference (0.837) less that spread; a broken run sits near the majority class (0.51)
    assert accuracy >= 0.82, accuracy
    # the reloaded predictor scores the dev file to the same figure, in input order
    reloaded = taskhead.load(run.run_dir).evaluate(folder / "dev.tsv")["accuracy"]
    assert reloaded == pytest.approx(accuracy, abs=0.003)


def _trec_jsonl(source: Path, target: Path) -> Path:
    rows = []
    for line in source.read_text(encoding="latin-1").splitlines():  # train has one non-UTF-8 byte
        label, _, text = line.partition(" ")
        rows.append({"text": text, "label": label.split(":")[0]})
    return write_jsonl(target, rows)


def test_trec_6_classes(tmp_path: Path) -> None:
    folder = shared_dataset("trec")
    config = {
        "task": "classification",
        "output_dir": str(tmp_path / "run"),
        "model": {"backbone": "minilm", "max_length": 64},
        "data": {
            "train": str(_trec_jsonl(folder / "train_5500.label", tmp_path / "train.jsonl")),
            "test": str(_trec_jsonl(folder / "TREC_10.label", tmp_path / "test.jsonl")),
        },
        "train": {"epochs": 3, "batch_size": 32, "learning_rate": 1e-4, "save_strategy": "no", "seed": 42},
    }
    run = taskhead.train(config, quiet=True)
    assert sorted(run.metrics["test"]["per_class"]) == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert run.metrics["test"]["accuracy"] >= 0.93, run.metrics["test"]["accuracy"]


def _best_constant_micro_f1(gold: np.ndarray) -> float:
    """Micro-F1 of the best predictor that outputs the same label set for every text (greedy over labels)."""
    from sklearn.metrics import f1_score

    chosen: list[int] = []
    best = 0.0
    for _ in range(3):
        scores = {}
        for j in set(range(gold.shape[1])) - set(chosen):
            pred = np.zeros_like(gold)
            pred[:, [*chosen, j]] = 1
            scores[j] = f1_score(gold, pred, average="micro", zero_division=0)
        j = max(scores, key=scores.get)
        if scores[j] <= best:
            break
        best, chosen = scores[j], [*chosen, j]
    return best


def test_goemotions_multilabel(tmp_path: Path) -> None:
    folder = shared_dataset("goemotions")
    for split, n in (("train", 8000), ("dev", 1500), ("test", 2000)):
        text = (folder / f"{split}.tsv").read_text(encoding="utf-8")
        (tmp_path / f"{split}.tsv").write_text("".join(text.splitlines(keepends=True)[:n]), encoding="utf-8")
    config = {
        # balanced: BCE pos_weight = negatives / positives per label. Measured here, 8,000 rows x 2 epochs:
        # without it (lr 1e-4) test micro-F1 0.31, no better than the best constant predictor (a plain
        # Trainer with the same settings predicts 'neutral' only: 0.31); with it and lr 2e-4: 0.454.
        "task": {
            "name": "classification",
            "multi_label": True,
            "tune_thresholds": True,
            "class_weights": "balanced",
        },
        "output_dir": str(tmp_path / "run"),
        "model": {"backbone": "minilm", "max_length": 64},
        "data": {
            "train": str(tmp_path / "train.tsv"),
            "eval": str(tmp_path / "dev.tsv"),
            "test": str(tmp_path / "test.tsv"),
            "header": False,
            "columns": {"text": 0, "labels": 1, "id": 2, "label": None},
        },
        "train": {"epochs": 2, "batch_size": 32, "learning_rate": 2e-4, "save_strategy": "no", "seed": 42},
    }
    run = taskhead.train(config, quiet=True)
    labels = json.loads((run.run_dir / "taskhead.json").read_text())["task_state"]["labels"]
    test = taskhead.load(run.run_dir).read(tmp_path / "test.tsv", labelled=True)
    gold = np.zeros((len(test), len(labels)), dtype=int)
    for i, ex in enumerate(test):
        gold[i, [labels.index(lbl) for lbl in ex["labels"]]] = 1
    baseline = _best_constant_micro_f1(gold)
    micro_f1 = run.metrics["test"]["micro_f1"]
    assert micro_f1 >= baseline + 0.10, (micro_f1, baseline)
