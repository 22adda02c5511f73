"""The checked fields of a question-answering record, shared by the SQuAD JSON and QA table readers
(``data/squad.py``): ``QARecord``, non-empty texts, character offsets, answer spans that must point at
their text in the context, question ids (unique per file). Each check reports a located problem
(``PATH (WHERE): field: problem, expected X, found Y``) into a ``Problems`` collector and returns None."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from taskhead.data.validation import Problems

SHOWN_CHARS = 60  # texts quoted in messages are shortened to this many characters
ANSWER_OBJECT = '{"text", "answer_start"}'
_INTEGER = re.compile(r"\s*-?\d+\s*")


@dataclass
class QARecord:
    """One question with its context and gold answers (text, character start in the context)."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # [] when unanswerable or read unlabelled
    is_impossible: bool  # SQuAD v2 `is_impossible`; False for v1.1 and when unlabelled
    where: str  # "dev.json (article 3 'Normans', question 56dd...)" or "qa.jsonl:12 (question q7)"
    title: str | None = None  # the article's title (SQuAD JSON), for splitting by article


class AnswerFields(NamedTuple):
    """How one answer's parts are named in messages."""

    answer: str  # e.g. answers[0]
    text: str  # e.g. answers[0].text
    start: str  # e.g. answers[0].answer_start


def shorten(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def kind_of(value: Any) -> str:
    """``type value`` for messages, the value shortened."""
    return f"{type(value).__name__} {shorten(repr(value))}"


def text_field(value: Any, where: str, name: str, problems: Problems) -> str | None:
    """A non-empty string, or a located problem."""
    if value is None:
        problems.add(f"{where}: {name}: missing, expected a non-empty text")
    elif not isinstance(value, str):
        problems.add(f"{where}: {name}: expected a text (string), found {kind_of(value)}")
    elif not value.strip():
        problems.add(f"{where}: {name}: empty, expected a non-empty text, found {value!r}")
    else:
        return value
    return None


def _offset(value: Any, where: str, name: str, problems: Problems, text_cells: bool) -> int | None:
    """An integer character offset; from CSV/TSV (``text_cells``) also a string of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if text_cells and isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    if value is None or value == "":
        problems.add(f"{where}: {name}: missing, expected an integer character offset into the context")
    else:
        problems.add(f"{where}: {name}: expected an integer character offset, found {kind_of(value)}")
    return None


def _elsewhere(text: str, start: int, context: str) -> str:
    """Where the answer text does occur (the occurrence nearest to ``start``), as a hint."""
    positions = [m.start() for m in re.finditer(re.escape(text), context)]
    if not positions:
        return "; the text does not occur in the context"
    nearest = min(positions, key=lambda p: abs(p - start))
    return f"; the text occurs at offset {nearest}"


def answer_span(
    text_value: Any,
    start_value: Any,
    context: str | None,
    where: str,
    names: AnswerFields,
    problems: Problems,
    text_cells: bool = False,
) -> tuple[str, int] | None:
    """One checked answer ``(text, start)``, or None after reporting its problems.

    An answer text with surrounding whitespace is accepted, stripped and with its start moved, when the
    stripped text is at the offset (a few SQuAD answers have such whitespace).
    """
    text = None
    if isinstance(text_value, str) and not text_value.strip():
        problems.add(f"{where}: {names.text}: empty answer text, expected the answer, found {text_value!r}")
    else:
        text = text_field(text_value, where, names.text, problems)
    start = _offset(start_value, where, names.start, problems, text_cells)
    if text is None or start is None or context is None:
        return None
    if not 0 <= start < len(context):
        problems.add(
            f"{where}: {names.start}: out of range, expected an offset from 0 to {len(context) - 1} "
            f"(the context has {len(context)} characters), found {start}"
        )
        return None
    stripped = text.strip()
    for moved in (start + len(text) - len(text.lstrip()), start):  # past leading whitespace, or at start
        if context.startswith(stripped, moved):
            return stripped, moved
    found = context[start : start + len(text)]
    problems.add(
        f"{where}: {names.answer}: answer_start {start} points at {shorten(found)!r} in the context, "
        f"expected {shorten(text)!r}{_elsewhere(stripped, start, context)}"
    )
    return None


def answer_spans(
    items: list[Any], name: str, context: str | None, where: str, problems: Problems
) -> list[tuple[str, int]] | None:
    """A list of ``{"text", "answer_start"}`` objects, checked; None when any is wrong."""
    spans: list[tuple[str, int]] = []
    ok = True
    for n, item in enumerate(items):
        names = AnswerFields(f"{name}[{n}]", f"{name}[{n}].text", f"{name}[{n}].answer_start")
        if not isinstance(item, dict):
            problems.add(
                f"{where}: {names.answer}: expected an object {ANSWER_OBJECT}, found {kind_of(item)}"
            )
            ok = False
            continue
        span = answer_span(item.get("text"), item.get("answer_start"), context, where, names, problems)
        if span is None:
            ok = False
        else:
            spans.append(span)
    return spans if ok else None


def question_id(value: Any, default: str, where: str, problems: Problems) -> str:
    """The question id as a string (integers allowed); ``default`` when there is none."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.add(f"{where}: id: expected a string or an integer, found {kind_of(value)}")
        return default
    return str(value)


def check_unique(qid: str, where: str, seen: dict[str, str], problems: Problems) -> None:
    if qid in seen:
        problems.add(
            f"{where}: id: duplicated question id {qid!r}, expected unique ids, first seen at {seen[qid]}"
        )
    else:
        seen[qid] = where
