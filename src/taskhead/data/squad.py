"""Readers for extractive question-answering data: SQuAD JSON (v1.1 and v2.0) and QA tables.

Both return one ``QARecord`` per question, checked as it enters: a non-empty question and context, every
answer's ``answer_start`` pointing at its text in the context, no duplicated question ids. Every problem of a
file is collected (up to ``max_errors``) before one DataError is raised, each as one located line
``PATH (WHERE): field: problem, expected X, found Y``. Character offsets count Unicode code points, as
Python strings (and the SQuAD files, made with Python) do. Pure Python, no torch.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskhead.data.json_readers import TOO_DEEP
from taskhead.data.qa_fields import (
    ANSWER_OBJECT,
    AnswerFields,
    QARecord,
    answer_span,
    answer_spans,
    check_unique,
    kind_of,
    question_id,
    text_field,
)
from taskhead.data.readers import Row, Table, detect_format, read_table, read_text_source
from taskhead.data.validation import Problems, require_column
from taskhead.errors import ConfigError, DataError

DEFAULT_COLUMNS: dict[str, str] = {
    "id": "id",
    "question": "question",
    "context": "context",
    "answers": "answers",
    "answer_start": "answer_start",
}
SNIFF_BYTES = 1 << 20

_SQUAD_HEAD = re.compile(r'"data"\s*:\s*\[\s*[\{\]]')


# ---------------------------------------------------------------------------------------------- SQuAD JSON


def is_squad_json(path: str | Path, encoding: str = "utf-8") -> bool:
    """Whether the file looks like SQuAD JSON: an object with a ``"data"`` list of articles.

    Reads at most the first MiB; standard input (``-``), a missing file or a directory gives False.
    """
    p = Path(path)
    if str(path) == "-" or not p.is_file():
        return False
    with p.open("rb") as handle:
        raw = handle.read(SNIFF_BYTES)
    try:
        head = raw.decode(encoding, errors="ignore").lstrip("\ufeff \t\r\n")
    except LookupError:  # an unknown encoding: the reader reports it
        return False
    match = _SQUAD_HEAD.search(head)
    return (
        head.startswith("{")
        and match is not None
        and ('"paragraphs"' in head or head[match.end() - 1] == "]")
    )


def _load_squad(name: str, text: str) -> dict[str, Any]:
    """The parsed top-level object, or a DataError for malformed JSON or another layout."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise DataError([f"{name}: {TOO_DEEP}"]) from None
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg == "Extra data":
            hint = "; one JSON value per line is JSON Lines: read it with read_qa_table(path, 'jsonl')"
        raise DataError(
            [f"{name}:{exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno}){hint}"]
        ) from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        return value
    if isinstance(value, list):
        found = "a JSON array; for one question per record read it with read_qa_table(path, 'jsonl')"
    elif isinstance(value, dict) and "data" in value:
        found = f'"data" holding {type(value["data"]).__name__}'
    elif isinstance(value, dict):
        found = f"an object with keys {', '.join(map(repr, list(value)[:8])) or 'none'}"
    else:
        found = kind_of(value)
    raise DataError(
        [f'{name}: not SQuAD JSON, expected an object with a "data" list of articles, found {found}']
    )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_v2(squad: dict[str, Any]) -> bool:
    """SQuAD v2 layout: version 2.x, or any question with an ``is_impossible`` key."""
    if str(squad.get("version", "")).lstrip("vV").startswith("2"):
        return True
    return any(
        isinstance(qa, dict) and "is_impossible" in qa
        for article in _as_list(squad["data"])
        if isinstance(article, dict)
        for paragraph in _as_list(article.get("paragraphs"))
        if isinstance(paragraph, dict)
        for qa in _as_list(paragraph.get("qas"))
    )


@dataclass
class _SquadReader:
    """Walks articles, paragraphs and questions of one SQuAD file, collecting records and problems."""

    name: str
    labelled: bool
    v2: bool
    problems: Problems
    records: list[QARecord] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)

    def article(self, i: int, article: Any) -> None:
        if not isinstance(article, dict):
            self.problems.add(
                f'{self.name} (article {i}): expected an object with "title" and "paragraphs", '
                f"found {kind_of(article)}"
            )
            return
        title = None if article.get("title") is None else str(article["title"])
        prefix = f"{self.name} (article {i}" + (f" {title!r}" if title else "")
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            found = "missing" if paragraphs is None else f"found {kind_of(paragraphs)}"
            self.problems.add(
                f'{prefix}): paragraphs: expected a list of {{"context", "qas"}} objects, {found}'
            )
            return
        for j, paragraph in enumerate(paragraphs, 1):
            if not isinstance(paragraph, dict):
                found = kind_of(paragraph)
                self.problems.add(
                    f'{prefix}, paragraph {j}): expected an object with "context" and "qas", found {found}'
                )
                continue
            self.paragraph(prefix, (i, j), title, paragraph)

    def paragraph(self, prefix: str, at: tuple[int, int], title: str | None, paragraph: dict) -> None:
        where = f"{prefix}, paragraph {at[1]})"
        context = text_field(paragraph.get("context"), where, "context", self.problems)
        qas = paragraph.get("qas")
        if not isinstance(qas, list):
            found = "missing" if qas is None else f"found {kind_of(qas)}"
            self.problems.add(f"{where}: qas: expected a list of questions, {found}")
            return
        for k, qa in enumerate(qas, 1):
            place = f"{prefix}, paragraph {at[1]}, question {k})"
            if not isinstance(qa, dict):
                found = kind_of(qa)
                self.problems.add(
                    f'{place}: expected an object with "id", "question" and "answers", found {found}'
                )
                continue
            qid = question_id(qa.get("id"), f"{at[0]}.{at[1]}.{k}", place, self.problems)
            where = place if qa.get("id") in (None, "") else f"{prefix}, question {qid})"
            self.question(qid, where, title, context, qa)

    def question(self, qid: str, where: str, title: str | None, context: str | None, qa: dict) -> None:
        check_unique(qid, where, self.seen, self.problems)
        question = text_field(qa.get("question"), where, "question", self.problems)
        answers = self.answers(qa, where, context) if self.labelled else ([], False)
        if question is not None and context is not None and answers is not None:
            self.records.append(QARecord(qid, question, context, answers[0], answers[1], where, title))

    def answers(self, qa: dict[str, Any], where: str, context: str | None) -> tuple[list, bool] | None:
        impossible = qa.get("is_impossible", False)
        if not isinstance(impossible, bool):
            self.problems.add(f"{where}: is_impossible: expected true or false, found {kind_of(impossible)}")
            return None
        raw = qa.get("answers", [] if impossible else None)
        if not isinstance(raw, list):
            found = "missing" if raw is None else f"found {kind_of(raw)}"
            self.problems.add(f"{where}: answers: expected a list of {ANSWER_OBJECT} objects, {found}")
            return None
        if impossible and raw:
            self.problems.add(
                f'{where}: answers: expected none on a question marked "is_impossible": true (SQuAD v2 '
                f'keeps those in "plausible_answers"), found {len(raw)}'
            )
            return None
        if not raw and not impossible:
            unanswerable = (
                'or "is_impossible": true'
                if self.v2
                else '(SQuAD v1.1 has no unanswerable questions; SQuAD v2 marks them "is_impossible": true)'
            )
            self.problems.add(f"{where}: answers: no answers, expected at least one {unanswerable}, found []")
            return None
        spans = answer_spans(raw, "answers", context, where, self.problems)
        return None if spans is None else (spans, impossible)


def read_squad(
    path: str | Path, *, labelled: bool = True, encoding: str = "utf-8", max_errors: int = 20
) -> list[QARecord]:
    """Read a SQuAD JSON file (v1.1 or v2.0 layout), one record per question, in file order.

    ``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers":
    [{"text", "answer_start"}], "is_impossible"?}]}]}]}``. A file is read as v2.0 when its version starts
    with 2 or any question has ``is_impossible``: then (only) questions marked ``is_impossible: true``
    have no answers. ``plausible_answers`` are not read. With ``labelled=False`` answers are neither
    required nor read. A question without an id gets ``"I.J.K"`` (article, paragraph, question numbers).

    Raises:
        DataError: every located problem of the file (up to ``max_errors``), malformed JSON, another
            layout, or a missing/undecodable file.
    """
    name = "<stdin>" if str(path) == "-" else str(path)
    squad = _load_squad(name, read_text_source(path, encoding))
    problems = Problems(max_errors)
    reader = _SquadReader(name, labelled, _is_v2(squad), problems)
    for i, article in enumerate(squad["data"], 1):
        reader.article(i, article)
    if not problems.total and not reader.records:
        problems.add(f"{name}: no questions, expected at least one article with paragraphs and qas")
    problems.raise_if_any()
    return reader.records


# ---------------------------------------------------------------------------------------------- QA tables


def _column_names(columns: Mapping[str, str | int | None] | None) -> dict[str, str | None]:
    names: dict[str, str | None] = dict(DEFAULT_COLUMNS)
    for key, value in (columns or {}).items():
        if key not in DEFAULT_COLUMNS:
            close = difflib.get_close_matches(key, DEFAULT_COLUMNS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"columns: unknown key {key!r}, expected one of {', '.join(DEFAULT_COLUMNS)}{hint}"
            )
        if value is None and key != "id":
            raise ConfigError(f"columns.{key}: expected a column name, found None")
        names[key] = None if value is None else str(value)
    return names


@dataclass
class _TableReader:
    """Turns the rows of one QA table into records, collecting problems."""

    table: Table
    question: str
    context: str
    answers: str | None
    start: str | None
    id: str | None
    text_cells: bool
    problems: Problems
    seen: dict[str, str] = field(default_factory=dict)

    def record(self, row: Row) -> QARecord | None:
        base = self.table.loc(row)
        qid = question_id(row.values.get(self.id) if self.id else None, str(row.where), base, self.problems)
        where = base
        if qid != str(row.where):
            where = f"{base[:-1]}, question {qid})" if base.endswith(")") else f"{base} (question {qid})"
        check_unique(qid, where, self.seen, self.problems)
        question = text_field(row.values.get(self.question), where, self.question, self.problems)
        context = text_field(row.values.get(self.context), where, self.context, self.problems)
        answers = self.spans(row, where, context) if self.answers is not None else []
        if question is None or context is None or answers is None:
            return None
        return QARecord(qid, question, context, answers, self.answers is not None and not answers, where)

    def spans(self, row: Row, where: str, context: str | None) -> list[tuple[str, int]] | None:
        name = str(self.answers)
        value = row.values.get(name)
        if isinstance(value, str):  # one answer, its start in its own column; empty = unanswerable
            if not value.strip():
                return []
            start = row.values.get(self.start) if self.start else None
            names = AnswerFields(name, name, str(self.start))
            span = answer_span(value, start, context, where, names, self.problems, self.text_cells)
            return None if span is None else [span]
        if isinstance(value, list):
            return answer_spans(value, name, context, where, self.problems)
        if isinstance(value, dict) and isinstance(value.get("text"), list):
            return self.columnar(value, name, where, context)
        found = "missing" if value is None else f"found {kind_of(value)}"
        self.problems.add(
            f'{where}: {name}: expected the answers as {{"text": [...], "answer_start": [...]}}, a list of '
            f"{ANSWER_OBJECT} objects, or a text with its start in column {self.start!r}, {found}"
        )
        return None

    def columnar(
        self, value: dict[str, Any], name: str, where: str, context: str | None
    ) -> list[tuple[str, int]] | None:
        """The Hugging Face datasets layout ``{"text": [...], "answer_start": [...]}``."""
        texts, starts = value["text"], value.get("answer_start")
        if not isinstance(starts, list) or len(starts) != len(texts):
            found = f"{len(starts)}" if isinstance(starts, list) else kind_of(starts)
            self.problems.add(
                f"{where}: {name}.answer_start: expected a list of {len(texts)} offsets (one per text), "
                f"found {found}"
            )
            return None
        spans = []
        for n, (text, start) in enumerate(zip(texts, starts, strict=True)):
            names = AnswerFields(f"{name}[{n}]", f"{name}.text[{n}]", f"{name}.answer_start[{n}]")
            spans.append(answer_span(text, start, context, where, names, self.problems))
        return None if None in spans else [s for s in spans if s is not None]


def _nonblank(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _table_format(path: str | Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return "sniff" if str(path) == "-" else detect_format(path, fmt)


def read_qa_table(
    path: str | Path,
    fmt: str = "auto",
    *,
    columns: Mapping[str, str | int | None] | None = None,
    labelled: bool = True,
    header: bool = True,
    encoding: str = "utf-8",
    quoting: str = "minimal",
    max_errors: int = 20,
) -> list[QARecord]:
    """Read question-answering records from JSON Lines, CSV, TSV or Parquet, one record per row.

    Columns (rename with ``columns={"question": "query", ...}``): ``id`` (optional; a row without one gets
    its line number, or ``record N``, as id), ``question``, ``context``, ``answers`` and ``answer_start``.
    ``answers`` is ``{"text": [...], "answer_start": [...]}`` (Hugging Face datasets), a list of
    ``{"text", "answer_start"}`` objects, or one answer text with its start in ``answer_start`` (the CSV/TSV
    layout: one answer per row). No answers (an empty list, or an empty text) means unanswerable, and the
    record has ``is_impossible=True``. With ``labelled=False`` answers are neither required nor read.

    Raises:
        ConfigError: an unknown key in ``columns``.
        DataError: every located problem of the file (up to ``max_errors``), a SQuAD JSON file (read
            those with ``read_squad``), or a missing/undecodable file.
    """
    names = _column_names(columns)
    if _table_format(path, fmt) == "jsonl" and is_squad_json(path, encoding):
        raise DataError(
            [
                f'{path}: SQuAD JSON (an object with a "data" list of articles), expected one record per '
                f"line for JSON Lines; read it with read_squad(path)"
            ]
        )
    table = read_table(path, fmt, header=header, encoding=encoding, quoting=quoting, max_errors=max_errors)
    problems = Problems(max_errors)
    question = require_column(table, names["question"], "data.columns.question", problems)
    context = require_column(table, names["context"], "data.columns.context", problems)
    answers = require_column(table, names["answers"], "data.columns.answers", problems) if labelled else None
    start = None
    if answers is not None and any(_nonblank(r.values.get(answers)) for r in table.rows):
        start = require_column(table, names["answer_start"], "data.columns.answer_start", problems)
    problems.raise_if_any()
    if not table.rows:
        raise DataError([f"{table.path}: no records, expected at least one"])
    text_cells = _table_format(path, fmt) in ("csv", "tsv")
    id_column = names["id"] if names["id"] in table.columns else None
    reader = _TableReader(table, str(question), str(context), answers, start, id_column, text_cells, problems)
    records = [record for row in table.rows if (record := reader.record(row)) is not None]
    problems.raise_if_any()
    return records
