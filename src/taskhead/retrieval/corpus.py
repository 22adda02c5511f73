"""Documents for an index: from Python values or from corpus files (CSV/TSV, JSON Lines, text).

A document has a string ``id``, a non-empty ``text`` and a ``metadata`` dict. Ids are kept as strings
(``7`` and ``"7"`` are the same document). Where no id is given, a document gets one:

- a plain text file: its 1-based line number;
- CSV/TSV/JSON Lines without an id column: the line number of its record;
- Python strings: their position in the index, counted from 0.

Every other column of a file row (or key of a dict) goes into ``metadata``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from taskhead.errors import DataError, RetrievalError

MAX_ERRORS = 20


@dataclass
class Doc:
    """One document of an index."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def to_docs(items: Iterable[str | dict[str, Any] | Doc], *, start: int = 0) -> list[Doc]:
    """Documents from strings, dicts (``id``, ``text``, optional ``metadata`` or other keys) or Docs.

    Args:
        items: the documents.
        start: the id of the first string without an id (its position in the index).

    Raises:
        DataError: an item that is not a string, dict or Doc; a missing or empty text.
    """
    if isinstance(items, (str, dict)):
        raise RetrievalError(
            f"docs: expected an iterable of documents, found one {type(items).__name__}; wrap it in a list"
        )
    docs: list[Doc] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        where = f"document {i}"
        if isinstance(item, Doc):
            doc = item
        elif isinstance(item, str):
            doc = Doc(str(start + i), item)
        elif isinstance(item, dict):
            doc = _doc_from_dict(item, start + i, where, problems)
        else:
            problems.append(
                f"{where}: expected a string or a dict with id and text, found {type(item).__name__}"
            )
            continue
        if not isinstance(doc.text, str) or not doc.text.strip():
            problems.append(f"{where} (id {doc.id}): text: expected a non-empty string, found {doc.text!r}")
            continue
        docs.append(doc)
    if problems:
        raise DataError(problems[:MAX_ERRORS], total=len(problems))
    check_unique(docs)
    return docs


def _doc_from_dict(item: dict[str, Any], position: int, where: str, problems: list[str]) -> Doc:
    if "text" not in item:
        problems.append(f"{where}: text: missing (keys: {', '.join(map(str, item)) or 'none'})")
    metadata = dict(item.get("metadata") or {})
    metadata.update({k: v for k, v in item.items() if k not in ("id", "text", "metadata")})
    ident = item.get("id")
    return Doc(str(position) if ident is None else str(ident), item.get("text", ""), metadata)


def check_unique(docs: list[Doc], existing: dict[str, int] | None = None) -> None:
    """Raise a RetrievalError naming the first id that occurs twice (or is already in ``existing``)."""
    seen: dict[str, int] = {}
    for i, doc in enumerate(docs):
        if existing is not None and doc.id in existing:
            raise RetrievalError(
                f"duplicate document id {doc.id!r}: already in the index (row {existing[doc.id]}); "
                f"ids must be unique (files without an id column number their lines from 1)"
            )
        if doc.id in seen:
            raise RetrievalError(
                f"duplicate document id {doc.id!r}: documents {seen[doc.id]} and {i} of the input; "
                f"ids must be unique"
            )
        seen[doc.id] = i


def read_corpus(
    path: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    id_column: str | None = None,
    text_column: str = "text",
    title_column: str | None = None,
    encoding: str = "utf-8",
) -> list[Doc]:
    """Documents of a corpus file: CSV/TSV with a header, JSON Lines, or text (one document per line).

    Args:
        path: the file (``-`` for standard input).
        fmt: ``auto`` (from the extension), ``csv``, ``tsv``, ``jsonl`` or ``text``.
        id_column: the column holding document ids; default ``id`` (or BEIR's ``_id``) where the file has
            one, else line numbers.
        text_column: the column holding the text.
        title_column: a column whose value is put before the text (``title`` for BEIR corpora).
        encoding: the file's text encoding.

    Raises:
        DataError: located problems (file:line: column: problem), a missing column, an empty file,
            a duplicate id.
    """
    from taskhead.data.readers import detect_format, read_table

    source = os.fspath(path)
    if detect_format(source, fmt) == "text":
        return _read_text_corpus(source, encoding)
    table = read_table(source, fmt, encoding=encoding, max_errors=MAX_ERRORS, text_column=text_column)
    if not table.rows:
        raise DataError([f"{table.path}: no documents; expected at least one"])
    columns = (("text column", text_column), ("id column", id_column), ("title column", title_column))
    for setting, column in columns:
        if column is not None and column not in table.columns:
            raise DataError(
                [
                    f"{table.path}: {setting} {column!r} not found (columns: {', '.join(table.columns)}); "
                    f"choose it with --{setting.replace(' ', '-')}"
                ]
            )
    if id_column is None:
        id_column = next((c for c in ("id", "_id") if c in table.columns), None)
    docs, problems = _table_docs(table, text_column, id_column, title_column)
    if problems:
        raise DataError(problems[:MAX_ERRORS], total=len(problems))
    _check_unique_located(docs, table.path, [r.where for r in table.rows])
    return docs


def _table_docs(
    table: Any, text_column: str, id_column: str | None, title_column: str | None
) -> tuple[list[Doc], list[str]]:
    """The documents of a table's rows (title before text; the other columns as metadata) and the located
    problems of the rows that hold none (no text, no id)."""
    docs: list[Doc] = []
    problems: list[str] = []
    for row in table.rows:
        text = row.values.get(text_column)
        title = row.values.get(title_column) if title_column else None
        if isinstance(title, str) and title.strip() and isinstance(text, str):
            text = f"{title.strip()} {text.strip()}"
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{table.loc(row)}: {text_column}: expected a non-empty string, found {text!r}")
            continue
        ident = row.values.get(id_column) if id_column else None
        if id_column and (ident is None or str(ident).strip() == ""):
            problems.append(f"{table.loc(row)}: {id_column}: missing document id")
            continue
        metadata = {k: v for k, v in row.values.items() if k not in (text_column, id_column)}
        if isinstance(metadata.get("metadata"), dict):  # a nested metadata object, as docs.jsonl has it
            metadata.update(metadata.pop("metadata"))
        docs.append(Doc(str(ident) if id_column else str(row.where), text, metadata))
    return docs, problems


def _read_text_corpus(path: str, encoding: str) -> list[Doc]:
    from taskhead.data.readers import numbered_lines, read_text_source

    text = read_text_source(path, encoding)
    docs = [Doc(str(i), line) for i, line in numbered_lines(text) if line.strip()]
    if not docs:
        raise DataError([f"{path}: no documents; expected one non-empty line per document"])
    return docs


def _check_unique_located(docs: list[Doc], path: str, wheres: list[int | str]) -> None:
    seen: dict[str, int | str] = {}
    for doc, where in zip(docs, wheres, strict=False):
        if doc.id in seen:
            raise DataError(
                [
                    f"{path}:{where}: id: duplicate document id {doc.id!r} (first at {seen[doc.id]}); "
                    f"ids must be unique"
                ]
            )
        seen[doc.id] = where
