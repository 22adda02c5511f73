"""One check over every registered task (scikit-learn's ``test_common`` idea): train a tiny model a few
steps, predict with the model still in memory, save, reload, predict again.

- predictions of the reloaded run equal those of the in-memory model (a save/load bug shows here: the
  old form compared two reloads of the same directory, which agree even when saving lost something);
- ``Predictor.evaluate`` on the reloaded run equals the eval metrics recorded at training time
  (``metrics.json`` "eval"), loss included.

Variants cover options that change the loss or the decoding (class weights, multi-label, beam search). A
new task adds a case to CASES.

Every trait a task declares (``TaskTraits``) is exercised: without training, each task's declaration is
checked for consistency (a task that fits on eval has the method, messages format, the default collator
pads labels as declared, byte-level BPE tokenizers get prefix spaces only for pretokenized input); the
training run shows the rest (packed or length-grouped batches, perplexity, tuning on eval, the model's own
loss, the card's example input).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
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
from taskhead.config import RunConfig
from taskhead.evaluation import scalar_metrics
from taskhead.tasks import registered, task_class
from taskhead.tasks.base import TaskBase, TaskTraits

TOLERANCE = 1e-5

Case = Callable[[Path, Path], tuple[dict, list[Any]]]


def classification_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    data = {
        "train": write_jsonl(tmp / "train.jsonl", sentiment_records(2)),
        "eval": write_jsonl(tmp / "eval.jsonl", sentiment_records(1)),
    }
    return tiny_config(backbone, data, tmp / "run"), ["good movie", {"id": "x", "text": "awful plot"}]


def balanced_classification_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    """Class weights change the loss: the reloaded run must weigh the loss as training did."""
    rows = sentiment_records(2)
    rows = [r for r in rows if r["label"] == "pos"] + [r for r in rows if r["label"] == "neg"][:6]
    data = {
        "train": write_jsonl(tmp / "train.jsonl", rows),
        "eval": write_jsonl(tmp / "eval.jsonl", rows[:4] + rows[-4:]),
    }
    config = tiny_config(
        backbone, data, tmp / "run", task={"name": "classification", "class_weights": "balanced"}
    )
    return config, ["good movie", {"id": "x", "text": "awful plot"}]


def multi_label_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    rows = [
        {"id": f"m{i}", "text": t, "labels": [label, *(["film"] if "film" in t else [])]}
        for i, (t, label) in enumerate([(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE])
    ]
    data = {"train": write_jsonl(tmp / "train.jsonl", rows), "eval": write_jsonl(tmp / "eval.jsonl", rows)}
    task = {"name": "classification", "multi_label": True, "tune_thresholds": True}
    return tiny_config(backbone, data, tmp / "run", task=task), ["good film", {"id": "x", "text": "sad"}]


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


def beam_generation_case(backbone: Path, tmp: Path) -> tuple[dict, list[Any]]:
    """Decoding settings of the run (beam search, a minimum length) must survive the round trip."""
    config, inputs = generation_case(backbone, tmp)
    config["task"].update(num_beams=3, min_new_tokens=3, no_repeat_ngram_size=2)
    return config, inputs


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


CASES: dict[str, Case] = {
    "classification": classification_case,
    "token-classification": token_classification_case,
    "question-answering": question_answering_case,
    "generation": generation_case,
    "embedding": embedding_case,
    "language-modeling": language_modeling_case,
}
# options that change the loss or the decoding: case name -> (task, case)
VARIANTS: dict[str, tuple[str, Case]] = {
    "classification-balanced": ("classification", balanced_classification_case),
    "classification-multi-label": ("classification", multi_label_case),
    "generation-beam-search": ("generation", beam_generation_case),
}
# every task predicts from the generic names (with ids, so that file and Python inputs compare equal)
GENERIC_INPUTS: dict[str, list[dict[str, Any]]] = {
    "classification": [{"id": "a", "text": "good movie"}, {"id": "b", "text": "awful plot"}],
    "token-classification": [
        {"id": "a", "text": "Alice won the match in New York."},
        {"id": "b", "tokens": ["bob", "was", "in", "rome"]},
    ],
    "question-answering": [{"id": "a", "question": "what fell", "context": "the market fell"}],
    "generation": [{"id": "a", "source": "good movie"}, {"id": "b", "text": "awful plot"}],
    "embedding": [{"id": "a", "text": "good movie"}, {"id": "b", "text": "good movie", "text_pair": "bad"}],
    "language-modeling": [{"id": "a", "text": "good [MASK]"}],
}
ALL_CASES = {**{name: (name, case) for name, case in CASES.items()}, **VARIANTS}


def test_every_registered_task_has_a_case() -> None:
    assert sorted(CASES) == registered()


@pytest.mark.parametrize("name", registered())
def test_traits_are_declared_consistently(name: str) -> None:
    """Each task subclasses TaskBase and declares its own traits, and nothing of them elsewhere."""
    cls = task_class(name)
    assert issubclass(cls, TaskBase)
    assert isinstance(vars(cls).get("traits"), TaskTraits), f"{name} declares no traits of its own"
    traits = cls.traits
    # a task that tunes on eval defines fit_on_eval; one that does not, has no stub of it
    assert ("fit_on_eval" in vars(cls)) == traits.fits_on_eval
    # no trait is declared a second time as a class attribute (the old probed form) ...
    for trait in dataclasses.fields(TaskTraits):
        declared = vars(cls).get(trait.name)
        # ... except example_input, which a task whose example depends on the run computes
        assert declared is None or (trait.name == "example_input" and isinstance(declared, property)), trait
    for message in (traits.truncated_message, traits.lost_message):
        text = message.format(n=3, total=7, max_length=16)
        assert "3" in text and "7" in text, text
    task = cls(cls.Options())
    if "make_collator" not in vars(cls):  # the default collator pads labels as the trait says
        collate = task.make_collator(SimpleNamespace(pad_token_id=0))
        assert collate.sequence_labels is traits.sequence_labels
        rows = [{"input_ids": [5, 6, 7], "labels": [1]}, {"input_ids": [5], "labels": [1, 2]}]
        if traits.sequence_labels:  # targets of their own lengths, padded with -100
            assert collate(rows)["labels"].tolist() == [[1, -100], [1, 2]]


@pytest.fixture(scope="module")
def byte_level_bpe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer directory with a byte-level BPE tokenizer (RoBERTa's kind, add_prefix_space False)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    directory = tmp_path_factory.mktemp("bpe")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(POSITIVE + NEGATIVE, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>"])
    bpe.save_model(str(directory))
    vocab = json.loads((directory / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (directory / "merges.txt").read_text().splitlines()[1:] if line]
    RobertaTokenizer(vocab=vocab, merges=merges).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("name", registered())
def test_pretokenized_input_gets_prefix_spaces(name: str, byte_level_bpe: Path, tmp_path: Path) -> None:
    """Only tasks whose input is words load a byte-level BPE tokenizer with ``add_prefix_space``."""
    from taskhead.workflows.train_setup import _load_tokenizer

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_records(1))
    config = RunConfig.model_validate(
        tiny_config(byte_level_bpe, {"train": train}, tmp_path / "run", task=name)
    )
    task = task_class(name)(config.task)
    tokenizer = _load_tokenizer(str(byte_level_bpe), config, task)
    assert tokenizer.add_prefix_space is task.traits.pretokenized


def _check_traits_in_training(run: Any, name: str) -> None:
    """What the run shows of the traits its task declares."""
    from taskhead.engine.packing import unsupported_reason

    task, traits = run.task, run.task.traits
    metrics = json.loads((run.run_dir / "metrics.json").read_text(encoding="utf-8"))
    if traits.packing and unsupported_reason(run.model) is None:
        expected = "packed"  # packing tasks train on packed rows by default, in memory
    else:
        expected = "length-grouped" if traits.group_by_length else "random"
    assert metrics["train"]["batching"] == expected
    assert ("perplexity" in metrics["eval"]) is traits.reports_perplexity
    if not traits.fits_on_eval:
        assert "tuned_on_eval" not in metrics
    if name == "classification-multi-label":  # tune_thresholds: tuned on the eval split
        assert set(metrics["tuned_on_eval"]["thresholds"]) == set(task.labels)
    if traits.model_computes_loss:  # the Trainer takes the model's own loss: its forward returns one
        import torch

        examples = task.read(run.config.data.train, run.config.data)[:2]
        features = task.encode(examples, run.tokenizer, run.config.model)
        batch = task.make_collator(run.tokenizer)(features.inputs)
        with torch.no_grad():
            loss = run.model(**batch)["loss"]
        assert torch.isfinite(loss)
    card = (run.run_dir / "README.md").read_text(encoding="utf-8")
    if task.example_input is not None:
        assert task.example_input in card


def _train(name: str, backbone: Path, tmp: Path) -> tuple[Any, list[Any]]:
    _, case = ALL_CASES[name]
    config, inputs = case(backbone, tmp)
    config["train"]["max_steps"] = 3
    return taskhead.train(config, quiet=True), inputs


@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_train_save_reload_predict(name: str, tiny_backbone: Path, tmp_path: Path) -> None:
    run, inputs = _train(name, tiny_backbone, tmp_path)
    assert (run.run_dir / "taskhead.json").is_file()
    _check_traits_in_training(run, name)
    for part in ("model", "config.yaml", "metrics.json", "README.md"):
        assert (run.run_dir / part).exists(), part
    meta = json.loads((run.run_dir / "taskhead.json").read_text(encoding="utf-8"))
    precision = meta.get("precision", "fp32")  # predict as training evaluated
    in_memory = run.in_memory(precision=precision).predict(inputs)
    reloaded = taskhead.load(run.run_dir, precision=precision).predict(inputs)
    assert len(in_memory) == len(inputs)
    assert reloaded == in_memory  # same weights, same inputs, same precision: identical

    task = ALL_CASES[name][0]
    generic = write_jsonl(tmp_path / "generic.jsonl", GENERIC_INPUTS[task])
    predictor = taskhead.load(run.run_dir, precision=precision)
    from_file = predictor.predict_examples(predictor.read_inputs(generic))
    assert from_file == predictor.predict(GENERIC_INPUTS[task])

    recorded = json.loads((run.run_dir / "metrics.json").read_text(encoding="utf-8"))["eval"]
    again = taskhead.load(run.run_dir, precision=precision).evaluate(run.config.data.eval)
    assert "loss" in recorded
    assert scalar_metrics(again) == pytest.approx(scalar_metrics(recorded), abs=TOLERANCE)
