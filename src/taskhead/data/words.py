"""Splitting raw text into words, with character offsets into the original string.

Python's ``re`` does not fit here: its ``\\w`` does not match combining marks (Unicode categories Mn, Mc,
Me), so ``\\w+`` splits Devanagari (``हिन्दी``), Thai and decomposed Latin (NFD ``José``) words at every
vowel sign or accent, and zero-width format characters (category Cf: U+200B, U+FEFF, ...) are not
whitespace, so ``\\S+`` turns them into words. The ``regex`` package (already a dependency of transformers)
has Unicode property classes, which these patterns use:

- a word character is a letter, digit or connector (``\\p{L}``, ``\\p{N}``, ``\\p{Pc}``); the combining marks
  after it belong to it, so a word never starts or ends at a mark;
- U+00AD soft hyphen, U+200C/U+200D zero-width (non-)joiner and U+2060 word joiner stay *inside* a word
  (Persian and Indic spelling, emoji sequences) but never start or end one;
- every other format character (Cf) separates words like a space and is never part of one.

The text is never normalised: offsets index the string as given.
"""

from __future__ import annotations

import regex

_JOINER = "\u00ad\u200c\u200d\u2060"
_SEPARATOR = r"\s\p{Cf}"  # whitespace and format characters (joiners are handled separately)
_LETTER = r"[\p{L}\p{N}\p{Pc}]\p{M}*"
_WORD = rf"{_LETTER}(?:[{_JOINER}]*{_LETTER})*"

WORD_PATTERNS = {
    # runs of anything but whitespace and format characters (joiners only between two such characters)
    "whitespace": rf"[^{_SEPARATOR}]+(?:[{_JOINER}]+[^{_SEPARATOR}]+)*",
    # words (with inner hyphens, apostrophes, periods: "1996-08-22", "don't", "3.5") and single symbols,
    # each a whole grapheme cluster (an emoji with its skin tone or ZWJ sequence; a mark after a space)
    "punctuation": rf"{_WORD}(?:[-'\u2019.]{_WORD})*|(?=[^{_SEPARATOR}\p{{L}}\p{{N}}\p{{Pc}}])\X",
}
_COMPILED = {name: regex.compile(pattern) for name, pattern in WORD_PATTERNS.items()}


def pretokenize(text: str, pretokenizer: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of a raw text and their character offsets.

    Args:
        text: the raw text, not normalised.
        pretokenizer: ``punctuation`` (words and single symbols) or ``whitespace`` (runs of non-space).

    Returns:
        ``(words, offsets)``: ``offsets[i] = (start, end)`` with ``text[start:end] == words[i]``, in order,
        non-overlapping. A word never begins or ends between a character and its combining mark, and
        holds no format character other than the in-word joiners.

    Raises:
        KeyError: an unknown ``pretokenizer`` (the config only allows the two names).
    """
    matches = list(_COMPILED[pretokenizer].finditer(text))
    return [m.group() for m in matches], [(m.start(), m.end()) for m in matches]
