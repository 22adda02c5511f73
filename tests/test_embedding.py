"""The embedding task: every loss trains a tiny bi-encoder, batches with in-batch negatives hold no text
twice, data errors are located, and the run's model/ is a plain sentence-transformers model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE, run_cli, tiny_config, write_jsonl

import taskhead
from taskhead.errors import ConfigError, DataError

TOPICS = [
    "the team won the match",
    "the stock price fell in the market",
    "the research on space was excellent",
    "rain and sun in the city",
    "the election in the city was a war",
    "a goal in the game",
    "the bank lost the market",
    "the science of the world",
]
PARAPHRASES = [
    "a team won a match",
    "a market stock price fell",
    "excellent research on space",
    "sun and rain in a city",
    "a war of an election in a city",
    "the game had a goal",
    "a bank lost in the market",
    "world science",
]
SENTIMENT = [*POSITIVE, *NEGATIVE]


def pairs(n: int = 16) -> list[dict[str, Any]]:
    """(anchor, positive): a sentence and its paraphrase, then sentiment phrases with a prefix."""
    rows = [{"anchor": a, "positive": p} for a, p in zip(TOPICS, PARAPHRASES, strict=True)]
    rows += [{"anchor": s, "positive": f"it was {s}"} for s in SENTIMENT]
    return rows[:n]


def triplets(negatives: int = 1) -> list[dict[str, Any]]:
    rows = []
    for i, row in enumerate(pairs(16)):
        extra = {"negative": PARAPHRASES[(i + 3) % 8] if i < 8 else SENTIMENT[(i + 10) % 20]}
        if negatives > 1:
            extra["negative_2"] = f"so {SENTIMENT[i]}" if i >= 8 else f"so {TOPICS[(i + 5) % 8]}"
        rows.append({**row, **extra})
    return rows


def scored(top: float = 5.0) -> list[dict[str, Any]]:
    """Paraphrases score high, sentiment phrases of the same polarity middle, of opposite polarity low."""
    rows = [{"text": a, "text_pair": p, "score": 0.9 * top} for a, p in zip(TOPICS, PARAPHRASES, strict=True)]
    rows += [{"text": POSITIVE[i], "text_pair": POSITIVE[i + 1], "score": 0.6 * top} for i in range(5)]
    rows += [{"text": POSITIVE[i], "text_pair": NEGATIVE[i], "score": 0.1 * top} for i in range(5)]
    rows += [{"text": TOPICS[i], "text_pair": NEGATIVE[i], "score": 0.0} for i in range(4)]
    return rows


def labelled() -> list[dict[str, Any]]:
    return [
        {"text": r["text"], "text_pair": r["text_pair"], "label": int(r["score"] >= 2.5)} for r in scored()
    ]


DATA = {"pairs": pairs, "triplets": triplets, "scored": scored, "labelled": labelled}
LOSS_CLASSES = {
    "mnrl": "MultipleNegativesRankingLoss",
    "cached-mnrl": "CachedMultipleNegativesRankingLoss",
    "triplet": "TripletLoss",
    "contrastive": "ContrastiveLoss",
    "online-contrastive": "OnlineContrastiveLoss",
    "cosent": "CoSENTLoss",
    "cosine": "CosineSimilarityLoss",
}


def config(backbone: Path, tmp: Path, rows: list[dict[str, Any]], **task: Any) -> dict[str, Any]:
    path = write_jsonl(tmp / "train.jsonl", rows)
    files = {"train": path, "eval": path}
    return tiny_config(backbone, files, tmp / "run", task={"name": "embedding", **task})


def eval_losses(run: Any) -> list[float]:
    return [entry["eval_loss"] for entry in run.metrics["history"] if "eval_loss" in entry]


@pytest.mark.parametrize(
    ("loss", "rows", "options", "metric"),
    [
        ("mnrl", pairs(), {}, "mrr"),
        ("mnrl", triplets(negatives=2), {}, "triplet_accuracy"),
        ("cached-mnrl", triplets(), {"mini_batch_size": 3}, "triplet_accuracy"),
        ("triplet", triplets(), {}, "triplet_accuracy"),
        ("triplet", triplets(), {"distance": "euclidean", "margin": 0.5}, "triplet_accuracy"),
        ("contrastive", labelled(), {}, "ap"),
        ("online-contrastive", labelled(), {}, "ap"),
        ("cosent", scored(), {}, "spearman"),
        ("cosine", scored(top=1.0), {}, "spearman"),
    ],
    ids=["mnrl", "mnrl-hard-negatives", "cached-mnrl", "triplet", "triplet-euclidean", "contrastive",
         "online-contrastive", "cosent", "cosine"],
)  # fmt: skip
def test_each_loss_lowers_its_loss(
    loss: str,
    rows: list[dict[str, Any]],
    options: dict[str, Any],
    metric: str,
    tiny_backbone: Path,
    tmp_path: Path,
) -> None:
    cfg = config(tiny_backbone, tmp_path, rows, loss=loss, **options)
    cfg["train"].update(max_steps=8, eval_strategy="steps", eval_steps=1, warmup_ratio=0.0)
    run = taskhead.train(cfg, quiet=True)
    losses = eval_losses(run)  # the loss on the training data after each step, in eval mode
    assert len(losses) == 8
    assert losses[-1] < 0.95 * losses[0], losses
    assert metric in run.metrics["eval"]
    assert json.loads((run.run_dir / "taskhead.json").read_text())["task_state"]["loss"] == loss
    card = (run.run_dir / "README.md").read_text()  # the loss class and its settings, in the model card
    assert f"with `{LOSS_CLASSES[loss]}(" in card, card


@pytest.mark.parametrize(
    ("kind", "loss", "metric"),
    [("scored", "cosent", "spearman"), ("labelled", "contrastive", "ap"),
     ("triplets", "mnrl", "triplet_accuracy"), ("pairs", "mnrl", "mrr")],
)  # fmt: skip
def test_loss_and_metric_follow_from_the_data(
    kind: str, loss: str, metric: str, tiny_backbone: Path, tmp_path: Path
) -> None:
    report = taskhead.validate(config(tiny_backbone, tmp_path, DATA[kind]()))
    assert report.task.loss_name == loss
    assert report.task.default_metric == metric


def test_a_loss_that_does_not_fit_the_data_is_a_config_error(tiny_backbone: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"task.loss: triplet trains on triplets, but .*train.jsonl holds scored"
    ):
        taskhead.validate(config(tiny_backbone, tmp_path, scored(), loss="triplet"))
    with pytest.raises(
        ConfigError, match=r"triplet takes one negative per row, but .* has 2 negative columns"
    ):
        taskhead.validate(config(tiny_backbone, tmp_path, triplets(negatives=2), loss="triplet"))
    with pytest.raises(ConfigError, match=r"task.loss: contrastive trains on labelled pairs"):
        taskhead.validate(config(tiny_backbone, tmp_path, pairs(), loss="contrastive"))


# ---------------------------------------------------------------- duplicate-free batches


def repeated_rows() -> list[dict[str, Any]]:
    """40 rows; anchors repeat 4 times each, and some positives are another row's anchor."""
    rows = []
    for i in range(40):
        anchor = SENTIMENT[i % 10]
        positive = SENTIMENT[(i % 10) + 10] if i % 3 else f"{SENTIMENT[i % 20]} {i}"
        rows.append({"anchor": anchor, "positive": positive})
    return rows


def batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


@pytest.mark.parametrize("grouped", [False, True])
def test_no_duplicates_sampler_never_repeats_a_text_in_a_batch(grouped: bool) -> None:
    from taskhead.data.batching import NoDuplicatesSampler

    groups = [[r["anchor"], r["positive"]] for r in repeated_rows()]
    lengths = [len(" ".join(g)) for g in groups] if grouped else None
    sampler = NoDuplicatesSampler(groups, 8, seed=1, lengths=lengths)
    seen_rows: set[int] = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == 40
        for batch in batches(order, 8):
            assert len(batch) == 8
            texts = [t for i in batch for t in groups[i]]
            assert len(texts) == len(set(texts)), [groups[i] for i in batch]
        seen_rows |= set(order)
    assert len(seen_rows) >= 36  # rows left out of one epoch (re-drawn instead) come back in others


def test_no_duplicates_sampler_is_deterministic_per_epoch() -> None:
    from taskhead.data.batching import NoDuplicatesSampler

    groups = [[r["anchor"], r["positive"]] for r in repeated_rows()]
    a, b = NoDuplicatesSampler(groups, 8, seed=3), NoDuplicatesSampler(groups, 8, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert list(a) != list(b)


def test_training_batches_hold_no_text_twice(
    tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskhead.tasks import embedding_model

    seen: list[list[tuple[int, ...]]] = []
    forward = embedding_model.EmbeddingModel.forward

    def recording(self: Any, texts: list[dict[str, Any]], labels: Any = None) -> Any:
        rows = []
        for text in texts:
            for ids, mask in zip(text["input_ids"].tolist(), text["attention_mask"].tolist(), strict=True):
                rows.append(tuple(i for i, m in zip(ids, mask, strict=True) if m))
        seen.append(rows)
        return forward(self, texts, labels)

    monkeypatch.setattr(embedding_model.EmbeddingModel, "forward", recording)
    cfg = config(tiny_backbone, tmp_path, repeated_rows(), loss="mnrl")
    cfg["train"].update(epochs=3, eval_strategy="no")
    taskhead.train(cfg, quiet=True)
    assert len(seen) == 15  # 40 rows, batches of 8, 3 epochs
    for rows in seen:
        assert len(rows) == len(set(rows))


def test_a_batch_size_no_duplicate_free_batch_can_fill_is_a_data_error(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    rows = [{"anchor": SENTIMENT[i % 3], "positive": f"{SENTIMENT[i % 3]} {i}"} for i in range(12)]
    cfg = config(tiny_backbone, tmp_path, rows, loss="mnrl")
    with pytest.raises(
        DataError, match=r"train.batch_size=8 .* only 3 rows share no text .*; lower train.batch_size to 3"
    ):
        taskhead.train(cfg, quiet=True)


# ---------------------------------------------------------------- data validation


def test_score_range_and_empty_text_and_labels_are_located(tiny_backbone: Path, tmp_path: Path) -> None:
    rows = scored()
    rows[2] = {**rows[2], "score": 7.5}
    rows[4] = {**rows[4], "text_pair": "  "}
    with pytest.raises(DataError) as err:
        taskhead.validate(config(tiny_backbone, tmp_path, rows))
    lines = str(err.value).splitlines()
    assert any(ln.endswith("train.jsonl:3: score: 7.5 is out of range; expected a score from 0 to 5 "
                           "(task.score_max sets the top of the scale)") for ln in lines), lines  # fmt: skip
    assert any(
        ln.endswith("train.jsonl:5: text_pair: empty text; expected a non-empty string") for ln in lines
    )
    rows = labelled()
    rows[1] = {**rows[1], "label": 2}
    with pytest.raises(
        DataError, match=r"train.jsonl:2: label: expected 0 or 1 .* found 2; for similarity scores"
    ):
        taskhead.validate(config(tiny_backbone, tmp_path, rows))


def test_scores_beyond_the_detected_scale_are_located(tiny_backbone: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", scored(top=1.0))
    dev = write_jsonl(tmp_path / "dev.jsonl", scored(top=5.0))
    cfg = tiny_config(tiny_backbone, {"train": train}, tmp_path / "run", task="embedding")
    cfg["data"]["eval"] = str(dev)
    with pytest.raises(DataError) as err:
        taskhead.validate(cfg)
    assert str(err.value).splitlines()[0] == (
        f"{dev}:1: score: 4.5 is out of range; expected a score from 0 to 1 (the scale of the training "
        f"scores; task.score_max sets it)"
    )
    assert err.value.total == 13  # every dev score above 1 (8 x 4.5, 5 x 3.0)
    cfg["task"] = {"name": "embedding", "score_max": 5}
    assert taskhead.validate(cfg).task.score_max == 5


def test_missing_columns_name_the_setting(tiny_backbone: Path, tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("sentence1\tsentence2\tsim\na plot\tthe plot\t4\n", encoding="utf-8")
    cfg = tiny_config(tiny_backbone, {"train": path}, tmp_path / "run", task="embedding")
    with pytest.raises(DataError, match=r"train.tsv: column 'text' not found .*set data.columns.anchor"):
        taskhead.validate(cfg)
    cfg["data"]["columns"] = {"anchor": "sentence1", "positive": "sentence2", "score": "score"}
    with pytest.raises(
        DataError,
        match=r"column 'score' not found \(columns: sentence1, sentence2, sim\); set data.columns.score",
    ):
        taskhead.validate(cfg)
    cfg["data"]["columns"]["score"] = "sim"
    report = taskhead.validate(cfg)
    assert report.splits["train"][0] == {
        "_where": f"{path}:2",
        "texts": ["a plot", "the plot"],
        "kind": "scored",
        "score": 4.0,
    }
    single = write_jsonl(tmp_path / "single.jsonl", [{"text": "good movie"}])
    cfg = tiny_config(tiny_backbone, {"train": single}, tmp_path / "run", task="embedding")
    with pytest.raises(DataError, match=r"single.jsonl: no second text column .* set data.columns.positive"):
        taskhead.validate(cfg)


def test_validate_reads_embedding_data_without_torch(tiny_backbone: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "cfg.yaml").write_text(
        json.dumps(config(tiny_backbone, tmp_path, triplets())), encoding="utf-8"
    )
    code = (
        "import sys; from taskhead.cli import main\n"
        "assert main(['validate', sys.argv[1]]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "cfg.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "triplets 16" in result.stdout


# ---------------------------------------------------------------- the saved model


@pytest.fixture(scope="module")
def scored_run(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("scored-run")
    cfg = config(tiny_backbone, tmp, scored())
    cfg["train"]["max_steps"] = 4
    return taskhead.train(cfg, quiet=True).run_dir


def test_plain_sentence_transformers_gives_the_same_embeddings(scored_run: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [*TOPICS, "a " * 40 + "long text cut at max_length"]
    ours = np.array([p["embedding"] for p in taskhead.load(scored_run, precision="fp32").predict(texts)])
    plain = SentenceTransformer(str(scored_run / "model"), device="cpu").encode(texts, convert_to_numpy=True)
    assert ours.shape == plain.shape == (len(texts), 32)
    np.testing.assert_allclose(ours, plain, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalize: true (default)
    fast = np.array([p["embedding"] for p in taskhead.load(scored_run).predict(texts)])  # bf16 where native
    assert (fast * plain).sum(axis=1).min() > 0.999


def test_pair_input_gives_the_cosine_of_the_two_embeddings(scored_run: Path) -> None:
    predictor = taskhead.load(scored_run)
    out = predictor.predict(["good movie", ("good movie", "bad film"), {"id": "x", "text": "bad film"}])
    assert list(out[1]) == ["score"] and list(out[2]) == ["id", "embedding"]
    a, b = np.array(out[0]["embedding"]), np.array(out[2]["embedding"])
    assert out[1]["score"] == pytest.approx(float(a @ b), abs=1e-5)
    with pytest.raises(DataError, match=r"input 1: text: expected a non-empty string"):
        predictor.predict([("good movie", "")])


def test_evaluate_scores_each_kind_of_file(scored_run: Path, tmp_path: Path) -> None:
    predictor = taskhead.load(scored_run)
    metrics = predictor.evaluate(write_jsonl(tmp_path / "dev.jsonl", scored()))
    assert set(metrics) == {"spearman", "pearson", "loss"}
    assert -1 <= metrics["spearman"] <= 1
    metrics = predictor.evaluate(write_jsonl(tmp_path / "labelled.jsonl", labelled()))
    assert {"accuracy", "f1", "ap", "accuracy_threshold", "loss"} <= set(
        metrics
    )  # cosent fits labelled pairs
    metrics = predictor.evaluate(write_jsonl(tmp_path / "triplets.jsonl", triplets()))
    assert set(metrics) == {"triplet_accuracy"}  # cosent does not fit triplets: no loss
    metrics = predictor.evaluate(write_jsonl(tmp_path / "pairs.jsonl", pairs()))
    assert set(metrics) == {"mrr", "accuracy_at_1", "accuracy_at_10"}


def test_binary_metrics_pick_the_best_thresholds() -> None:
    from taskhead.tasks.embedding import binary_metrics

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 1, 0, 1, 0, 0])
    m = binary_metrics(scores, labels)
    assert m["accuracy"] == pytest.approx(5 / 6) and m["accuracy_threshold"] in (0.8, 0.6)
    assert m["f1"] == pytest.approx(6 / 7) and m["f1_threshold"] == 0.6  # top 4: tp 3, fp 1, fn 0
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == 1.0
    assert m["ap"] == pytest.approx((1 + 1 + 0.75) / 3)


def test_a_sentence_transformers_backbone_keeps_or_changes_its_pooling(
    scored_run: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    cfg = config(scored_run, tmp_path, pairs(), pooling="cls", normalize=False)  # a run dir as the backbone
    cfg["train"]["max_steps"] = 1
    run = taskhead.train(cfg, quiet=True)
    model = SentenceTransformer(str(run.run_dir / "model"), device="cpu")
    assert [type(m) for m in model][1:] == [Pooling]
    assert model[1].pooling_mode == "cls"
    cfg["task"] = {"name": "embedding"}
    run = taskhead.train(cfg, quiet=True, overwrite=True)
    model = SentenceTransformer(str(run.run_dir / "model"), device="cpu")
    assert [type(m) for m in model][1:] == [Pooling, Normalize] and model[1].pooling_mode == "mean"
    with pytest.raises(ConfigError, match=r"model.pooling: applies to classification; .* is task.pooling"):
        taskhead.train(cfg, overwrite=True, quiet=True, model={"pooling": "mean"})


def test_checkpoints_and_resume(tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskhead.tasks import embedding_model

    cfg = config(tiny_backbone, tmp_path, triplets())
    cfg["train"].update(max_steps=4, save_strategy="steps", save_steps=2, eval_strategy="no")
    first = taskhead.train(cfg, quiet=True)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    steps: list[int] = []
    forward = embedding_model.EmbeddingModel.forward
    monkeypatch.setattr(
        embedding_model.EmbeddingModel,
        "forward",
        lambda self, *a, **k: steps.append(1) or forward(self, *a, **k),
    )
    cfg["train"]["max_steps"] = 6
    run = taskhead.train(cfg, quiet=True, resume=True)
    assert len(steps) == 2  # steps 5 and 6 only: continued from checkpoint-4
    logged = [entry for entry in run.metrics["history"] if "loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4, 5, 6]
    assert logged[:4] == [entry for entry in first.metrics["history"] if "loss" in entry]


# ---------------------------------------------------------------- command line


def test_cli_train_predict_evaluate(tiny_backbone: Path, tmp_path: Path) -> None:
    cfg = config(tiny_backbone, tmp_path, scored())
    cfg["train"]["max_steps"] = 2
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg), encoding="utf-8")
    result = run_cli("train", str(tmp_path / "cfg.yaml"), "--quiet")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    inputs = write_jsonl(
        tmp_path / "in.jsonl", [{"id": 1, "text": "good movie"}, {"text": "a", "text_pair": "b"}]
    )
    result = run_cli("predict", str(run), str(inputs))
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["id"] == 1 and len(first["embedding"]) == 32
    assert list(second) == ["line", "score"] and second["line"] == 2  # every output names its input line
    result = run_cli("evaluate", str(run), str(tmp_path / "train.jsonl"))
    assert result.returncode == 0, result.stderr
    saved = json.loads((run / "evaluate-train.json").read_text())["metrics"]
    assert {"spearman", "pearson"} <= set(saved) and "spearman" in result.stdout
    bad = scored()
    bad[3]["score"] = -1
    cfg["data"]["train"] = str(write_jsonl(tmp_path / "bad.jsonl", bad))
    (tmp_path / "bad.yaml").write_text(json.dumps(cfg), encoding="utf-8")
    result = run_cli("train", str(tmp_path / "bad.yaml"), "--overwrite")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'bad.jsonl'}:4: score: -1 is out of range; expected a score from 0 to 5 "
        f"(task.score_max sets the top of the scale)"
    ]
