"""Metrics for every language and every ranking: ROUGE/BLEU tokenization per script, orderings on
unrounded scores, the SQuAD v2 threshold search over tied differences, untyped chunk tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import generation_records, run_cli, tiny_config, write_jsonl
from pydantic import ValidationError

from taskhead.generation_metrics import (
    ROUGE_TYPES,
    RougeTokenizer,
    bleu,
    choose_tokenize,
    rouge,
    text_metrics,
    tokenizer_problem,
)
from taskhead.tasks.generation import GenerationOptions, GenerationTask

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
