"""Metrics for every language and every ranking: ROUGE/BLEU tokenization per script, orderings on
unrounded scores, the SQuAD v2 threshold search over tied differences, untyped chunk tags."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import generation_records, ner_records, run_cli, tiny_config, write_conll, write_jsonl
from pydantic import ValidationError

import taskhead
from taskhead.config import DataConfig
from taskhead.errors import DataError
from taskhead.tasks.base import Features
from taskhead.tasks.classification import ClassificationOptions, ClassificationTask
from taskhead.tasks.embedding import EmbeddingOptions, EmbeddingTask
from taskhead.tasks.generation import GenerationOptions, GenerationTask
from taskhead.tasks.generation_metrics import (
    ROUGE_TYPES,
    RougeTokenizer,
    bleu,
    choose_tokenize,
    rouge,
    text_metrics,
    tokenizer_problem,
)
from taskhead.tasks.question_answering import QuestionAnsweringOptions, QuestionAnsweringTask
from taskhead.tasks.squad_metrics import best_null_threshold
from taskhead.tasks.tagging import (
    UNTYPED,
    continuation,
    convert,
    detect_scheme,
    entities,
    invalid_positions,
    join_tag,
    repair,
    seqeval_tags,
    split_tag,
    tagging_metrics,
    type_name,
)
from taskhead.tasks.token_classification import TokenClassificationOptions, TokenClassificationTask

# Long enough for BLEU's 4-grams in every tokenization.
SAME = {
    "russian": "Кошка спокойно сидит на тёплом ковре у окна, а собака спит рядом.",
    "chinese": "我们今天在北京参观了故宫和天安门广场。",
    "hindi": "हिन्दी भारत की राजभाषा है और करोड़ों लोग इसे बोलते हैं।",  # virama, nukta, vowel signs
}


@pytest.mark.parametrize("language", sorted(SAME))
def test_identical_non_latin_texts_score_100(language: str) -> None:
    text = SAME[language]
    scores = text_metrics([text, text], [[text], [text]])
    assert {name: scores[name] for name in ROUGE_TYPES} == dict.fromkeys(ROUGE_TYPES, 100.0)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("prediction", "reference", "rouge1", "rouge2"),
    [
        # 3 of 4 words, 1 of 3 bigrams
        ("кошка сидит на ковре", "кошка лежит на ковре", 75.0, 100 / 3),
        # zh: one token per character; 2 of 4, 1 of 3
        ("我爱北京", "我爱上海", 50.0, 100 / 3),
        # words keep their combining marks (ढ़ = ड + nukta, ी a vowel sign); 2 of 4, 1 of 3
        ("राम ने किताब पढ़ी", "राम ने अख़बार पढ़ा", 50.0, 100 / 3),
    ],
    ids=["russian", "chinese", "hindi"],
)
def test_partial_overlap_scores_in_between(
    prediction: str, reference: str, rouge1: float, rouge2: float
) -> None:
    scores = rouge([prediction], [[reference]])
    assert scores["rouge1"] == pytest.approx(rouge1)
    assert scores["rouge2"] == pytest.approx(rouge2)
    assert 0 < bleu([prediction + " " + prediction], [[reference + " " + reference]])["bleu"] < 100


ENGLISH = [
    "The cats were sitting on the mat. They looked happy!",
    "A man rides a bicycle down the street, doesn't he?",
    "Stock prices fell sharply on Monday.",
]
ENGLISH_REFS = [
    ["A cat sat on the mat. It was happy."],
    ["A man is riding his bike along the road.", "Someone cycles down a street."],
    ["Shares dropped steeply on Monday after the report."],
]


def test_english_scores_are_unchanged() -> None:
    """Regression values of the implementation before tokenization followed the script (rouge-score's
    default tokenizer with the Porter stemmer, sacrebleu's 13a)."""
    scores = text_metrics(ENGLISH, ENGLISH_REFS)
    assert scores["rouge1"] == pytest.approx(40.40100250626566, abs=1e-12)
    assert scores["rouge2"] == pytest.approx(17.102396514161217, abs=1e-12)
    assert scores["rougeL"] == pytest.approx(40.40100250626566, abs=1e-12)
    assert scores["rougeLsum"] == pytest.approx(40.40100250626566, abs=1e-12)
    assert scores["bleu"] == pytest.approx(13.086135270303664, abs=1e-12)
    assert scores["chrf"] == pytest.approx(33.79730144022315, abs=1e-12)
    assert scores["bleu_tokenize"] == "13a" and scores["rouge_tokenizer"] == "words+porter"
    assert "|tok:13a|" in str(scores["bleu_signature"])


def test_rouge_tokenizer_equals_rouge_score_on_ascii_and_keeps_other_scripts() -> None:
    from rouge_score.tokenizers import DefaultTokenizer

    text = "Running quickly, the 3 runners didn't stop -- e-mail: x_y@z.org (2024)!"
    assert RougeTokenizer("13a").tokenize(text) == DefaultTokenizer(use_stemmer=True).tokenize(text)
    assert RougeTokenizer("13a").tokenize("हिन्दी, पढ़ी।") == ["हिन्दी", "पढ़ी"]
    assert RougeTokenizer("intl").tokenize("Бегущие КОШКИ running") == ["бегущие", "кошки", "run"]
    assert RougeTokenizer("zh").tokenize("我爱 Running!") == ["我", "爱", "run"]
    assert RougeTokenizer("zh").name == "zh+words+porter"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The cat sat.", "13a"),
        ("Ein Mann fährt Fahrrad auf der Straße.", "13a"),
        ("Кошка сидит на ковре.", "13a"),
        ("Η γάτα κάθεται.", "13a"),
        ("我们今天在北京。", "zh"),
        ("हिन्दी भारत की राजभाषा है।", "intl"),
        ("مرحبا بالعالم", "intl"),
        ("สวัสดีครับ", "char"),
        ("", "13a"),
    ],
)
def test_auto_chooses_the_tokenizer_from_the_script(text: str, expected: str) -> None:
    assert choose_tokenize([text]) == expected


def test_auto_follows_most_letters_and_japanese_kana() -> None:
    assert choose_tokenize(["A long English sentence about 北京.", "Another one."]) == "13a"
    japanese = "こんにちは、今日は良い天気ですね。"
    expected = "ja-mecab" if tokenizer_problem("ja-mecab") is None else "char"
    assert choose_tokenize([japanese]) == expected
    assert text_metrics([japanese], [[japanese]])["rouge1"] == 100.0


def test_explicit_tokenizer_is_used_and_recorded() -> None:
    text = "我爱北京天安门"
    scores = text_metrics([text], [[text]], tokenize="char")
    assert scores["bleu_tokenize"] == "char" and "|tok:char|" in str(scores["bleu_signature"])
    assert scores["rouge_tokenizer"] == "char+words+porter"
    # 13a does not segment Chinese: the sentence is one word, and a one-character change loses it all
    assert rouge(["我爱北京天安"], [[text]], tokenize="13a")["rouge1"] == 0.0
    assert 0 < rouge(["我爱北京天安"], [[text]], tokenize="zh")["rouge1"] < 100


def test_unknown_or_unavailable_tokenizer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"metrics tokenizer: expected one of auto, 13a, .* found 'klingon'"):
        rouge(["a"], [["a"]], tokenize="klingon")
    with pytest.raises(ValidationError, match=r"(?s)metrics_tokenize.*expected one of"):
        GenerationOptions(metrics_tokenize="klingon")
    if tokenizer_problem("ja-mecab") is not None:
        with pytest.raises(ValidationError, match=r"sacrebleu\[ja\]"):
            GenerationOptions(metrics_tokenize="ja-mecab")
    assert GenerationOptions(metrics_tokenize="zh").metrics_tokenize == "zh"


def test_generation_task_scores_with_its_option() -> None:
    examples = [{"source": "x", "targets": ["我爱北京天安门"]}]
    predictions = [{"generated": "我爱北京天安"}]
    auto = GenerationTask(GenerationOptions()).score(predictions, examples)
    assert auto["bleu_tokenize"] == "zh" and auto["rouge1"] == pytest.approx(100 * 12 / 13)
    char = GenerationTask(GenerationOptions(metrics_tokenize="char")).score(predictions, examples)
    assert char["bleu_tokenize"] == "char" and char["rouge_tokenizer"] == "char+words+porter"


def test_cli_records_the_tokenizer_in_metrics_json(tiny_generators: dict[str, Path], tmp_path: Path) -> None:
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", generation_records(4)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", generation_records(2)),
    }
    config = tiny_config(tiny_generators["gpt2"], data, tmp_path / "run", task={"name": "generation"})
    config["task"].update(max_new_tokens=2, metrics_tokenize="intl")
    config["train"]["max_steps"] = 1
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    result = run_cli("train", str(path), "--quiet", "task.metrics_tokenize=klingon")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "metrics_tokenize" in result.stderr and "klingon" in result.stderr

    result = run_cli("train", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    evaluated = metrics.get("eval", metrics)
    assert evaluated["bleu_tokenize"] == "intl" and evaluated["rouge_tokenizer"] == "words+porter"


# ---------------------------------------------------------------------- orderings on unrounded scores


def _logits(probability: float) -> list[float]:
    """Two-class logits whose softmax gives label "1" ``probability``."""
    return [0.0, math.log(probability / (1 - probability))]


class _StubPredictor:
    """Stands in for ``taskhead.load(run)``: a classification task decoding fixed logits per document."""

    def __init__(self, logits_by_text: dict[str, list[float]]) -> None:
        self.task = ClassificationTask(ClassificationOptions(), labels=["0", "1"])
        self.labels = self.task.labels
        self.logits_by_text = logits_by_text

    def predict(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        outputs = np.array([self.logits_by_text[text] for _, text in pairs], dtype=np.float32)
        features = Features(inputs=[], example_index=list(range(len(pairs))))
        return self.task.decode(outputs, features, [{} for _ in pairs])


def test_classification_scores_keep_confident_differences() -> None:
    predictions = _StubPredictor({"a": _logits(0.99999991), "b": _logits(0.99999993)}).predict(
        [("q", "a"), ("q", "b")]
    )
    a, b = (p["scores"]["1"] for p in predictions)
    assert a == pytest.approx(0.99999991, abs=2e-9) and b == pytest.approx(0.99999993, abs=2e-9)
    assert a < b


def test_rerank_orders_confident_scores_unrounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskhead.retrieval.rerank import Reranker

    stub = _StubPredictor({"a": _logits(0.99999991), "b": _logits(0.99999993), "c": _logits(0.5)})
    monkeypatch.setattr(taskhead, "load", lambda *args, **kwargs: stub)
    reranker = Reranker("stub-run")
    hits = [{"id": doc, "text": doc, "score": 1.0 - i / 10} for i, doc in enumerate("abc")]
    reranked = reranker.rerank(["q"], [hits], k=3)[0]
    assert [h["id"] for h in reranked] == ["b", "a", "c"]  # rounded to 6 places, a and b tied: a, b, c
    assert reranked[0]["score"] > reranked[1]["score"]
    assert [h["retrieval_score"] for h in reranked] == [0.9, 1.0, 0.8]


def _unit_at(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def test_embedding_metrics_rank_unrounded_cosines() -> None:
    """Cosines 1 - 1e-8 and 1 - 4e-8 (angles 1.41e-4 and 2.83e-4): equal when rounded to 6 places."""
    task = EmbeddingTask(EmbeddingOptions())
    anchor, near, far = _unit_at(0.0), _unit_at(math.sqrt(2e-8)), _unit_at(math.sqrt(8e-8))
    features = Features(inputs=[], example_index=[0, 1])
    triplets = task.decode([np.stack([anchor, near, far]), np.stack([anchor, far, near])], features, [{}, {}])
    assert triplets[0]["score"] > triplets[0]["negative_scores"][0]
    accuracy = task.score(triplets, [{"kind": "triplets"}, {"kind": "triplets"}])["triplet_accuracy"]
    assert accuracy == 0.5  # the first triplet wins, the second loses (rounded: both lose)

    pairs = task.decode([np.stack([anchor, near]), np.stack([anchor, far])], features, [{}, {}])
    labelled = [{"kind": "labelled", "label": 1}, {"kind": "labelled", "label": 0}]
    metrics = task.score(pairs, labelled)
    assert metrics["accuracy"] == 1.0 and metrics["f1"] == 1.0  # a threshold between the two cosines
    assert metrics["accuracy_threshold"] == pairs[0]["score"]


# ---------------------------------------------------------------------- SQuAD v2 no-answer threshold


def official_find_best_thresh(differences: list[float], gains: list[float]) -> float | None:
    """``evaluate-v2.0.py``'s ``find_best_thresh``, one question at a time in sorted order."""
    best_score = score = 0.0
    best = None
    for i in sorted(range(len(differences)), key=lambda i: differences[i]):
        score += gains[i]
        if score > best_score:
            best_score, best = score, differences[i]
    return best


def total_gain(differences: list[float], gains: list[float], threshold: float | None) -> float:
    """What a threshold really gains: every question with difference <= threshold answered."""
    return sum(g for d, g in zip(differences, gains, strict=True) if threshold is not None and d <= threshold)


TIED = [0.5, 0.5, 0.7]  # the first two tie
TIED_GAINS = [1.0, -1.0, 2 / 3]  # answering: right span, a span for an unanswerable question, a partial span


def test_threshold_search_takes_tied_differences_as_one_step() -> None:
    official = official_find_best_thresh(TIED, TIED_GAINS)
    assert official == 0.5 and total_gain(TIED, TIED_GAINS, official) == 0.0  # it claimed 1.0
    threshold, total = best_null_threshold(TIED, TIED_GAINS)
    assert threshold == 0.7 and total == pytest.approx(2 / 3)
    assert total_gain(TIED, TIED_GAINS, threshold) == pytest.approx(total)
    for candidate in [None, *TIED]:  # no threshold does better
        assert total_gain(TIED, TIED_GAINS, candidate) <= total + 1e-12


def test_threshold_search_edges() -> None:
    assert best_null_threshold([0.3, 0.1], [-1.0, -0.5]) == (None, 0.0)  # abstaining is best
    assert best_null_threshold([0.1, math.inf], [1.0, 0.0]) == (0.1, 1.0)
    assert best_null_threshold([math.inf], [0.0]) == (None, 0.0)
    assert best_null_threshold([], []) == (None, 0.0)
    assert best_null_threshold([0.2, 0.2, 0.2], [1.0, -1.0, 0.5]) == (0.2, 0.5)
    assert best_null_threshold([0.1, 0.2], [1.0, 0.0]) == (0.2, 1.0)  # equal totals: the larger threshold
    with pytest.raises(ValueError, match=r"differ in length: 1 differences, 2 gains"):
        best_null_threshold([0.1], [1.0, 2.0])


def test_question_answering_tunes_the_threshold_over_tied_differences(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = QuestionAnsweringTask(QuestionAnsweringOptions(), no_answer=True)
    examples = [
        {"context": "Paris is big", "answers": [("Paris", 0)]},  # span right: gain 1
        {"context": "Paris is big", "answers": [], "is_impossible": True},  # span given: gain -1
        {"context": "a big town", "answers": [("big city", 2)]},  # span "big": F1 2/3
    ]
    candidates = [([(2.0, 0, 5)], 2.5), ([(1.0, 0, 5)], 1.5), ([(3.0, 2, 5)], 3.75)]  # diffs 0.5, 0.5, 0.75
    monkeypatch.setattr(task, "_candidates", lambda *args: candidates)
    assert task.fit_on_eval([], Features(inputs=[], example_index=[]), examples) == {"null_threshold": 0.75}


# ---------------------------------------------------------------------- untyped chunk tags


@pytest.mark.parametrize(
    ("sequences", "scheme"),
    [
        ([["B", "I", "O", "B"], ["O", "O"]], "iob2"),
        ([["I", "I", "O", "I", "B"]], "iob1"),  # chunks start with I; B only between adjacent chunks
        ([["B", "I", "E", "O", "S"]], "bioes"),
        ([["B", "I", "O", "NN"]], "plain"),  # another unprefixed tag: POS-style tags
        ([["B-PER", "I-PER", "O", "B"]], "iob2"),
    ],
)
def test_untyped_chunk_tags_are_an_entity_scheme(sequences: list[list[str]], scheme: str) -> None:
    assert detect_scheme(sequences) == scheme


def test_untyped_bilou_is_refused_with_its_renaming() -> None:
    with pytest.raises(DataError, match=r"found 'U'; rename L to E and U to S \(BIOES\)"):
        detect_scheme([["U", "O", "B", "L"]])


def test_untyped_chunks_decode_and_reencode_untyped() -> None:
    assert split_tag("B") == ("B", "") and join_tag("B", "") == "B" and join_tag("B", "X") == "B-X"
    assert entities(["B", "I", "O", "I", "B", "I"], "iob2") == [("", 0, 2), ("", 3, 4), ("", 4, 6)]
    assert entities(["S", "B", "I", "E", "O"], "bioes") == [("", 0, 1), ("", 1, 4)]
    assert repair(["O", "I", "I", "O"], "iob2") == ["O", "B", "I", "O"]
    assert convert(["B", "I", "O", "B"], "iob2", "bioes") == ["B", "E", "O", "S"]
    assert convert(["I", "I", "B", "O"], "iob1", "iob2") == ["B", "I", "B", "O"]
    assert invalid_positions(["O", "I", "B", "O"], "bioes") == [1, 2]
    assert continuation("B", "iob2") == "I"
    assert seqeval_tags(["B", "I", "O", "B-PER"], "iob2") == ["B-CHUNK", "I-CHUNK", "O", "B-PER"]
    assert type_name("") == UNTYPED == "CHUNK" and type_name("PER") == "PER"


def test_untyped_chunk_metrics_by_hand() -> None:
    gold = [["B", "I", "O", "B", "O"], ["O", "B", "I", "I"]]  # chunks (0,2) (3,4); (1,4)
    pred = [["B", "I", "O", "O", "O"], ["O", "B", "I", "O"]]  # chunks (0,2) right; (1,3) wrong
    metrics = tagging_metrics(gold, pred, "iob2")
    assert metrics["precision"] == pytest.approx(1 / 2)  # 1 of 2 predicted chunks
    assert metrics["recall"] == pytest.approx(1 / 3)  # 1 of 3 gold chunks
    assert metrics["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))  # 0.4
    assert metrics["entities"] == 3 and metrics["accuracy"] == pytest.approx(7 / 9)
    assert set(metrics["per_type"]) == {"CHUNK"} and metrics["per_type"]["CHUNK"]["support"] == 3

    bioes = tagging_metrics(
        [["S", "O", "B", "E"]], [["S", "O", "B", "I"]], "bioes"
    )  # strict: B I is no chunk
    assert bioes["precision"] == 1.0 and bioes["recall"] == pytest.approx(1 / 2)


def test_untyped_chunks_are_predicted_as_entities_with_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    task = TokenClassificationTask(TokenClassificationOptions())
    examples = [{"tokens": ["deep", "learning", "for", "keyphrase", "extraction"], "tags": list("BIOBI")}]
    task.prepare({"train": examples}, DataConfig())
    assert (task.source_scheme, task.scheme, task.default_metric) == ("iob2", "iob2", "f1")
    index = {tag: i for i, tag in enumerate(task.labels)}
    probs = np.full((5, len(task.labels)), 0.1)
    for word, tag in enumerate("BIOBI"):
        probs[word, index[tag]] = 0.8
    monkeypatch.setattr(task, "word_probabilities", lambda *args: [probs])
    (pred,) = task.decode([], Features(inputs=[], example_index=[]), examples)
    assert pred["tags"] == list("BIOBI")
    assert pred["entities"] == [
        {"type": "CHUNK", "text": "deep learning", "start": 0, "end": 13, "words": [0, 2], "score": 0.8},
        {
            "type": "CHUNK",
            "text": "keyphrase extraction",
            "start": 18,
            "end": 38,
            "words": [3, 5],
            "score": 0.8,
        },
    ]
    assert task.score([pred], examples)["f1"] == 1.0
    summary = task.summarize("train", examples, None)
    assert summary.distribution == {"CHUNK": 2}


def test_keyphrase_data_trains_with_chunk_metrics(tiny_backbone: Path, tmp_path: Path) -> None:
    records = [
        {**r, "tags": [t if t == "O" else t[0] for t in r["tags"]]} for r in ner_records(12)
    ]  # B-PER/I-LOC... -> B/I: untyped keyphrase-style chunks
    data = {
        "train": write_conll(tmp_path / "train.conll", records),
        "eval": write_conll(tmp_path / "eval.conll", records[:4]),
    }
    config = tiny_config(tiny_backbone, data, tmp_path / "run", task="token-classification")
    config["train"]["max_steps"] = 2
    run = taskhead.train(config, quiet=True)
    metrics = run.metrics["eval"]
    assert set(metrics["per_type"]) == {"CHUNK"} and metrics["entities"] == 8
    assert {"precision", "recall", "f1"} <= set(metrics)
    (pred,) = taskhead.load(run.run_dir).predict([{"tokens": records[0]["tokens"]}])
    assert set(pred["tags"]) <= {"B", "I", "O"}
    assert all(e["type"] == "CHUNK" for e in pred["entities"])


def test_char_rouge_keeps_combining_marks_with_their_letter() -> None:
    assert RougeTokenizer("char").tokenize("สวัสดี hi") == ["ส", "วั", "ส", "ดี", "h", "i"]
    assert rouge(["สวัสดีครับ"], [["สวัสดีค่ะ"]])["rouge1"] == pytest.approx(
        100 * 8 / 13
    )  # 4 shared of 7 and 6 clusters


def test_decomposed_and_composed_letters_score_as_one_text() -> None:
    import unicodedata

    from taskhead.tasks.generation_metrics import text_metrics

    composed = "café résumé naïve déjà vu"
    decomposed = unicodedata.normalize("NFD", composed)
    scores = text_metrics([composed], [[decomposed]])
    assert scores["rouge1"] == pytest.approx(100.0)
    assert scores["bleu"] == pytest.approx(100.0)
