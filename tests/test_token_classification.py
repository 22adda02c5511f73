"""Token classification: sub-word alignment, windows over long sentences, decoding, metrics, errors."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ner_records, run_cli, tiny_config, write_conll, write_jsonl

import taskhead
from taskhead.config import DataConfig, ModelConfig
from taskhead.errors import DataError
from taskhead.tasks.tagging import tagging_metrics
from taskhead.tasks.token_classification import (
    TokenClassificationOptions,
    TokenClassificationTask,
    owned_ranges,
    pretokenize,
    word_windows,
)


def make_task(**options: object) -> TokenClassificationTask:
    return TokenClassificationTask(TokenClassificationOptions(**options))


def prepared(records: list[dict], **options: object) -> tuple[TokenClassificationTask, list[dict]]:
    task = make_task(**options)
    examples = [{"_where": f"mem:{i}", **r} for i, r in enumerate(records, 1)]
    task.prepare({"train": examples}, DataConfig())
    return task, examples


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_backbone)


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize("seed", range(20))
def test_windows_fit_the_budget_and_every_word_has_one_owner(seed: int) -> None:
    rng = random.Random(seed)
    counts = [rng.randint(1, 4) for _ in range(rng.randint(1, 80))]
    budget, stride = rng.randint(6, 20), rng.randint(0, 6)
    windows = word_windows(counts, budget, stride)
    assert windows[0][0] == 0 and windows[-1][1] == len(counts)
    for (s, e), (s2, _) in itertools.pairwise(windows):
        assert s < s2 <= e  # progress, and no gap between neighbours
    for s, e in windows:
        assert e - s == 1 or sum(counts[s:e]) <= budget
    owned = owned_ranges(windows)
    covered = [w for a, b in owned for w in range(a, b)]
    assert covered == list(range(len(counts)))  # each word exactly once, in order
    for (s, e), (a, b) in zip(windows, owned, strict=True):
        assert s <= a and b <= e


def test_word_gets_the_window_with_the_most_context() -> None:
    windows = word_windows([1] * 20, 10, 4)  # [0,10) [6,16) [12,20)
    assert windows == [(0, 10), (6, 16), (12, 20)]
    assert owned_ranges(windows) == [(0, 8), (8, 14), (14, 20)]


# ---------------------------------------------------------------- alignment


def test_first_subtoken_carries_the_label(tokenizer) -> None:
    task, examples = prepared([{"tokens": ["paris", "win"], "tags": ["B-LOC", "O"]}, *ner_records(4)])
    assert "I-LOC" not in task.labels  # ner_records(4) has one-word places only
    features = task.encode(examples[:1], tokenizer, ModelConfig(max_length=32))
    ids, labels = features.inputs[0]["input_ids"], features.inputs[0]["labels"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces == ["[CLS]", "p", "##a", "##r", "##i", "##s", "win", "[SEP]"]
    b_loc, o = task.labels.index("B-LOC"), task.labels.index("O")
    assert labels == [-100, b_loc, -100, -100, -100, -100, o, -100]

    task, examples = prepared(
        [{"tokens": ["paris", "win"], "tags": ["B-LOC", "O"]}, *ner_records(4)], label_all_subtokens=True
    )
    b_loc, o = task.labels.index("B-LOC"), task.labels.index("O")
    labels = task.encode(examples[:1], tokenizer, ModelConfig(max_length=32)).inputs[0]["labels"]
    i_loc = task.labels.index("I-LOC")
    assert labels == [-100, b_loc, i_loc, i_loc, i_loc, i_loc, o, -100]


def test_long_sentence_is_windowed_and_every_word_predicted_once(tokenizer) -> None:
    words = ["the", "market", "in", "paris", "was", "good"] * 12  # 72 words, 112 sub-tokens
    tags = ["O", "O", "O", "B-LOC", "O", "O"] * 12
    task, examples = prepared([{"tokens": words, "tags": tags}], stride=4)
    features = task.encode(examples, tokenizer, ModelConfig(max_length=16))
    assert len(features.inputs) > 7 and features.windowed == 1 and features.truncated == 0
    assert all(len(f["input_ids"]) <= 16 for f in features.inputs)
    # logits that say "B-LOC" only at first sub-tokens of the word 'paris' in the window that owns it
    outputs = []
    b_loc = task.labels.index("B-LOC")
    for f, (ids, (a, b)) in zip(features.inputs, features.meta, strict=True):
        logits = np.zeros((len(f["input_ids"]), len(task.labels)), dtype=np.float32)
        for p, w in enumerate(ids):
            if w is not None and a <= w < b and words[w] == "paris":
                logits[p, b_loc] = 5.0
            elif w is not None:
                logits[p, task.labels.index("O")] = 5.0 if a <= w < b else -5.0
        outputs.append(logits)
    (prediction,) = task.decode(outputs, features, examples)
    assert prediction["tags"] == tags
    assert len(prediction["entities"]) == 12
    assert task.score([prediction], examples)["f1"] == 1.0


def test_words_the_tokenizer_drops_still_get_a_prediction(tokenizer) -> None:
    task, examples = prepared([{"tokens": ["good", "\u200b", "film"], "tags": ["O", "O", "B-LOC"]}])
    features = task.encode(examples, tokenizer, ModelConfig(max_length=32))
    ids = features.meta[0][0]
    assert sorted({w for w in ids if w is not None}) == [0, 1, 2]


# ---------------------------------------------------------------- decoding


def test_entities_carry_character_offsets_of_the_raw_text() -> None:
    task, _ = prepared(ner_records(8))
    ex = task.to_example("Alice moved to New York, in 2021.", "input 1")
    assert ex["tokens"] == ["Alice", "moved", "to", "New", "York", ",", "in", "2021", "."]
    tags = ["B-PER", "O", "O", "B-LOC", "I-LOC", "O", "O", "O", "O"]
    probs = np.full((len(tags), len(task.labels)), 0.01, dtype=np.float32)
    for w, tag in enumerate(tags):
        probs[w, task.labels.index(tag)] = 0.9
    logits = [np.log(probs)]
    meta = [(list(range(len(tags))), (0, len(tags)))]
    from taskhead.tasks.base import Features

    (pred,) = task.decode(logits, Features([{"input_ids": list(range(len(tags)))}], [0], meta=meta), [ex])
    top = 0.9 / (0.9 + 0.01 * (len(task.labels) - 1))
    assert pred["entities"] == [
        {
            "type": "PER",
            "text": "Alice",
            "start": 0,
            "end": 5,
            "words": [0, 1],
            "score": pytest.approx(top, abs=1e-4),
        },
        {
            "type": "LOC",
            "text": "New York",
            "start": 15,
            "end": 23,
            "words": [3, 5],
            "score": pytest.approx(top, abs=1e-4),
        },
    ]


def test_viterbi_never_predicts_an_invalid_sequence() -> None:
    task, _ = prepared(ner_records(8))
    labels = task.labels
    probs = np.full((3, len(labels)), 0.05, dtype=np.float32)
    probs[0, labels.index("O")] = 0.6
    probs[1, labels.index("I-PER")] = 0.5  # argmax would give the invalid O I-PER
    probs[1, labels.index("B-PER")] = 0.4
    probs[2, labels.index("I-PER")] = 0.6
    best = [labels[j] for j in task._best_tags(probs / probs.sum(1, keepdims=True))]
    assert best == ["O", "B-PER", "I-PER"]
    task.options = TokenClassificationOptions(decoding="argmax")
    assert [labels[j] for j in task._best_tags(probs)] == ["O", "I-PER", "I-PER"]


def test_pretokenizers_keep_offsets() -> None:
    text = "U.N. talks in Geneva (1996-08-22) don't end"
    words, offsets = pretokenize(text, "punctuation")
    assert [text[s:e] for s, e in offsets] == words
    assert "1996-08-22" in words and "don't" in words and "(" in words
    words, _ = pretokenize(text, "whitespace")
    assert words == text.split()


# ---------------------------------------------------------------- metrics


def test_entity_metrics_match_seqeval() -> None:
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    rng = random.Random(3)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(60)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in g] for g in gold]
    ours = tagging_metrics(gold, pred, "iob2")
    kw = {"mode": "strict", "scheme": IOB2}
    assert ours["f1"] == pytest.approx(f1_score(gold, pred, **kw))
    assert ours["precision"] == pytest.approx(precision_score(gold, pred, **kw))
    assert ours["recall"] == pytest.approx(recall_score(gold, pred, **kw))
    assert ours["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", **kw))
    flat = [(a, b) for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True)]
    assert ours["accuracy"] == pytest.approx(sum(a == b for a, b in flat) / len(flat))
    assert set(ours["per_type"]) == {"PER", "LOC"}


def test_plain_tags_give_token_accuracy_only() -> None:
    metrics = tagging_metrics([["NOUN", "VERB"], ["DET"]], [["NOUN", "NOUN"], ["DET"]], "plain")
    assert metrics == {"accuracy": pytest.approx(2 / 3), "words": 3}


# ---------------------------------------------------------------- data problems


def test_scheme_detection_and_repair_are_reported() -> None:
    records = ner_records(6)
    records[0] = {"tokens": ["alice", "won"], "tags": ["I-PER", "O"]}  # invalid IOB2 start
    task, examples = prepared(records)
    assert task.scheme == "iob2"
    assert examples[0]["tags"] == ["B-PER", "O"]
    with pytest.raises(DataError) as err:
        prepared(records, invalid_tags="fail")
    assert (
        str(err.value) == "mem:1 (token 0): tag: 'I-PER' after 'the sentence start' is not valid IOB2; "
        "set task.invalid_tags=repair to fix such tags"
    )


def test_conversion_to_bioes() -> None:
    task, examples = prepared(ner_records(6), convert_to="bioes")
    assert task.scheme == "bioes" and task.source_scheme == "iob2"
    assert examples[2]["tags"][2:4] == ["B-PER", "E-PER"]  # carol smith
    assert "S-LOC" in task.labels


def test_unknown_tag_in_eval_is_located(tmp_path: Path) -> None:
    task = make_task()
    train = write_conll(tmp_path / "train.conll", ner_records(6))
    bad = ner_records(2)
    bad[1]["tags"][-1] = "B-LOCATION"
    evalf = write_conll(tmp_path / "eval.conll", bad, docstart=False)
    data = DataConfig()
    splits = {"train": task.read(train, data), "eval": task.read(evalf, data)}
    with pytest.raises(DataError) as err:
        task.prepare(splits, data)
    line = len(bad[0]["tokens"]) + 1 + len(bad[1]["tokens"])  # sentence 1, a blank line, sentence 2
    assert str(err.value) == (
        f"{evalf}:{line}: tag: 'B-LOCATION' is not a tag of the training data; did you mean 'B-LOC'?"
    )


def test_jsonl_token_and_tag_counts_must_agree(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"tokens": ["a", "b"], "tags": ["O"]},
            {"tokens": [], "tags": []},
            {"tokens": ["a", ""], "tags": ["O", "O"]},
        ],
    )
    with pytest.raises(DataError) as err:
        make_task().read(path, DataConfig())
    assert str(err.value).splitlines() == [
        f"{path}:1: tags: 1 tags for 2 tokens; expected one tag per token",
        f"{path}:2: tokens: expected a non-empty list of strings, found []",
        f"{path}:3: tokens[1]: expected a non-empty string, found ''",
    ]


def test_prediction_file_formats_are_sniffed(tmp_path: Path) -> None:
    task = make_task()
    text = tmp_path / "in.txt"
    text.write_text("Alice won in Paris.\nBob lost\n", encoding="utf-8")
    examples = task.read(text, DataConfig(), labelled=False)
    assert [ex["tokens"] for ex in examples] == [["Alice", "won", "in", "Paris", "."], ["Bob", "lost"]]
    conll = write_conll(tmp_path / "test.txt", ner_records(3))
    examples = task.read(conll, DataConfig(), labelled=False)
    assert [ex["tokens"] for ex in examples] == [r["tokens"] for r in ner_records(3)]


# ---------------------------------------------------------------- end to end


def test_train_predicts_per_word_and_plain_transformers_loads_it(tiny_backbone: Path, tmp_path: Path) -> None:
    data = {
        "train": write_conll(tmp_path / "train.conll", ner_records(48)),
        "eval": write_conll(tmp_path / "eval.conll", ner_records(12)),
    }
    config = tiny_config(
        tiny_backbone,
        data,
        tmp_path / "run",
        task="token-classification",
        train={"epochs": 8, "learning_rate": 5e-3},
    )
    run = taskhead.train(config, quiet=True)
    assert run.metrics["eval"]["f1"] > 0.5, run.metrics["eval"]
    predictor = taskhead.load(run.run_dir)
    (pred,) = predictor.predict(["bob was in rome with the team"])
    assert pred["tokens"] == ["bob", "was", "in", "rome", "with", "the", "team"]
    assert len(pred["tags"]) == len(pred["tokens"]) == len(pred["scores"])
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(run.run_dir / "model")
    assert model.config.id2label[0] == "O"
    assert predictor.evaluate(data["eval"])["f1"] == pytest.approx(run.metrics["eval"]["f1"])


def test_cli_round_trip(tiny_backbone: Path, tmp_path: Path) -> None:
    data = {
        "train": write_conll(tmp_path / "train.txt", ner_records(24)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", ner_records(6)),
    }
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(tiny_config(tiny_backbone, data, tmp_path / "run", task="token-classification"))
    )
    result = run_cli("validate", str(config))
    assert result.returncode == 0, result.stderr
    assert "OK (task token-classification, 30 records)" in result.stderr
    result = run_cli("train", str(config), "--quiet")
    assert result.returncode == 0, result.stderr
    result = run_cli("evaluate", str(tmp_path / "run"), str(data["eval"]))
    assert result.returncode == 0, result.stderr
    assert "f1" in result.stdout
    result = run_cli("predict", str(tmp_path / "run"), "-", stdin="Alice won in Paris\nBob lost\n")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["tokens"] for p in lines] == [["Alice", "won", "in", "Paris"], ["Bob", "lost"]]
    assert all("entities" in p for p in lines)

    bad = tmp_path / "bad.conll"
    bad.write_text("alice B-PER\nwon O extra\n\n", encoding="utf-8")
    config.write_text(
        yaml.safe_dump(
            tiny_config(tiny_backbone, {"train": bad}, tmp_path / "run2", task="token-classification")
        )
    )
    result = run_cli("validate", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {bad}:2: ")
    assert "Traceback" not in result.stderr


def _tiny_roberta(directory: Path) -> Path:
    """A tiny RoBERTa backbone with a byte-level BPE tokenizer trained on the NER words."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    directory.mkdir(parents=True)
    bpe = ByteLevelBPETokenizer()
    text = [" ".join(r["tokens"]) for r in ner_records(24)]
    bpe.train_from_iterator(text, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))
    vocab = json.loads((directory / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (directory / "merges.txt").read_text().splitlines()[1:] if line]
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=80,
        pad_token_id=tokenizer.pad_token_id,
    )
    RobertaModel(config).save_pretrained(directory)
    return directory


def test_byte_level_bpe_backbone_gets_prefix_spaces(tmp_path: Path) -> None:
    backbone = _tiny_roberta(tmp_path / "roberta")
    data = {"train": write_conll(tmp_path / "train.conll", ner_records(24))}
    config = tiny_config(
        backbone, data, tmp_path / "run", task="token-classification", train={"max_steps": 2}
    )
    run = taskhead.train(config, quiet=True)
    predictor = taskhead.load(run.run_dir)
    assert predictor.tokenizer.add_prefix_space is True  # saved with the run
    enc = predictor.tokenizer([["alice", "won"]], is_split_into_words=True)
    pieces = predictor.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    firsts = [
        pieces[p] for p, w in enumerate(enc.word_ids(0)) if w is not None and enc.word_ids(0)[p - 1] != w
    ]
    assert all(piece.startswith("\u0120") for piece in firsts), pieces  # each word starts with its space
    (pred,) = predictor.predict([["alice", "won", "in", "paris"]])
    assert len(pred["tags"]) == 4
