"""The official SQuAD metrics: exact match and token F1 after answer normalisation, best over the golds.

Figures equal those of the official SQuAD v1.1 script (``evaluate-v1.1.py``) to the last bit: the same
normalisation, the same arithmetic in the same order, the same averages on the 0-100 scale. The SQuAD
v2.0 additions (``evaluate-v2.0.py``) cover unanswerable questions, whose gold is ``[""]``: predicting an
answer that normalises to nothing scores 1 (exact match and F1), anything else 0; the scores are then also
reported separately for questions with and without an answer. ``best_null_threshold`` is v2.0's search for
the no-answer threshold, with tied score differences taken as one step. Pure Python, no torch.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskhead.data.squad import QARecord

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SENTENCE_END = re.compile(r"[.!?] ")


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation (``string.punctuation``), drop the articles a/an/the, collapse spaces."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when both normalise to the same string, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _token_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    num_same = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def f1(prediction: str, gold: str) -> float:
    """Token-level F1 of the normalised answers (bag of tokens; 0.0 when they share none, as in v1.1)."""
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def _is_unanswerable(golds: list[str]) -> bool:
    return all(gold == "" for gold in golds)


def question_scores(prediction: str | None, golds: list[str]) -> tuple[float, float]:
    """(exact match, F1) of one question on the 0-1 scale: the best over its golds.

    On an unanswerable question (golds ``[""]`` or ``[]``) both are 1.0 when the prediction normalises to
    nothing, else 0.0 (``evaluate-v2.0.py``); use this rather than ``f1(prediction, "")``, which follows
    v1.1 and is 0.0. A missing prediction (None) scores 0 on an answerable question, as in
    ``evaluate-v1.1.py``, and counts as the empty answer on an unanswerable one.
    """
    if _is_unanswerable(golds):
        score = float(normalize_answer(prediction or "") == "")
        return score, score
    if prediction is None:
        return 0.0, 0.0
    predicted = normalize_answer(prediction)
    normalized = [normalize_answer(g) for g in golds]
    tokens = predicted.split()
    return (
        max(float(predicted == g) for g in normalized),
        max(_token_f1(tokens, g.split()) for g in normalized),
    )


def _averages(scores: Iterable[tuple[float, float]], prefix: str = "") -> dict[str, float]:
    """Summed in order, then ``100.0 * sum / total``, like the official scripts."""
    em_sum = f1_sum = 0.0
    total = 0
    for em, f1_score in scores:
        em_sum += em
        f1_sum += f1_score
        total += 1
    return {
        f"{prefix}exact_match": 100.0 * em_sum / total if total else 0.0,
        f"{prefix}f1": 100.0 * f1_sum / total if total else 0.0,
        f"{prefix}total": total,
    }


def squad_scores(predictions: Mapping[str, str], gold: Mapping[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 (0-100) over the questions of ``gold`` (question id -> gold answer texts).

    Returns ``exact_match``, ``f1``, ``total`` (questions) and ``missing`` (questions without a
    prediction; predictions for ids outside ``gold`` are ignored, as the official script does). When some
    questions are unanswerable (gold ``[""]`` or ``[]``), also ``has_answer_*`` and ``no_answer_*``
    (``exact_match``, ``f1``, ``total``) over each group.

    Raises:
        ValueError: ``gold`` is empty.
    """
    if not gold:
        raise ValueError("gold: no questions, expected at least one question id with its gold answers")
    scores = {qid: question_scores(predictions.get(qid), list(golds)) for qid, golds in gold.items()}
    result = _averages(scores.values())
    result["missing"] = sum(qid not in predictions for qid in gold)
    no_answer = {qid for qid, golds in gold.items() if _is_unanswerable(list(golds))}
    if no_answer:
        result.update(_averages((s for q, s in scores.items() if q not in no_answer), "has_answer_"))
        result.update(_averages((s for q, s in scores.items() if q in no_answer), "no_answer_"))
    return result


def best_null_threshold(differences: Sequence[float], gains: Sequence[float]) -> tuple[float | None, float]:
    """The no-answer threshold that maximises the summed gain over the questions it lets answer.

    A question is answered when its ``difference`` (null score minus best span score, in logits) is at
    most the threshold, else "no answer" is predicted; its ``gain`` is what answering instead of abstaining
    adds to its score (e.g. F1 of the span minus F1 of the empty answer). Questions are taken in order of
    difference, and tied differences as one step: a threshold answers all of them or none.
    ``evaluate-v2.0.py``'s ``find_best_thresh`` adds them one at a time, so a tie group whose first
    question gains and the next loses yields a threshold whose claimed total no threshold achieves, and it
    can miss the best one. A difference of ``inf`` (a question without any span) is never answered.

    Returns:
        ``(threshold, total gain)``: the best threshold, one of the ``differences`` (the largest of equally
        good ones), or ``None`` with total 0.0 when answering nothing is better than any threshold (or
        no difference is finite).

    Raises:
        ValueError: ``differences`` and ``gains`` differ in length, or a difference is NaN.
    """
    if len(differences) != len(gains):
        raise ValueError(
            f"differences and gains differ in length: {len(differences)} differences, {len(gains)} gains"
        )
    if any(math.isnan(d) for d in differences):
        raise ValueError("differences: expected numbers (null score - best span score), found NaN")
    best: tuple[float | None, float] = (None, 0.0)
    total = 0.0
    ordered = sorted(zip(differences, gains, strict=True), key=lambda pair: pair[0])
    for difference, group in itertools.groupby(ordered, key=lambda pair: pair[0]):
        if math.isinf(difference) and difference > 0:
            break
        total += sum(gain for _, gain in group)
        if total >= best[1]:  # equal totals: the larger threshold, not withholding answers that cost nothing
            best = (float(difference), total)
    return best


def squad_gold(records: Iterable[QARecord]) -> dict[str, list[str]]:
    """Gold answer texts by question id, ``[""]`` for an unanswerable question (records read labelled)."""
    return {r.id: [text for text, _ in r.answers] or [""] for r in records}


def first_sentence(context: str) -> str:
    """The context up to the end of its first sentence (split on ". ", "! ", "? "), or all of it."""
    match = _SENTENCE_END.search(context)
    return context[: match.start() + 1] if match else context


def first_sentence_baseline(records: Iterable[QARecord]) -> dict[str, str]:
    """Predicts each question's answer as the first sentence of its context: a floor to compare with."""
    return {r.id: first_sentence(r.context) for r in records}
