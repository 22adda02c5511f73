"""The rows of a data file, shared by every reader: ``Row`` (values and where they were found), ``Table``
(all rows held), ``TableStream`` (rows as they are read), and ``LINE_BREAK``, the only line breaks readers
split at (``\n``, ``\r\n``, a lone ``\r``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(slots=True)  # no per-row __dict__: a file's rows are held at once (about 100 bytes a row less)
class Row:
    """One record of a data file: its values by column name and where it was found."""

    values: dict[str, Any]
    where: int | str  # line number, or "record N"


@dataclass
class Table:
    path: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rows

    def loc(self, row: Row) -> str:
        """``file:LINE`` or ``file (record N)``."""
        return f"{self.path}:{row.where}" if isinstance(row.where, int) else f"{self.path} ({row.where})"


class TableStream:
    """The rows of a data file as they are read, once: iterating reads the file (the whole file is never
    held as one text, except a JSON array, which is one value). ``columns`` grows as rows are read (JSON
    Lines: the union of the keys so far); ``count`` is the number of rows given so far.

    Iterating raises DataError where the file cannot be read or decoded (when that point is reached) and,
    after the last row, for the malformed lines or records it met (the rows between are still given).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._columns: dict[str, None] = {}
        self._rows: Iterator[Row] | None = None

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def empty(self) -> bool:
        return self.count == 0

    def add_columns(self, names: Iterable[str]) -> None:
        self._columns.update(dict.fromkeys(names))

    def loc(self, row: Row) -> str:
        """``file:LINE`` or ``file (record N)``."""
        return f"{self.path}:{row.where}" if isinstance(row.where, int) else f"{self.path} ({row.where})"

    def __iter__(self) -> Iterator[Row]:
        rows, self._rows = self._rows, None
        if rows is None:
            raise RuntimeError(f"{self.path}: a TableStream is read once")
        for row in rows:
            self.count += 1
            yield row
