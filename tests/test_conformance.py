"""One check over every registered task: build a tiny model, train two steps, save, reload, predict.

Predictions must be identical before and after reload. A new task adds a case to CASES.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    NEGATIVE,
    POSITIVE,
    generation_records,
    ner_records,
    qa_records,
    sentiment_records,
    tiny_config,
    write_conll,
    write_jsonl,
)

import taskhead
from taskhead.tasks import registered


def classification_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    data = {
        "train": write_jsonl(tmp / "train.jsonl", sentiment_records(2)),
        "eval": write_jsonl(tmp / "eval.jsonl", sentiment_records(1)),
    }
    return tiny_config(backbone, data, tmp / "run"), ["good movie", {"id": "x", "text": "awful plot"}]


def token_classification_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    data = {
        "train": write_conll(tmp / "train.conll", ner_records(24)),
        "eval": write_jsonl(tmp / "eval.jsonl", ner_records(6)),
    }
    config = tiny_config(backbone, data, tmp / "run", task="token-classification")
    inputs = [
        "Alice won the match in New York.",
        ["bob", "was", "in", "rome"],
        {"id": "x", "tokens": ["carol"]},
    ]
    return config, inputs


def question_answering_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    data = {
        "train": write_jsonl(tmp / "train.jsonl", qa_records(16)),
        "eval": write_jsonl(tmp / "eval.jsonl", qa_records(4)),
    }
    config = tiny_config(backbone, data, tmp / "run", task="question-answering")
    config["model"]["max_length"] = 64
    config["task"] = {"name": "question-answering", "doc_stride": 8, "max_question_length": 16}
    inputs = [
        ("who won", "the team won the match"),
        {"id": "x", "question": "what fell", "context": "the market fell"},
    ]
    return config, inputs


def generation_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    data = {
        "train": write_jsonl(tmp / "train.jsonl", generation_records(12)),
        "eval": write_jsonl(tmp / "eval.jsonl", generation_records(6)),
    }
    config = tiny_config(backbone, data, tmp / "run", task={"name": "generation", "max_new_tokens": 5})
    return config, ["good movie", {"id": "x", "source": "awful plot"}]  # warm start from the tiny encoder


def language_modeling_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    text = tmp / "train.txt"
    text.write_text("\n".join(r["text"] for r in sentiment_records(2)) + "\n", encoding="utf-8")
    config = tiny_config(backbone, {"train": text, "eval": text}, tmp / "run", task="language-modeling")
    return config, ["good [MASK]", {"id": "x", "text": "a [MASK] plot"}]  # masked LM: fill the masks


def embedding_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    pairs = [(a, b, 4.0) for a, b in zip(POSITIVE[::2], POSITIVE[1::2], strict=True)]
    pairs += [(a, b, 0.5) for a, b in zip(POSITIVE, NEGATIVE, strict=True)]
    rows = [{"text": a, "text_pair": b, "score": score} for a, b, score in pairs]
    data = {"train": write_jsonl(tmp / "train.jsonl", rows)}  # scored pairs (0-5): CoSENT
    data["eval"] = data["train"]
    config = tiny_config(backbone, data, tmp / "run", task="embedding")
    return config, ["good movie", ("good movie", "bad film"), {"id": "x", "text": "awful plot"}]


CASES: dict[str, Callable[[Path, Path], tuple[dict, list[Any]]]] = {
    "classification": classification_case,
    "token-classification": token_classification_case,
    "question-answering": question_answering_case,
    "generation": generation_case,
    "embedding": embedding_case,
    "language-modeling": language_modeling_case,
}


def test_every_registered_task_has_a_case() -> None:
    assert sorted(CASES) == registered()


@pytest.mark.parametrize("name", registered())
def test_train_save_reload_predict(name: str, tiny_backbone: Path, tmp_path: Path) -> None:
    config, inputs = CASES[name](tiny_backbone, tmp_path)
    config["train"]["max_steps"] = 2
    run = taskhead.train(config, quiet=True)
    assert (run.run_dir / "taskhead.json").is_file()
    for part in ("model", "config.yaml", "metrics.json", "README.md"):
        assert (run.run_dir / part).exists(), part
    first = run.load().predict(inputs)
    second = taskhead.load(run.run_dir).predict(inputs)
    assert len(first) == len(inputs)
    assert first == second
