"""Validated examples of one data file, held column by column.

A list of dicts costs about 300 bytes a row beyond the text itself (the dict, the ``file:line`` string,
a label string per row); a 200 MB CSV of short texts took several times its size in memory. Here each
row costs its values and a few pointers: one list per field, line numbers in an ``array``, labels shared.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, overload

Example = Mapping[str, Any]  # read-only: see ColumnExamples


class ColumnExamples(Sequence[Example]):
    """A read-only sequence of examples, each a read-only mapping ``{"_where": "file:LINE", key: value,
    ...}`` equal to the dict a task reader would build (a key whose value is None is left out; a tuple is
    given as a list). Mappings are built when an example is read; changing one raises TypeError.

    Args:
        path: the file, as named in ``_where``.
        keys: the fields, in the order of the examples' keys.
        shared: fields whose values (strings, or tuples of strings) repeat: kept once each.
    """

    __slots__ = ("_columns", "_pool", "_records", "_where", "keys", "path")

    def __init__(self, path: str, keys: Iterable[str], *, shared: Iterable[str] = ()) -> None:
        self.path = path
        self.keys = tuple(keys)
        self._columns: list[list[Any]] = [[] for _ in self.keys]
        self._where = array("q")  # line numbers, or record numbers when _records
        self._records = False
        self._pool: dict[str, dict[Any, Any]] = {key: {} for key in shared}

    def append(self, where: int | str, values: Mapping[str, Any]) -> None:
        """Add one example: ``where`` is a line number or ``"record N"`` (``readers.Row.where``)."""
        if isinstance(where, str):  # "record N": every row of a file has the same kind of place
            self._records = True
            where = int(where.removeprefix("record "))
        self._where.append(where)
        for key, column in zip(self.keys, self._columns, strict=True):
            value = values.get(key)
            pool = self._pool.get(key)
            if pool is not None and value is not None:
                if isinstance(value, list):
                    value = tuple([pool.setdefault(v, v) for v in value])
                else:
                    value = pool.setdefault(value, value)
            column.append(value)

    def stored(self, key: str) -> list[Any]:
        """The list of every example's value of ``key`` as stored (None where absent, tuples for lists):
        not a copy, to read only."""
        return self._columns[self.keys.index(key)]

    def where(self, index: int) -> str:
        n = self._where[index]
        return f"{self.path} (record {n})" if self._records else f"{self.path}:{n}"

    def _example(self, where: int, values: tuple[Any, ...]) -> Example:
        ex: dict[str, Any] = {
            "_where": f"{self.path} (record {where})" if self._records else f"{self.path}:{where}"
        }
        for key, value in zip(self.keys, values, strict=True):
            if value is not None:
                ex[key] = list(value) if isinstance(value, tuple) else value
        return MappingProxyType(ex)

    def __len__(self) -> int:
        return len(self._where)

    @overload
    def __getitem__(self, index: int) -> Example: ...

    @overload
    def __getitem__(self, index: slice) -> list[Example]: ...

    def __getitem__(self, index: int | slice) -> Example | list[Example]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        values = tuple(column[index] for column in self._columns)  # IndexError as a list raises it
        return self._example(self._where[index], values)

    def __iter__(self) -> Iterator[Example]:
        for where, values in zip(self._where, zip(*self._columns, strict=True), strict=True):
            yield self._example(where, values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<ColumnExamples {self.path!r}: {len(self)} examples of {', '.join(self.keys)}>"


def values(examples: Iterable[Mapping[str, Any]], key: str) -> Iterator[Any]:
    """Each example's value of ``key`` (None where it has none; a ``ColumnExamples``' lists as the tuples
    it stores), without building a ``ColumnExamples``' mappings."""
    if isinstance(examples, ColumnExamples):
        if key in examples.keys:
            return iter(examples.stored(key))
        return itertools.repeat(None, len(examples))
    return (ex.get(key) for ex in examples)
