"""Slow tier: the real MiniLM backbone on public benchmark data in ../shared/datasets.

Reference figures measured here with a plain Hugging Face Trainer (FIELD-NOTES): SST-2 4,000 sentences,
2 epochs, dynamic padding: dev accuracy 0.837; TREC 3 epochs, lr 1e-4: test accuracy 0.964. The tests train
less than that (2026-11-30, to keep the whole suite under 30 minutes on CI); each test gives its own figures.
Durations were measured on 2 cores shared with other test runs (load 5-17), so they over-state the time
alone.
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


def test_sst2_2000_sentences_1_epoch(tmp_path: Path) -> None:
    """2,000 random training sentences, 1 epoch, lr 1e-4, max_length 64. Measured here
    (2026-11-30, seed 42): dev accuracy 0.7993 (4,000 x 2 epochs at lr 5e-5 gave 0.82-0.85 over four seeds);
    a broken run sits near the majority class (0.51). Scored twice (after training, reloaded). 26 s on 2 cores
    shared with other test runs (load about 5)."""
    folder = shared_dataset("sst2")
    lines = (folder / "train.tsv").read_text(encoding="utf-8").splitlines()
    random.Random(0).shuffle(body := lines[1:])
    (tmp_path / "train.tsv").write_text("\n".join([lines[0], *body[:2000]]) + "\n", encoding="utf-8")
    config = {
        "task": "classification",
        "output_dir": str(tmp_path / "run"),
        "model": {"backbone": "minilm", "max_length": 64},
        "data": {
            "train": str(tmp_path / "train.tsv"),
            "eval": str(folder / "dev.tsv"),
            "format": "tsv",
            "quoting": "none",
            "columns": {"text": "sentence", "label": "label"},
        },
        "train": {"epochs": 1, "batch_size": 32, "learning_rate": 1e-4, "save_strategy": "no", "seed": 42},
    }
    run = taskhead.train(config, quiet=True)
    print(f"sst2 dev accuracy {run.metrics['eval']['accuracy']:.4f}")
    accuracy = run.metrics["eval"]["accuracy"]
    assert run.metrics["eval"]["per_class"]["0"]["support"] == 428
    # the 4,000 x 2 epoch seed spread (0.8245-0.8463, 2026-11-26) was +-0.011: 0.76 leaves 0.04 below 0.7993
    assert accuracy >= 0.76, accuracy
    # the reloaded predictor scores the dev file to the same figure, in input order
    reloaded = taskhead.load(run.run_dir).evaluate(folder / "dev.tsv")["accuracy"]
    assert reloaded == pytest.approx(accuracy, abs=0.003)


def _trec_jsonl(source: Path, target: Path, sample: int | None = None) -> Path:
    rows = []
    for line in source.read_text(encoding="latin-1").splitlines():  # train has one non-UTF-8 byte
        label, _, text = line.partition(" ")
        rows.append({"text": text, "label": label.split(":")[0]})
    if sample is not None:
        random.Random(0).shuffle(rows)
    return write_jsonl(target, rows[:sample])


def test_trec_6_classes(tmp_path: Path) -> None:
    """3,000 of the 5,452 training questions (seeded shuffle), 1 epoch, lr 1.5e-4. Measured here
    (2026-11-30, seed 42): test accuracy 0.940 (all 5,452 x 3 epochs: 0.964); the majority class (DESC) is
    0.276 of the 500 test questions. 24 s on 2 cores shared with other test runs (load about 5)."""
    folder = shared_dataset("trec")
    config = {
        "task": "classification",
        "output_dir": str(tmp_path / "run"),
        "model": {"backbone": "minilm", "max_length": 64},
        "data": {
            "train": str(_trec_jsonl(folder / "train_5500.label", tmp_path / "train.jsonl", sample=3000)),
            "test": str(_trec_jsonl(folder / "TREC_10.label", tmp_path / "test.jsonl")),
        },
        "train": {"epochs": 1, "batch_size": 32, "learning_rate": 1.5e-4, "save_strategy": "no", "seed": 42},
    }
    run = taskhead.train(config, quiet=True)
    print(f"trec test accuracy {run.metrics['test']['accuracy']:.4f}")
    assert sorted(run.metrics["test"]["per_class"]) == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert run.metrics["test"]["accuracy"] >= 0.90, run.metrics["test"]["accuracy"]


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
        # Trainer with the same settings predicts 'neutral' only: 0.31); with it and lr 2e-4: 0.454. Tried
        # 2026-11-30 to save time: 4,000 rows x 2 epochs (dev and test 1,000) reach only 0.381 against 0.313
        # for the best constant predictor, too close to it, so the test keeps 8,000 rows.
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
    print(f"goemotions test micro-F1 {micro_f1:.4f}, best constant {baseline:.4f}")
    assert micro_f1 >= baseline + 0.10, (micro_f1, baseline)
