"""Shared helpers for validating records as they enter: collect every located problem, up to a cap."""

from __future__ import annotations

import difflib
from typing import Any

from taskhead.data.readers import Row, Table, TableStream
from taskhead.errors import DataError

Source = Table | TableStream  # a file read whole, or being read


class Problems:
    """Collects located problem lines of one file; ``raise_if_any`` raises a DataError with all of them."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.lines: list[str] = []
        self.total = 0

    def add(self, line: str) -> None:
        self.total += 1
        if len(self.lines) < self.cap:
            self.lines.append(line)

    def raise_if_any(self) -> None:
        if self.total:
            raise DataError(self.lines, total=self.total)


def require_column(table: Source, column: str | int | None, setting: str, problems: Problems) -> str | None:
    """The column's name in the table, or a problem naming the existing columns and the setting to change.

    A file with no rows has every column (its emptiness is reported as such). For a ``TableStream``, call
    this after reading it: a JSON Lines file's columns are those of all its records.
    """
    if column is None:
        return None
    name = str(column)
    if name in table.columns or table.empty:
        return name
    close = difflib.get_close_matches(name, table.columns, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    problems.add(
        f"{table.path}: column {name!r} not found (columns: {', '.join(table.columns) or 'none'}); "
        f"{hint}set {setting} to the column that holds it"
    )
    return None


def text_field(table: Source, row: Row, column: str, problems: Problems) -> str | None:
    """A non-empty string from ``row[column]``, or a located problem."""
    value = row.values.get(column)
    where = table.loc(row)
    if value is None:
        problems.add(f"{where}: {column}: missing; expected a text")
    elif not isinstance(value, str):
        problems.add(f"{where}: {column}: expected a text (string), found {type(value).__name__} {value!r}")
    elif not value.strip():
        problems.add(f"{where}: {column}: empty text; expected a non-empty string")
    else:
        return value
    return None


def scalar_label(table: Source, row: Row, column: str, problems: Problems) -> str | None:
    """A single label (string or integer, returned as a string), or a located problem."""
    value: Any = row.values.get(column)
    where = table.loc(row)
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.add(f"{where}: {column}: missing label")
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.add(f"{where}: {column}: expected a label (string or integer), found {type(value).__name__}")
    else:
        return str(value).strip()
    return None


def label_list(table: Source, row: Row, column: str, delimiter: str, problems: Problems) -> list[str] | None:
    """Multi-label labels: a JSON list, or a delimiter-separated string (CSV/TSV). Empty means no label."""
    value: Any = row.values.get(column)
    where = table.loc(row)
    if value is None:
        problems.add(f"{where}: {column}: missing labels; expected a list (may be empty)")
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(delimiter) if part.strip()]
    if isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return [str(v).strip() for v in value]
    problems.add(
        f"{where}: {column}: expected a list of labels or a {delimiter!r}-separated string, "
        f"found {type(value).__name__} {value!r}"
    )
    return None
