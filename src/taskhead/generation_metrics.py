"""Metrics of generated text against one or more references: ROUGE, BLEU, chrF and perplexity.

ROUGE comes from ``rouge-score`` (Google's reimplementation of ROUGE-1.5.5), BLEU and chrF from
``sacrebleu``; both are imported when first used, so importing this module stays cheap. Scores are 0-100.
"""

from __future__ import annotations

import math
import re

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _check(predictions: list[str], references: list[list[str]]) -> None:
    """Raise a ValueError unless there is one non-empty list of reference texts per prediction."""
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} predictions, "
            f"{len(references)} reference lists; expected one list of references per prediction"
        )
    if not predictions:
        raise ValueError("no predictions, expected at least one")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            found = repr(refs) if isinstance(refs, str) else "[]"
            raise ValueError(f"references[{i}]: expected a non-empty list of reference texts, found {found}")


def one_sentence_per_line(text: str) -> str:
    """``text`` with one sentence per line, as ROUGE-Lsum expects: a break after ``.``, ``!`` or ``?``
    followed by whitespace (a simple rule in place of nltk's punkt, whose model is not installed)."""
    return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


def rouge(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures (0-100), with the Porter stemmer.

    Each example scores against its best reference, per ROUGE type (``RougeScorer.score_multi``, as
    Hugging Face ``evaluate``'s rouge does given several references); the scores are then averaged over
    examples. ``evaluate`` reports the median of a random bootstrap of that average
    (``BootstrapAggregator``'s ``mid``) instead; the plain mean is the value it estimates, and is
    deterministic. Texts are put one sentence per line (``one_sentence_per_line``) first, which only
    ROUGE-Lsum sees: the other types tokenize newlines away.

    Raises:
        ValueError: lengths differ, no predictions, or an example without references.
    """
    from rouge_score import rouge_scorer

    _check(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references, strict=True):
        scores = scorer.score_multi(
            [one_sentence_per_line(r) for r in refs], one_sentence_per_line(prediction)
        )
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100 * total / len(predictions) for name, total in totals.items()}


def bleu(predictions: list[str], references: list[list[str]]) -> dict[str, float | str]:
    """Corpus BLEU and chrF (0-100) of detokenized text with sacrebleu's defaults, and the BLEU signature.

    sacrebleu takes the references as streams (one list per reference position); an example with fewer
    references than the most is padded with ``None``, which sacrebleu leaves out (an empty string would
    count as a reference). The signature then says ``nrefs:var``.

    Returns:
        ``{"bleu": float, "chrf": float, "bleu_signature": str}``.

    Raises:
        ValueError: lengths differ, no predictions, or an example without references.
    """
    from sacrebleu.metrics import BLEU, CHRF

    _check(predictions, references)
    width = max(len(refs) for refs in references)
    streams: list[list[str | None]] = [
        [refs[k] if k < len(refs) else None for refs in references] for k in range(width)
    ]
    metric = BLEU()
    score = metric.corpus_score(predictions, streams)  # type: ignore[arg-type]
    chrf = CHRF().corpus_score(predictions, streams)  # type: ignore[arg-type]
    return {"bleu": score.score, "chrf": chrf.score, "bleu_signature": str(metric.get_signature())}


def perplexity(mean_loss: float) -> float:
    """``exp(mean_loss)`` of a mean token cross-entropy in nats; ``inf`` where that overflows, NaN for NaN."""
    if math.isnan(mean_loss):
        return math.nan
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return math.inf
