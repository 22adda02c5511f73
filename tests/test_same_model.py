"""The same model everywhere: what is evaluated after reload equals what was evaluated at training time
(loss-changing options included), fine-tuned heads are matched to the data's labels by name, and a batch
mixing single texts and text pairs encodes each input as what it is (server micro-batching included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import (
    NEGATIVE,
    POSITIVE,
    assert_close,
    ner_records,
    run_cli,
    sentiment_records,
    tiny_config,
    write_conll,
    write_jsonl,
)

import taskhead
from taskhead.errors import ConfigError, DataError

TOPICS = {
    "sport": ["the team won the match", "a goal in the game", "the team lost the match"],
    "money": ["the stock price fell", "the bank and the market", "the market price"],
    "weather": ["rain in the city", "the sun and rain", "sun on the city"],
}


def _train(config: dict[str, Any]) -> Path:
    return taskhead.train(config, quiet=True).run_dir


def _reloaded_eval(run_dir: Path, data: Path) -> dict[str, Any]:
    return taskhead.load(run_dir, precision="fp32").evaluate(data)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def _assert_same_eval(run_dir: Path, data: Path) -> dict[str, Any]:
    """metrics.json's eval (training time) equals Predictor.evaluate on the reloaded run, loss included."""
    trained = json.loads((run_dir / "metrics.json").read_text())["eval"]
    reloaded = _reloaded_eval(run_dir, data)
    assert "loss" in trained and trained["loss"] > 0
    assert _scalars(reloaded) == pytest.approx(_scalars(trained), abs=1e-6)
    return reloaded


def _imbalanced(tmp_path: Path) -> dict[str, Path]:
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] * 3
    rows += [{"text": t, "label": "neg"} for t in NEGATIVE]
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", rows),
        "eval": write_jsonl(tmp_path / "eval.jsonl", sentiment_records(1)),
    }


@pytest.mark.parametrize("weights", ["balanced", {"neg": 3.0, "pos": 0.5}])
def test_class_weights_survive_reload(tiny_backbone: Path, tmp_path: Path, weights: Any) -> None:
    data = _imbalanced(tmp_path)
    config = tiny_config(
        tiny_backbone, data, tmp_path / "run", task={"name": "classification", "class_weights": weights}
    )
    run_dir = _train(config)
    state = json.loads((run_dir / "taskhead.json").read_text())["task_state"]
    expected = [40 / (2 * 10), 40 / (2 * 30)] if weights == "balanced" else [3.0, 0.5]
    assert state["class_weights"] == pytest.approx(expected)
    reloaded = _assert_same_eval(run_dir, data["eval"])
    if weights != "balanced":
        return
    # the CLI reports the same figures as the Python API
    result = run_cli("evaluate", str(run_dir), str(data["eval"]), "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    written = json.loads((run_dir / "evaluate-eval.json").read_text())["metrics"]
    assert written["loss"] == pytest.approx(reloaded["loss"], abs=1e-6)


def _topic_rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        a, b = list(TOPICS)[i % 3], list(TOPICS)[(i + 1) % 3]
        labels = [a] if i % 2 else [a, b]
        rows.append({"text": f"{TOPICS[a][i % 3]} and {TOPICS[b][(i + 1) % 3]}", "labels": labels})
    return rows


@pytest.mark.parametrize(
    "task", [{"class_weights": "balanced"}, {"tune_thresholds": True}, {"threshold": 0.3}]
)
def test_multi_label_options_survive_reload(tiny_backbone: Path, tmp_path: Path, task: dict) -> None:
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", _topic_rows(24)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", _topic_rows(9)),
    }
    config = tiny_config(
        tiny_backbone, data, tmp_path / "run", task={"name": "classification", "multi_label": True, **task}
    )
    run_dir = _train(config)
    _assert_same_eval(run_dir, data["eval"])


# ---------------------------------------------------------------------- heads matched by name


def _classifier(tiny_backbone: Path, directory: Path, id2label: dict[int, str]) -> Path:
    """A fine-tuned-looking transformers classifier (random head) saved with these label names."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    net = AutoModelForSequenceClassification.from_pretrained(
        tiny_backbone, id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    net.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_backbone).save_pretrained(directory)
    return directory


def _logits_by_name(net: Any, labels: list[str], tokenizer: Any, texts: list[str]) -> dict[str, list[float]]:
    net.eval()
    with torch.inference_mode():
        logits = net(**tokenizer(texts, return_tensors="pt", padding=True)).logits
    return {label: logits[:, i].tolist() for i, label in enumerate(labels)}


def _build(task_config: dict[str, Any], backbone: Path, labels: list[str], **model: Any) -> tuple[Any, Any]:
    """The task's model for ``labels`` on ``backbone`` (what `taskhead train` builds before training)."""
    from transformers import AutoTokenizer

    from taskhead.config import RunConfig
    from taskhead.engine.backbones import resolve_backbone
    from taskhead.tasks import build_task

    cfg = RunConfig.model_validate(
        {"task": task_config, "model": {"backbone": str(backbone), **model}, "data": {"train": "x"}}
    )
    task = build_task(cfg.task, labels=labels)
    resolved = resolve_backbone(str(backbone))  # a run directory: its model/
    tokenizer = AutoTokenizer.from_pretrained(resolved)
    return task.build_model(resolved, cfg.model, tokenizer), tokenizer


@pytest.mark.parametrize("labels", [["neg", "pos"], ["pos", "neg"]])
def test_fine_tuned_head_rows_follow_label_names(tiny_backbone: Path, tmp_path: Path, labels: list) -> None:
    from transformers import AutoModelForSequenceClassification

    backbone = _classifier(tiny_backbone, tmp_path / "clf", {0: "pos", 1: "neg"})
    original = AutoModelForSequenceClassification.from_pretrained(backbone)
    net, tokenizer = _build("classification", backbone, labels)
    texts = ["good movie", "a terrible plot that was very bad"]
    want = _logits_by_name(original, ["pos", "neg"], tokenizer, texts)
    got = _logits_by_name(net, labels, tokenizer, texts)
    assert_close(got, want, tol=1e-6)
    assert net.config.id2label == dict(enumerate(labels))


def test_other_label_set_is_one_line_error_or_fresh_head(tiny_backbone: Path, tmp_path: Path) -> None:
    backbone = _classifier(tiny_backbone, tmp_path / "clf", {0: "neg", 1: "pos"})
    with pytest.raises(ConfigError, match=r"labels \[neg, pos\].*the data has \[bad, good, meh\]") as err:
        _build("classification", backbone, ["bad", "good", "meh"])
    assert "\n" not in str(err.value) and "model.reuse_head=fresh" in str(err.value)
    net, _ = _build("classification", backbone, ["bad", "good", "meh"], reuse_head="fresh")
    assert net.config.id2label == {0: "bad", 1: "good", 2: "meh"}
    # fresh also replaces a head of the same size: its rows must not be reused by position
    net, _ = _build("classification", backbone, ["neg", "pos"], reuse_head="fresh")
    from transformers import AutoModelForSequenceClassification

    old = AutoModelForSequenceClassification.from_pretrained(backbone)
    assert not torch.equal(net.classifier.weight, old.classifier.weight)
    layer = "bert.encoder.layer.0.output.dense.weight"
    assert torch.equal(net.state_dict()[layer], old.state_dict()[layer])  # the backbone is kept


def test_run_directory_as_backbone_keeps_predictions_per_label(tiny_runs: Any, tmp_path: Path) -> None:
    first = tiny_runs["classification"]  # labels neg, pos
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", sentiment_records(1)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", sentiment_records(1)),
    }
    config = tiny_config(
        first,
        data,
        tmp_path / "again",
        data={"labels": ["pos", "neg"]},
        train={"learning_rate": 1e-12, "max_steps": 1, "weight_decay": 0.0},
    )
    second = _train(config)
    texts = ["good movie", "awful film", "the plot was quite dull"]
    before = taskhead.load(first, precision="fp32").predict(texts)
    after = taskhead.load(second, precision="fp32").predict(texts)
    assert [p["label"] for p in after] == [p["label"] for p in before]
    for a, b in zip(after, before, strict=True):
        assert list(a["scores"]) == ["pos", "neg"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    # the CLI refuses another label set in one line, exit code 2
    bad = tiny_config(first, data, tmp_path / "bad", data={"labels": ["neg", "pos", "meh"]})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = run_cli("train", str(tmp_path / "bad.json"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "model.reuse_head=fresh" in result.stderr


def test_pooled_head_of_a_run_is_matched_by_name(tiny_backbone: Path, tmp_path: Path) -> None:
    data = {"train": write_jsonl(tmp_path / "train.jsonl", sentiment_records(2))}
    first = _train(tiny_config(tiny_backbone, data, tmp_path / "pooled", model={"pooling": "mean"}))
    net, tokenizer = _build("classification", first, ["pos", "neg"], pooling="mean")
    original = taskhead.load(first, precision="fp32").model
    texts = ["good movie", "bad plot"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    original.eval()
    net.eval()
    with torch.inference_mode():
        want, got = original(**batch).logits, net(**batch).logits
    assert torch.allclose(got, want[:, [1, 0]], atol=1e-6)
    with pytest.raises(ConfigError, match="another layout"):
        _build("classification", first, ["neg", "pos"], pooling="max")
    with pytest.raises(ConfigError, match=r"labels \[neg, pos\]"):
        _build("classification", first, ["a", "b"], pooling="mean")


def test_token_classification_head_is_matched_by_tag_name(tiny_backbone: Path, tmp_path: Path) -> None:
    data = {"train": write_conll(tmp_path / "train.conll", ner_records(12))}
    config = tiny_config(tiny_backbone, data, tmp_path / "ner", task="token-classification")
    config["train"]["max_steps"] = 2
    first = _train(config)
    labels = json.loads((first / "taskhead.json").read_text())["task_state"]["labels"]
    shuffled = labels[::-1]
    net, tokenizer = _build("token-classification", first, shuffled)
    original = taskhead.load(first, precision="fp32").model
    batch = tokenizer(["alice was in rome"], return_tensors="pt")
    original.eval()
    net.eval()
    with torch.inference_mode():
        want, got = original(**batch).logits, net(**batch).logits
    order = [labels.index(t) for t in shuffled]
    assert torch.allclose(got, want[..., order], atol=1e-6)
    with pytest.raises(ConfigError, match="token-classification head has the labels"):
        _build("token-classification", first, ["O", "B-X", "I-X"])


# ---------------------------------------------------------------------- single texts and pairs


PAIRS = [("good movie", "great film"), ("bad movie", "good film"), ("sad story", "awful plot")]


@pytest.fixture(scope="module")
def pair_run(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pair-run")
    rows = [
        {"text": a, "text_pair": b, "label": "same" if (a in POSITIVE) == (b in POSITIVE) else "other"}
        for a in POSITIVE[:5] + NEGATIVE[:5]
        for b in POSITIVE[5:8] + NEGATIVE[5:8]
    ]
    data = {"train": write_jsonl(tmp / "train.jsonl", rows)}
    config = tiny_config(tiny_backbone, data, tmp / "run", data={"columns": {"text_pair": "text_pair"}})
    return _train(config)


def test_a_batch_encodes_each_input_as_what_it_is(tiny_backbone: Path) -> None:
    from transformers import AutoTokenizer

    from taskhead.config import ModelConfig
    from taskhead.tasks import build_task
    from taskhead.tasks.classification import ClassificationOptions

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    task = build_task(ClassificationOptions(), labels=["neg", "pos"])  # shape unknown: any mix encodes
    model = ModelConfig(backbone=str(tiny_backbone), max_length=32)
    inputs = ["good movie", ("bad movie", "nice plot")]
    mixed = [task.to_example(x, f"input {i}") for i, x in enumerate(inputs)]
    for order in (mixed, mixed[::-1]):
        features = task.encode(order, tokenizer, model)
        alone = [task.encode([ex], tokenizer, model).inputs[0] for ex in order]
        assert features.inputs == alone
    pair = next(f for ex, f in zip(mixed, features.inputs[::-1], strict=True) if "text_pair" in ex)
    assert tokenizer.decode(pair["input_ids"]) == "[CLS] bad movie [SEP] nice plot [SEP]"


def test_pair_model_refuses_single_text_and_the_reverse(pair_run: Path, tiny_runs: Any) -> None:
    pairs = taskhead.load(pair_run, precision="fp32")
    with pytest.raises(DataError, match=r"^input 2: text_pair: missing; the model was trained on text pairs"):
        pairs.predict([PAIRS[0], "good movie"])
    singles = taskhead.load(tiny_runs["classification"], precision="fp32")
    with pytest.raises(DataError, match=r"^input 1: text_pair: the model was trained on single texts"):
        singles.predict([("good movie", "bad plot")])
    with pytest.raises(DataError, match=r"^input 1: text_pair: the model was trained on single texts"):
        singles.predict([{"text": "good movie", "text_pair": "bad plot"}])


def _post_all(app: Any, model: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """All requests at once from one event loop (merged by the micro-batcher), answers in order."""
    import asyncio

    import httpx

    async def go() -> list[Any]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = await asyncio.gather(
                *(client.post(f"/v1/models/{model}/predict", json=body) for body in bodies)
            )
        return [(r.status_code, r.json()) for r in answers]

    return asyncio.run(go())


def test_server_answer_does_not_depend_on_other_requests(pair_run: Path, tiny_runs: Any) -> None:
    from taskhead.serving import ServeSettings, create_app

    models = {
        "single": taskhead.load(tiny_runs["classification"], precision="fp32"),
        "pairs": taskhead.load(pair_run, precision="fp32"),
        "emb": taskhead.load(tiny_runs["embedding"], precision="fp32"),
        "ner": taskhead.load(tiny_runs["token-classification"], precision="fp32"),
        "qa": taskhead.load(tiny_runs["question-answering"], precision="fp32"),
        "gen": taskhead.load(tiny_runs["generation"], precision="fp32"),
    }
    long = " ".join(["good", "film", "and", "bad", "plot"] * 10)  # windows/truncation: over max_length 32
    requests = {
        "single": [["good movie"], ["a very bad film but a nice plot and a sad story", long], ["dull"]],
        "pairs": [[list(PAIRS[0])], [[long, "bad movie"], list(PAIRS[1])], [["sad story", long]]],
        "emb": [["good movie"], [["good movie", "a very bad film and a sad story"]], ["rain", ["a", "b"]]],
        "ner": [["alice was in rome"], [{"tokens": ["bob", "was", "in", "oslo"]}, long], ["carol smith"]],
        "qa": [[["who won", "the team won the match"]], [{"question": "what fell", "context": long}]],
        "gen": [["good movie"], ["the stock market fell in the city and the bank lost", "rain"]],
    }
    app = create_app(models, settings=ServeSettings(batch_wait_ms=400))
    for name, inputs in requests.items():
        bodies = [{"inputs": x} for x in inputs]
        alone = [_post_all(app, name, [body])[0] for body in bodies]
        merged = _post_all(app, name, bodies)
        for (code_a, a), (code_m, m) in zip(alone, merged, strict=True):
            assert code_a == code_m == 200, (a, m)
            assert_same(m["predictions"], a["predictions"], tol=1e-6)
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        health = client.get("/health").json()["models"]
        for name, inputs in requests.items():  # each model's requests were merged into one forward pass
            assert health[name]["largest_batch"] == sum(map(len, inputs)), name
        r = client.post("/v1/models/single/predict", json={"inputs": ["fine", ["good movie", "bad plot"]]})
        assert r.status_code == 422 and r.json()["detail"].startswith("inputs[1]: text_pair:")


def assert_same(got: Any, expected: Any, tol: float) -> None:
    """Equal labels and texts; numbers within ``tol`` plus float noise (scores are rounded to 6 digits)."""
    if isinstance(expected, dict):
        assert set(got) == set(expected)
        for key in expected:
            assert_same(got[key], expected[key], tol)
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_same(g, e, tol)
    elif isinstance(expected, float):
        assert abs(got - expected) <= tol * 1.001
    else:
        assert got == expected


class FailsOn:
    """A Predictor whose model fails (RuntimeError, not a data error) on any batch holding one text."""

    def __init__(self, inner: Any, text: str) -> None:
        self.inner, self.text = inner, text

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if any(ex.get("text") == self.text for ex in examples):
            raise RuntimeError("the model fell over")
        return self.inner.predict_examples(examples)


def test_a_model_failure_in_a_merged_batch_fails_only_its_request(tiny_runs: Any) -> None:
    from taskhead.serving import ServeSettings, create_app

    predictor = taskhead.load(tiny_runs["classification"], precision="fp32")
    app = create_app({"m": FailsOn(predictor, "boom")}, settings=ServeSettings(batch_wait_ms=300))
    bodies = [{"inputs": ["good movie"]}, {"inputs": ["fine", "boom"]}, {"inputs": ["bad movie"]}]
    answers = _post_all(app, "m", bodies)
    assert [code for code, _ in answers] == [200, 500, 200]
    assert answers[1][1] == {"detail": "internal error: RuntimeError: the model fell over"}
    assert answers[2][1]["predictions"] == predictor.predict(["bad movie"])


def test_evaluate_runs_in_the_training_precision(tiny_runs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # on a device with native bf16, prediction defaults to bf16 autocast, but a run trained and evaluated in
    # fp32 is evaluated in fp32 again, so that evaluate() reproduces metrics.json
    import taskhead.workflows.predict

    run = tiny_runs["classification"]
    monkeypatch.setattr(taskhead.workflows.predict, "bf16_supported", lambda device: True)
    predictor = taskhead.load(run)
    assert (predictor.precision, predictor.eval_precision) == ("bf16", "fp32")
    recorded = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["eval"]
    config = json.loads((run / "taskhead.json").read_text(encoding="utf-8"))["config"]
    metrics = predictor.evaluate(config["data"]["eval"])
    assert metrics["loss"] == pytest.approx(recorded["loss"], abs=1e-6)
    assert taskhead.load(run, precision="bf16").eval_precision == "bf16"  # an explicit choice is kept
