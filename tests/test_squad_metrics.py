"""SQuAD metrics: hand-computed cases, and equality with the official evaluate-v1.1.py on random data."""

from __future__ import annotations

import random
import re
import string
import sys
from collections import Counter

import pytest

from taskhead.data.squad import QARecord
from taskhead.tasks.squad_metrics import (
    exact_match,
    f1,
    first_sentence,
    first_sentence_baseline,
    normalize_answer,
    question_scores,
    squad_gold,
    squad_scores,
)

# ---------------------------------------------------------------- reference
# The functions of the official SQuAD v1.1 evaluation script, evaluate-v1.1.py (Rajpurkar et al., 2016;
# https://rajpurkar.github.io/SQuAD-explorer/), copied verbatim apart from formatting and the names
# `official_*`; `official_evaluate` takes the SQuAD `data` list of articles like the script's `evaluate`.


def official_normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def official_exact_match_score(prediction, ground_truth):
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


def official_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def official_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    message = "Unanswered question " + qa["id"] + " will receive score 0."
                    print(message, file=sys.stderr)
                    continue
                ground_truths = list(map(lambda x: x["text"], qa["answers"]))
                prediction = predictions[qa["id"]]
                exact_match += official_metric_max_over_ground_truths(
                    official_exact_match_score, prediction, ground_truths
                )
                f1 += official_metric_max_over_ground_truths(official_f1_score, prediction, ground_truths)

    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total

    return {"exact_match": exact_match, "f1": f1}


# ---------------------------------------------------------------- random data against the reference

WORDS = ["Denver", "Broncos", "the", "The", "a", "A", "an", "AN", "Super", "Bowl", "50", "1,000", "café",
         "Ünïcode", "theatre", "another", "don't", "U.S.", "co-op", "—", "Naïve", "x", "Y"]  # fmt: skip
PUNCTUATION = [".", ",", "!", "?", "'", '"', "(", ")", "-", ":", ";", "$", "%", "–", "«"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\u00a0"]


def random_answer(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(0, 6)):
        word = rng.choice(WORDS)
        word = rng.choice([word, word.lower(), word.upper(), word.title()])
        if rng.random() < 0.3:
            word = rng.choice([rng.choice(PUNCTUATION) + word, word + rng.choice(PUNCTUATION)])
        out.append(word + rng.choice(SPACES))
    return "".join(out).strip() if rng.random() < 0.8 else "".join(out)


def variant(text: str, rng: random.Random) -> str:
    """A variant that normalises the same, or nearly: case, punctuation, articles, spacing, a word less."""
    words = text.split()
    if words and rng.random() < 0.3:
        words.pop(rng.randrange(len(words)))
    words = [w.upper() if rng.random() < 0.3 else w for w in words]
    if rng.random() < 0.5:
        words.insert(0, rng.choice(["the", "A", "an"]))
    return rng.choice([" ", "  ", " , "]).join(words) + rng.choice(["", ".", "!", " "])


def random_dataset(seed: int, n: int) -> tuple[list[dict], dict[str, str], dict[str, list[str]]]:
    """SQuAD `data` for the reference, predictions (some missing), and gold by id for squad_scores."""
    rng = random.Random(seed)
    articles, predictions, gold = [], {}, {}
    for a in range(3):
        qas = []
        for q in range(n // 3):
            qid = f"{seed}-{a}-{q}"
            golds = [random_answer(rng) or "Denver" for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.1:
                golds[0] = rng.choice(["The", "a.", "An!", "the a"])  # normalises to ""
            qas.append(
                {"id": qid, "question": "?", "answers": [{"text": g, "answer_start": 0} for g in golds]}
            )
            gold[qid] = golds
            roll = rng.random()
            if roll < 0.45:
                predictions[qid] = variant(rng.choice(golds), rng)
            elif roll < 0.85:
                predictions[qid] = random_answer(rng)
            elif roll < 0.93:
                predictions[qid] = ""
        articles.append({"title": f"t{a}", "paragraphs": [{"context": "c", "qas": qas}]})
    return articles, predictions, gold


@pytest.mark.parametrize("seed", range(6))
def test_squad_scores_equal_the_official_evaluate_exactly(seed: int, capsys: pytest.CaptureFixture) -> None:
    articles, predictions, gold = random_dataset(seed, 90)
    ours = squad_scores(predictions, gold)
    reference = official_evaluate(articles, predictions)
    capsys.readouterr()  # the reference prints the unanswered questions
    assert ours["exact_match"] == reference["exact_match"]
    assert ours["f1"] == reference["f1"]
    assert ours["total"] == len(gold)
    assert ours["missing"] == len(gold) - len(predictions)
    assert 0 < ours["exact_match"] < 100 and ours["exact_match"] < ours["f1"] < 100


def test_pairwise_functions_equal_the_official_ones() -> None:
    rng = random.Random(7)
    pairs = [(random_answer(rng), random_answer(rng)) for _ in range(400)]
    pairs += [(variant(g, rng), g) for _, g in pairs[:200]]
    for prediction, gold in pairs:
        assert normalize_answer(prediction) == official_normalize_answer(prediction)
        assert exact_match(prediction, gold) == float(official_exact_match_score(prediction, gold))
        assert f1(prediction, gold) == official_f1_score(prediction, gold)
    assert sum(exact_match(p, g) for p, g in pairs) > 20  # the variants do match


# ---------------------------------------------------------------- hand-computed cases


def test_normalize_answer() -> None:
    assert normalize_answer("The Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("Theatre anthem") == "theatre anthem"  # only whole words are articles
    assert normalize_answer("  U.S.   don't\tco-op ") == "us dont coop"
    assert normalize_answer("1,000 – 2") == "1000 – 2"  # the en dash is not in string.punctuation
    assert normalize_answer("The") == ""


def test_exact_match_and_f1() -> None:
    assert exact_match("the Denver Broncos.", "Denver broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    assert f1("the cat sat", "cat sat down") == pytest.approx(0.8)  # precision 1, recall 2/3
    assert f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)  # counts, not sets
    assert f1("Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    assert f1("Carolina", "Denver Broncos") == 0.0
    assert f1("the", "a") == 0.0 and exact_match("the", "a") == 1.0  # v1.1: no tokens, F1 0


def test_scores_take_the_best_gold_and_average_on_0_100() -> None:
    gold = {"q1": ["Denver Broncos", "Broncos", "Denver"], "q2": ["Denver Broncos"], "q3": ["Carolina"]}
    predictions = {"q1": "denver", "q2": "Denver Broncos team", "q3": "Panthers"}
    scores = squad_scores(predictions, gold)
    assert scores == {
        "exact_match": pytest.approx(100 / 3),
        "f1": pytest.approx((1.0 + 0.8 + 0.0) * 100 / 3),
        "total": 3,
        "missing": 0,
    }


def test_missing_predictions_score_zero_and_are_counted() -> None:
    gold = {"q1": ["Denver"], "q2": ["The"], "q3": ["x"]}
    scores = squad_scores({"q1": "Denver", "other": "ignored"}, gold)
    assert scores == {
        "exact_match": pytest.approx(100 / 3),
        "f1": pytest.approx(100 / 3),
        "total": 3,
        "missing": 2,
    }
    assert squad_scores({"q2": ""}, {"q2": ["The"]})["exact_match"] == 100.0  # as the official script


def test_v2_unanswerable_questions_and_the_split_scores() -> None:
    gold = {"has": ["Denver Broncos"], "none1": [""], "none2": [""], "none3": []}
    predictions = {"has": "Denver", "none1": "", "none2": "the Broncos"}  # none3 missing: counts as ""
    scores = squad_scores(predictions, gold)
    assert scores == {
        "exact_match": pytest.approx(50.0),
        "f1": pytest.approx((2 / 3 + 1 + 0 + 1) * 25),
        "total": 4,
        "missing": 1,
        "has_answer_exact_match": 0.0,
        "has_answer_f1": pytest.approx(200 / 3),
        "has_answer_total": 1,
        "no_answer_exact_match": pytest.approx(200 / 3),
        "no_answer_f1": pytest.approx(200 / 3),
        "no_answer_total": 3,
    }
    assert squad_scores({"n": "The."}, {"n": [""]})["no_answer_f1"] == 100.0  # normalises to nothing
    assert question_scores("", [""]) == (1.0, 1.0) and f1("", "") == 0.0  # v2 rule vs v1.1 function
    assert question_scores("Broncos", [""]) == (0.0, 0.0)
    assert question_scores(None, ["Denver"]) == (0.0, 0.0)
    assert question_scores("Denver", ["Denver Broncos", "denver"]) == (1.0, 1.0)


def test_empty_gold_is_an_error() -> None:
    with pytest.raises(ValueError, match="gold: no questions, expected at least one question id"):
        squad_scores({"q": "x"}, {})


def record(qid: str, context: str, answers: list[tuple[str, int]]) -> QARecord:
    return QARecord(qid, "?", context, answers, not answers, f"t.jsonl ({qid})")


def test_first_sentence_baseline_and_gold() -> None:
    assert first_sentence("Paris is big. It has a river.") == "Paris is big."
    assert first_sentence("What? No! Yes.") == "What?"
    assert first_sentence("Dr.Who is 3.5 hours! Long.") == "Dr.Who is 3.5 hours!"
    assert first_sentence("No end") == "No end"
    records = [record("a", "Paris is big. It has a river.", [("Paris", 0)]), record("b", "x y", [])]
    assert first_sentence_baseline(records) == {"a": "Paris is big.", "b": "x y"}
    assert squad_gold(records) == {"a": ["Paris"], "b": [""]}
    scores = squad_scores(first_sentence_baseline(records), squad_gold(records))
    assert scores["f1"] == pytest.approx((2 * (1 / 3) * 1 / (1 / 3 + 1)) * 50)  # "paris is big" vs "paris"
