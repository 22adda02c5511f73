"""Training and prediction behaviour on a tiny random backbone: order, determinism, resume, long texts,
multi-label thresholds, text pairs, pooling, special tokens and plain-transformers compatibility."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NEGATIVE, POSITIVE, sentiment_records, tiny_config, write_jsonl

import taskhead
from taskhead.engine.modeling import pool


def test_pooling_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 5.0], [3.0, -1.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 5.0]]
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 5.0]]


def test_predictions_come_back_in_input_order(tiny_backbone: Path, sentiment_data, tmp_path: Path) -> None:
    run = taskhead.train(tiny_config(tiny_backbone, sentiment_data, tmp_path / "run"), quiet=True)
    texts = [("very " * (i % 7)) + t for i, t in enumerate(POSITIVE + NEGATIVE)]
    batched = taskhead.load(run.run_dir, batch_size=3).predict(texts)
    single = taskhead.load(run.run_dir, batch_size=1)
    for text, pred in zip(texts, batched, strict=True):
        alone = single.predict([text])[0]
        assert pred["label"] == alone["label"]
        assert pred["scores"] == pytest.approx(alone["scores"], abs=1e-4)
    # evaluation scores predictions against the gold label of the same row
    records = [{"text": t, "label": "pos" if t in POSITIVE else "neg"} for t in POSITIVE + NEGATIVE]
    predictor = taskhead.load(run.run_dir, batch_size=4)
    preds = predictor.predict([r["text"] for r in records])
    expected = np.mean([p["label"] == r["label"] for p, r in zip(preds, records, strict=True)])
    assert predictor.evaluate(write_jsonl(tmp_path / "ev.jsonl", records))["accuracy"] == pytest.approx(
        expected
    )


def test_same_seed_same_metrics(tiny_backbone: Path, sentiment_data, tmp_path: Path) -> None:
    runs = [
        taskhead.train(
            tiny_config(tiny_backbone, sentiment_data, tmp_path / f"r{i}", train={"epochs": 2, "seed": 3}),
            quiet=True,
        )
        for i in range(2)
    ]
    assert runs[0].metrics["eval"] == runs[1].metrics["eval"]
    assert runs[0].metrics["train"]["train_loss"] == runs[1].metrics["train"]["train_loss"]


def test_resume_continues_to_the_same_result(tiny_backbone: Path, sentiment_data, tmp_path: Path) -> None:
    train = {"epochs": 3, "seed": 5, "save_strategy": "epoch", "save_total_limit": 3}
    config = tiny_config(tiny_backbone, sentiment_data, tmp_path / "run", train=train)
    full = taskhead.train(config, quiet=True)
    checkpoints = sorted((full.run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    assert len(checkpoints) == 3
    # pretend the process died during epoch 3: the last checkpoint and the finished run are gone
    shutil.rmtree(checkpoints[-1])
    (full.run_dir / "taskhead.json").unlink()
    with pytest.raises(taskhead.RunDirError, match="already holds checkpoints of an unfinished run"):
        taskhead.train(config, quiet=True)
    resumed = taskhead.train(config, resume=True, quiet=True)
    assert resumed.metrics["eval"] == full.metrics["eval"]
    resumed_at = int(checkpoints[-2].name[11:])

    def late_losses(run: taskhead.Run) -> list[float]:
        return [h["loss"] for h in run.metrics["history"] if "loss" in h and h["step"] > resumed_at]

    assert late_losses(resumed) == pytest.approx(late_losses(full), rel=1e-5)
    assert len(late_losses(full)) > 0


def test_long_texts_truncated_and_counted_or_windowed(tiny_backbone: Path, tmp_path: Path) -> None:
    long_text = " ".join(["good movie and great plot"] * 12)  # ~60 tokens, max_length 16
    records = [*sentiment_records(2), {"text": long_text, "label": "pos"}]
    data = {"train": write_jsonl(tmp_path / "t.jsonl", records)}
    run = taskhead.train(
        tiny_config(tiny_backbone, data, tmp_path / "trunc", model={"max_length": 16}), quiet=True
    )
    predictor = run.load()
    features = predictor.task.encode([{"text": long_text}], predictor.tokenizer, predictor.config.model)
    assert (features.truncated, features.windowed, len(features.inputs)) == (1, 0, 1)
    assert len(features.inputs[0]["input_ids"]) == 16

    config = tiny_config(
        tiny_backbone,
        data,
        tmp_path / "win",
        model={"max_length": 16},
        task={"name": "classification", "long_texts": "sliding_window", "stride": 4},
    )
    predictor = taskhead.train(config, quiet=True).load()
    features = predictor.task.encode(
        [{"text": "good"}, {"text": long_text}], predictor.tokenizer, predictor.config.model
    )
    assert features.windowed == 1 and features.truncated == 0
    assert features.example_index[0] == 0 and set(features.example_index[1:]) == {1}
    assert len(features.inputs) >= 1 + 4  # 60 tokens in windows of 14 with overlap 4
    assert all(len(f["input_ids"]) <= 16 for f in features.inputs)
    preds = predictor.predict(["good", long_text])
    assert len(preds) == 2
    assert sum(preds[1]["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_multilabel_with_tuned_thresholds(tiny_backbone: Path, tmp_path: Path) -> None:
    rows = [{"text": t, "labels": ["pos", "film"] if "film" in t else ["pos"]} for t in POSITIVE]
    rows += [{"text": t, "labels": ["neg", "film"] if "film" in t else ["neg"]} for t in NEGATIVE]
    data = {
        "train": write_jsonl(tmp_path / "t.jsonl", rows * 3),
        "eval": write_jsonl(tmp_path / "e.jsonl", rows),
    }
    config = tiny_config(
        tiny_backbone,
        data,
        tmp_path / "run",
        task={"name": "classification", "multi_label": True, "tune_thresholds": True},
    )
    run = taskhead.train(config, quiet=True)
    meta = json.loads((run.run_dir / "taskhead.json").read_text())
    assert meta["task_state"]["labels"] == ["film", "neg", "pos"]
    assert len(meta["task_state"]["thresholds"]) == 3
    assert set(run.metrics["eval"]) >= {
        "micro_f1",
        "macro_f1",
        "subset_accuracy",
        "hamming_loss",
        "per_label",
    }
    pred = run.load().predict(["good film"])[0]
    assert set(pred) == {"labels", "scores"} and set(pred["scores"]) == {"film", "neg", "pos"}
    thresholds = dict(zip(meta["task_state"]["labels"], meta["task_state"]["thresholds"], strict=True))
    assert pred["labels"] == [k for k, v in pred["scores"].items() if v >= thresholds[k]]


def test_class_weights_balanced(tiny_backbone: Path, tmp_path: Path) -> None:
    rows = [{"text": "good", "label": "pos"}] * 6 + [{"text": "bad", "label": "neg"}] * 2
    report = taskhead.validate(
        {
            "task": {"name": "classification", "class_weights": "balanced"},
            "data": {"train": str(write_jsonl(tmp_path / "t.jsonl", rows))},
        }
    )
    assert report.task.class_weights == pytest.approx([8 / (2 * 2), 8 / (2 * 6)])  # neg, pos


def test_multilabel_balanced_weights_are_bce_pos_weights() -> None:
    from taskhead.config import DataConfig
    from taskhead.tasks.classification import ClassificationOptions, ClassificationTask

    task = ClassificationTask(ClassificationOptions(multi_label=True, class_weights="balanced"))
    gold = [["a"], ["a", "b"], [], ["a"]]
    task.prepare(
        {"train": [{"_where": f"m:{i}", "text": "x", "labels": g} for i, g in enumerate(gold)]}, DataConfig()
    )
    assert task.labels == ["a", "b"]
    assert task.class_weights == pytest.approx([1 / 3, 3.0])  # negatives / positives
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1 / 3, 3.0]))(logits, labels)
    assert task.loss({"logits": logits}, labels) == pytest.approx(float(expected))


def test_text_pairs(tiny_backbone: Path, tmp_path: Path) -> None:
    rows = [
        {"text": a, "text_pair": b, "label": "same" if (a in POSITIVE) == (b in POSITIVE) else "diff"}
        for a in POSITIVE[:4] + NEGATIVE[:4]
        for b in POSITIVE[4:6] + NEGATIVE[4:6]
    ]
    data = {"train": write_jsonl(tmp_path / "t.jsonl", rows)}
    config = tiny_config(tiny_backbone, data, tmp_path / "run", data={"columns": {"text_pair": "text_pair"}})
    predictor = taskhead.train(config, quiet=True).load()
    features = predictor.task.encode(
        [{"text": "good", "text_pair": "bad movie"}], predictor.tokenizer, predictor.config.model
    )
    assert features.inputs[0]["token_type_ids"] == [0, 0, 0, 1, 1, 1]
    assert predictor.predict([("good", "bad movie")])[0]["label"] in {"same", "diff"}


def test_mean_pooling_hidden_head_and_special_tokens(
    tiny_backbone: Path, sentiment_data, tmp_path: Path
) -> None:
    config = tiny_config(
        tiny_backbone,
        sentiment_data,
        tmp_path / "run",
        model={"pooling": "mean", "head_hidden_size": 16, "special_tokens": ["[SENT]"]},
    )
    run = taskhead.train(config, quiet=True)
    predictor = run.load()
    assert "[SENT]" in predictor.tokenizer.get_vocab()
    assert predictor.tokenizer.tokenize("good [SENT] movie") == ["good", "[SENT]", "movie"]
    embeddings = predictor.model.encoder.get_input_embeddings()
    assert embeddings.num_embeddings == len(predictor.tokenizer)
    texts = ["good [SENT] movie", "bad plot"]
    assert predictor.predict(texts) == taskhead.load(run.run_dir).predict(texts)
    assert (run.run_dir / "model" / "head.safetensors").is_file()


def test_default_model_is_plain_transformers(tiny_backbone: Path, sentiment_data, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    run = taskhead.train(tiny_config(tiny_backbone, sentiment_data, tmp_path / "run"), quiet=True)
    ours = run.load(precision="fp32").predict(["good movie", "awful plot"])
    model = AutoModelForSequenceClassification.from_pretrained(run.run_dir / "model")
    tokenizer = AutoTokenizer.from_pretrained(run.run_dir / "model")
    clf = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu", top_k=None)
    for pred, theirs in zip(ours, clf(["good movie", "awful plot"]), strict=True):
        scores = {d["label"]: d["score"] for d in theirs}
        assert max(scores, key=scores.get) == pred["label"]
        assert scores == pytest.approx(pred["scores"], abs=1e-5)


def test_max_minutes_stops_training_and_says_so(
    tiny_backbone: Path, sentiment_data: dict, tmp_path: Path
) -> None:
    config = tiny_config(tiny_backbone, sentiment_data, tmp_path / "run", train={"max_steps": 40})
    config["train"]["max_minutes"] = 1e-6  # spent after the first step
    run = taskhead.train(config, quiet=True)
    assert run.metrics["train"]["stopped_by_max_minutes"] is True
    steps = [h["step"] for h in run.metrics["history"] if "loss" in h]
    assert steps == [1]
    assert "accuracy" in run.metrics["eval"]  # scored and saved as usual


def test_freeze_embeddings_keeps_the_word_embeddings_and_trains_the_rest(
    tiny_backbone: Path, sentiment_data, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from taskhead.errors import ConfigError

    frozen = {"freeze_embeddings": True}
    config = tiny_config(tiny_backbone, sentiment_data, tmp_path / "run", model=frozen, train={"epochs": 3})
    run = taskhead.train(config, quiet=True)
    before = load_file(str(tiny_backbone / "model.safetensors"))
    after = load_file(str(run.run_dir / "model" / "model.safetensors"))

    def weight(weights: dict, suffix: str) -> torch.Tensor:
        return next(v for k, v in weights.items() if k.endswith(suffix))

    words, query = "embeddings.word_embeddings.weight", "layer.0.attention.self.query.weight"
    assert torch.equal(weight(before, words), weight(after, words))
    assert not torch.equal(weight(before, query), weight(after, query))
    assert all(np.isfinite(h["loss"]) for h in run.metrics["history"] if "loss" in h)

    with pytest.raises(ConfigError, match=r"model: freeze_embeddings: the embeddings of special_tokens"):
        taskhead.train({**config, "model": {**config["model"], "special_tokens": ["[SENT]"]}}, quiet=True)


def test_freeze_embeddings_refuses_tied_output_embeddings(tiny_generators: dict, tmp_path: Path) -> None:
    from taskhead.errors import ConfigError

    corpus = write_jsonl(tmp_path / "lm.jsonl", [{"text": t} for t in POSITIVE + NEGATIVE])
    config = {
        "task": "language-modeling",
        "output_dir": str(tmp_path / "lm"),
        "model": {"backbone": str(tiny_generators["gpt2"]), "max_length": 16, "freeze_embeddings": True},
        "data": {"train": str(corpus)},
        "train": {"max_steps": 1, "save_strategy": "no", "bf16": False},
    }
    with pytest.raises(ConfigError, match="ties its input embeddings to its output layer"):
        taskhead.train(config, quiet=True)


def test_cpu_training_keeps_large_buffers_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import sys

    from taskhead.engine import devices

    calls: list[tuple] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append(("mallopt", param, value))
            return 1

        def malloc_trim(self, pad: int) -> int:
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(sys, "platform", "linux")
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "TASKHEAD_MALLOC_TUNING"):
        monkeypatch.delenv(key, raising=False)
    with devices.cpu_buffers_kept(torch.device("cpu")):
        assert calls == [
            ("mallopt", devices.M_MMAP_THRESHOLD, devices.KEEP_MAPPED),
            ("mallopt", devices.M_TRIM_THRESHOLD, devices.KEEP_MAPPED),
        ]
    assert calls[2:] == [
        ("mallopt", devices.M_MMAP_THRESHOLD, devices.STEADY_MMAP),
        ("mallopt", devices.M_TRIM_THRESHOLD, devices.STEADY_TRIM),
        ("trim", 0),
    ]
    # left alone: on a GPU, when the user tuned malloc, preloaded another allocator, or turned it off
    for env in (
        {},
        {"MALLOC_MMAP_THRESHOLD_": "1"},
        {"LD_PRELOAD": "libjemalloc.so"},
        {"TASKHEAD_MALLOC_TUNING": "0"},
    ):
        calls.clear()
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            with devices.cpu_buffers_kept(torch.device("cuda" if not env else "cpu")):
                pass
        assert calls == [], env
