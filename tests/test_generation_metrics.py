"""Generation metrics agree exactly with rouge-score's and sacrebleu's own APIs on the same inputs."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from taskhead.evaluation import perplexity
from taskhead.tasks.generation_metrics import ROUGE_TYPES, bleu, one_sentence_per_line, rouge

PREDICTIONS = [
    "The cats were sitting on the mat. They looked happy!",
    "A man rides a bicycle down the street.",
    "Stock prices fell sharply on Monday.",
]
SINGLE = [
    ["A cat sat on the mat. It was happy."],
    ["A man is riding his bike along the road."],
    ["Shares dropped steeply on Monday after the report."],
]
SEVERAL = [
    ["A cat sat on the mat. It was happy.", "The cats sat on a mat and looked happy."],
    ["A man is riding his bike along the road.", "Someone cycles down a street.", "A man rides a bike."],
    ["Shares dropped steeply on Monday after the report."],
]


def reference_rouge(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """rouge-score's own multi-reference scoring, averaged; rougeLsum on newline-separated sentences."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references, strict=True):
        plain = scorer.score_multi(refs, prediction)
        lines = scorer.score_multi(
            [one_sentence_per_line(r) for r in refs], one_sentence_per_line(prediction)
        )
        for name in ("rouge1", "rouge2", "rougeL"):
            totals[name] += plain[name].fmeasure
        totals["rougeLsum"] += lines["rougeLsum"].fmeasure
    return {name: 100 * total / len(predictions) for name, total in totals.items()}


@pytest.mark.parametrize("references", [SINGLE, SEVERAL], ids=["one-reference", "several-references"])
def test_rouge_agrees_with_rouge_score(references: list[list[str]]) -> None:
    assert rouge(PREDICTIONS, references) == reference_rouge(PREDICTIONS, references)


def test_rouge_single_reference_equals_plain_score() -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    expected = [
        scorer.score(refs[0], p)["rouge1"].fmeasure for p, refs in zip(PREDICTIONS, SINGLE, strict=True)
    ]
    assert rouge(PREDICTIONS, SINGLE)["rouge1"] == 100 * sum(expected) / len(expected)


def test_rouge_takes_the_best_reference_per_example() -> None:
    assert rouge(["a red car"], [["a blue boat", "a red car"]]) == dict.fromkeys(ROUGE_TYPES, 100.0)
    assert rouge(["a red car"], [["a red car", "x"]]) == rouge(["a red car"], [["x", "a red car"]])


def test_rouge_lsum_sees_sentences() -> None:
    prediction = "police killed the gunman. the gunman was armed."
    reference = "the gunman was armed. police killed the gunman."
    scores = rouge([prediction], [[reference]])
    assert scores["rougeLsum"] == 100.0  # both sentences match, in any order
    assert scores["rougeL"] < 100.0  # one sequence: only one of the two sentences is in the LCS


def test_one_sentence_per_line() -> None:
    assert (
        one_sentence_per_line(" Hi there. How are you?  Fine!\nOk ") == "Hi there.\nHow are you?\nFine!\nOk"
    )
    assert one_sentence_per_line("Pi is 3.14 today") == "Pi is 3.14 today"
    assert one_sentence_per_line("") == ""


def transpose(references: list[list[str]]) -> list[list[str | None]]:
    width = max(map(len, references))
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def test_bleu_agrees_with_sacrebleu_single_reference() -> None:
    scores = bleu(PREDICTIONS, SINGLE)
    streams = [[refs[0] for refs in SINGLE]]
    assert scores["bleu"] == sacrebleu.corpus_bleu(PREDICTIONS, streams).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(PREDICTIONS, streams).score
    assert (
        scores["bleu_signature"]
        == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    )


def test_bleu_agrees_with_sacrebleu_ragged_references() -> None:
    scores = bleu(PREDICTIONS, SEVERAL)
    streams = transpose(SEVERAL)
    assert streams[2] == [None, "A man rides a bike.", None]
    assert scores["bleu"] == sacrebleu.corpus_bleu(PREDICTIONS, streams).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(PREDICTIONS, streams).score
    assert str(scores["bleu_signature"]).startswith("nrefs:var|")
    assert scores["bleu"] > bleu(PREDICTIONS, SINGLE)["bleu"]  # more references, more matches


def test_ragged_references_are_padded_with_none_not_empty_strings() -> None:
    """An empty reference would count: its length 0 can be the closest to a short hypothesis, which
    lowers the brevity penalty."""
    predictions = ["A man rides.", "Two dogs run in the park today."]
    references = [
        ["A man rides a red bike down the long street."],
        ["Two dogs run in the park today.", "Dogs run."],
    ]
    with_none = [[references[0][0], references[1][0]], [None, references[1][1]]]
    with_empty = [[references[0][0], references[1][0]], ["", references[1][1]]]
    assert bleu(predictions, references)["bleu"] == sacrebleu.corpus_bleu(predictions, with_none).score
    assert bleu(predictions, references)["bleu"] != sacrebleu.corpus_bleu(predictions, with_empty).score


def test_bleu_of_exact_copies() -> None:
    scores = bleu(["Ein Mann fährt Fahrrad auf der Straße."], [["Ein Mann fährt Fahrrad auf der Straße."]])
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)


@pytest.mark.parametrize("metric", [rouge, bleu])
def test_metrics_check_their_inputs(metric) -> None:
    with pytest.raises(ValueError, match=r"differ in length: 2 predictions, 1 reference lists"):
        metric(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match=r"no predictions, expected at least one"):
        metric([], [])
    with pytest.raises(
        ValueError, match=r"references\[1\]: expected a non-empty list of reference texts, found \[\]"
    ):
        metric(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match=r"references\[0\]: .* found 'a'"):
        metric(["a"], ["a"])


def test_perplexity() -> None:
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(20.0)) == pytest.approx(20.0)
    assert perplexity(1000.0) == math.inf
    assert perplexity(math.inf) == math.inf
    assert math.isnan(perplexity(math.nan))
