"""Extractive QA: windows over long contexts, mapping back to characters, n-best decoding, no-answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import qa_records, run_cli, tiny_config, write_jsonl

import taskhead
from taskhead.config import DataConfig, ModelConfig
from taskhead.tasks.base import Features
from taskhead.tasks.question_answering import QuestionAnsweringOptions, QuestionAnsweringTask

FILLER = "the game was good and the team was happy "


def make_task(**options: object) -> QuestionAnsweringTask:
    task = QuestionAnsweringTask(QuestionAnsweringOptions(**{"max_question_length": 8, **options}))
    task.allow_no_answer = bool(options.get("no_answer", False))
    return task


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_backbone)


def example(context: str, answer: str, start: int | None = None, **extra: object) -> dict:
    start = context.index(answer) if start is None else start
    return {
        "_where": "mem",
        "id": "q",
        "question": "who won",
        "context": context,
        "answers": [(answer, start)],
        **extra,
    }


def answer_text(task, features, ex, j) -> str:
    s, e = features.inputs[j]["labels"]
    offsets, cls = features.meta[j]
    if s == cls:
        return ""
    return ex["context"][offsets[s][0] : offsets[e][1]]


def test_answer_at_the_very_end_of_a_long_context(tokenizer) -> None:
    context = FILLER * 20 + "and the bank won"
    ex = example(context, "the bank won")
    features = QuestionAnsweringTask(QuestionAnsweringOptions(doc_stride=8, max_question_length=8)).encode(
        [ex], tokenizer, ModelConfig(max_length=32)
    )
    assert len(features.inputs) > 10 and features.windowed == 1 and features.lost == 0
    assert all(len(f["input_ids"]) <= 32 for f in features.inputs)
    found = [answer_text(None, features, ex, j) for j in range(len(features.inputs))]
    assert found[-1] == "the bank won"
    assert set(found[:-2]) == {""}  # windows without the answer point at [CLS]


def test_answer_straddling_two_windows_is_found_with_stride_and_counted_without(tokenizer) -> None:
    context = FILLER * 3 + "the stock market fell " + FILLER * 3
    ex = example(context, "the stock market fell")
    with_stride = make_task(doc_stride=12).encode([ex], tokenizer, ModelConfig(max_length=32))
    assert with_stride.lost == 0
    assert "the stock market fell" in {
        answer_text(None, with_stride, ex, j) for j in range(len(with_stride.inputs))
    }
    # without overlap some answer crosses a window edge: find a start that does, and check it is reported
    lost = []
    for shift in range(0, 30):
        ex2 = example("good " * shift + context, "the stock market fell")
        lost.append(make_task(doc_stride=0).encode([ex2], tokenizer, ModelConfig(max_length=32)).lost)
    assert 1 in lost and set(lost) <= {0, 1}


def fake_outputs(features: Features, ex: dict, spans: list[tuple[str, float, float]]) -> list[np.ndarray]:
    """Logits that put start score a / end score b on the tokens of each (text, a, b) in the context."""
    outputs = []
    for f, (offsets, _cls) in zip(features.inputs, features.meta, strict=True):
        scores = np.zeros((len(f["input_ids"]), 2), dtype=np.float32)
        for text, a, b in spans:
            begin = ex["context"].index(text)
            end = begin + len(text)
            for p, o in enumerate(offsets):
                if o is not None and o[0] == begin:
                    scores[p, 0] = a
                if o is not None and o[1] == end:
                    scores[p, 1] = b
        outputs.append(scores)
    return outputs


def test_n_best_decoding_maps_back_to_characters_with_alternatives(tokenizer) -> None:
    context = "In 1996 the bank lost, and the stock market fell in the city."
    ex = {"_where": "mem", "id": "q1", "question": "who lost", "context": context}
    task = make_task(top_k=3)
    features = task.encode([ex], tokenizer, ModelConfig(max_length=64))
    outputs = fake_outputs(features, ex, [("the bank", 9.0, 8.0), ("the stock market", 5.0, 5.0)])
    (pred,) = task.decode(outputs, features, [ex])
    assert pred["answer"] == "the bank" and context[pred["start"] : pred["end"]] == "the bank"
    assert pred["start"] == 8 and pred["end"] == 16
    alternatives = pred["alternatives"]
    assert len(alternatives) == 2
    assert all(context[a["start"] : a["end"]] == a["answer"] for a in alternatives)
    assert pred["score"] >= alternatives[0]["score"] >= alternatives[1]["score"]


def test_max_answer_length_limits_spans(tokenizer) -> None:
    context = "the bank lost and the stock market fell and the team was happy"
    ex = {"_where": "mem", "id": "q1", "question": "what", "context": context}
    task = make_task(max_answer_length=3)
    features = task.encode([ex], tokenizer, ModelConfig(max_length=64))
    outputs = fake_outputs(features, ex, [("the bank lost and the stock market fell", 9.0, 9.0)])
    (pred,) = task.decode(outputs, features, [ex])
    assert len(tokenizer.tokenize(pred["answer"])) <= 3


def test_no_answer_threshold_and_its_tuning(tokenizer) -> None:
    context = "the bank lost and the team won"
    answerable = example(context, "the team", id="a")
    impossible = {**example(context, "the team", id="b"), "answers": [], "is_impossible": True}
    answerable["is_impossible"] = False
    task = make_task(no_answer=True)
    examples = [answerable, impossible]
    features = task.encode(examples, tokenizer, ModelConfig(max_length=64))
    outputs = fake_outputs(features, answerable, [("the team", 3.0, 3.0)])
    for j in range(len(features.inputs)):  # the null score: 2.0 + 2.0 at [CLS] for both
        outputs[j][features.meta[j][1]] = 2.0
    preds = task.decode(outputs, features, examples)
    assert [p["answer"] for p in preds] == ["the team", "the team"]  # 4 - 6 < 0: both answered
    tuned = task.fit_on_eval(outputs, features, examples)
    # both questions have the same margin (-2): answering gains 1 on 'a' and loses 1 on 'b'
    assert tuned == {"null_threshold": -2.0}
    metrics = task.score(task.decode(outputs, features, examples), examples)
    assert metrics["f1"] == pytest.approx(50.0)


def test_long_context_of_many_thousand_characters_predicts(tiny_backbone: Path, tmp_path: Path) -> None:
    data = {"train": write_jsonl(tmp_path / "train.jsonl", qa_records(8))}
    config = tiny_config(tiny_backbone, data, tmp_path / "run", task="question-answering")
    config["task"] = {"name": "question-answering", "doc_stride": 16, "max_question_length": 16}
    config["model"]["max_length"] = 64
    config["train"]["max_steps"] = 1
    run = taskhead.train(config, quiet=True)
    context = FILLER * 800 + "the bank won"  # ~34,000 characters, hundreds of windows
    (pred,) = taskhead.load(run.run_dir).predict([("who won", context)])
    assert context[pred["start"] : pred["end"]] == pred["answer"] and pred["answer"]


def test_reader_errors_reach_the_task(tmp_path: Path) -> None:
    from taskhead.errors import DataError

    bad = qa_records(2)
    bad[1]["answers"]["answer_start"] = [3]
    path = write_jsonl(tmp_path / "qa.jsonl", bad)
    with pytest.raises(DataError) as err:
        make_task().read(path, DataConfig())
    assert f"{path}:2" in str(err.value) and "answer_start" in str(err.value)


def test_cli_round_trip_and_plain_transformers_load(tiny_backbone: Path, tmp_path: Path) -> None:
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", qa_records(16)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", qa_records(4)),
    }
    cfg = tiny_config(tiny_backbone, data, tmp_path / "run", task="question-answering")
    cfg["model"]["max_length"] = 64
    cfg["task"] = {"name": "question-answering", "doc_stride": 8, "max_question_length": 16}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = run_cli("train", str(config), "--quiet")
    assert result.returncode == 0, result.stderr
    result = run_cli("evaluate", str(tmp_path / "run"), str(data["eval"]))
    assert result.returncode == 0, result.stderr
    assert "exact_match" in result.stdout
    stdin = json.dumps({"id": "z", "question": "who won", "context": "the team won the match"}) + "\n"
    result = run_cli("predict", str(tmp_path / "run"), "-", stdin=stdin)
    assert result.returncode == 0, result.stderr
    (pred,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert pred["id"] == "z" and "the team won the match"[pred["start"] : pred["end"]] == pred["answer"]
    from transformers import AutoModelForQuestionAnswering

    assert AutoModelForQuestionAnswering.from_pretrained(tmp_path / "run" / "model") is not None


def test_long_questions_are_cut_and_counted(tokenizer) -> None:
    long_question = {
        **example("the team won the match", "the team"),
        "question": "who " + "was very good " * 10,
    }
    task = make_task()  # max_question_length 8
    features = task.encode(
        [long_question, example("the team won", "the team")], tokenizer, ModelConfig(max_length=64)
    )
    assert features.truncated == 1
    first = features.inputs[0]["input_ids"]
    question_tokens = first[1 : first.index(tokenizer.sep_token_id)]
    assert len(question_tokens) == 8


def test_loss_does_not_depend_on_batch_padding(tiny_runs, tmp_path: Path) -> None:
    # the head scores padded positions too; they are masked, so an example's start/end loss is the same
    # alone and beside a longer context (dynamic padding), and evaluation agrees at any batch size
    records = qa_records(4)
    records[1] = {**records[1], "context": records[1]["context"] + " and more words" * 12}
    data = write_jsonl(tmp_path / "eval.jsonl", records)
    run = tiny_runs["question-answering"]
    losses = [taskhead.load(run, precision="fp32", batch_size=size).evaluate(data)["loss"] for size in (1, 4)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
