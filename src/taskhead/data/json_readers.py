"""JSON readers: JSON Lines records as they are read, a JSON array read whole, each row located (line, or
``record N``) and checked to be an object without lone surrogates; ``lone_surrogate`` finds one in any
value. ``readers.stream_table`` reads ``jsonl`` files through ``json_rows``."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

from taskhead.data.rows import Row, TableStream
from taskhead.errors import DataError

# json.loads raises RecursionError past the interpreter's recursion limit (about 1,000 levels): the bound
TOO_DEEP = "JSON nested too deeply (arrays/objects within each other beyond about 1,000 levels)"
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value: Any) -> str | None:
    """Where ``value`` (a str, or lists and dicts of them) holds a lone surrogate: ``"text: U+D800"``,
    ``"tokens[2]: U+DC00"``, or None.

    JSON's ``"\\ud800"`` escape and Python strings can carry one; it is no Unicode character, so no tokenizer
    can encode it (and UTF-8 output cannot hold it).
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return f"{where or 'value'}: U+{ord(found.group()):04X}"
        elif isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def _surrogate_problem(loc: str, record: Any) -> str | None:
    found = lone_surrogate(record)
    if found is None:
        return None
    return (
        f"{loc}: {found}: a lone surrogate (an unpaired \\ud800-\\udfff escape) is not a character; "
        f"expected valid Unicode text"
    )


def json_rows(table: TableStream, lines: Iterator[str], max_errors: int) -> Iterator[Row]:
    """JSON Lines records as they are read, or the records of a JSON array (a file whose first non-blank
    character is ``[``, read whole: it is one value)."""
    numbered = enumerate(lines, 1)
    head: list[str] = []  # the blank lines before the first value, and its line
    for _, line in numbered:
        head.append(line)
        if line.strip():
            break
    if head and head[-1].lstrip().startswith("["):
        text = "".join(head) + "".join(line for _, line in numbered)
        yield from _json_array_rows(table, text, max_errors)
        return
    path = table.path
    bad: list[str] = []
    total_bad = 0
    for i, line in itertools.chain(enumerate(head, 1), numbered):
        if not line.strip():
            continue
        problem = None
        try:
            value = json.loads(line.rstrip("\r\n"))  # a line break would move the column of an error
        except json.JSONDecodeError as exc:
            problem = f"{path}:{i}: malformed JSON line: {exc.msg} (column {exc.colno})"
        except RecursionError:
            problem = f"{path}:{i}: {TOO_DEEP}"
        else:
            if not isinstance(value, dict):
                problem = f"{path}:{i}: expected a JSON object per line, found {type(value).__name__}"
            else:
                problem = _surrogate_problem(f"{path}:{i}", value)
        if problem is not None:
            total_bad += 1
            if len(bad) < max_errors:
                bad.append(problem)
            continue
        table.add_columns(value)
        yield Row(value, i)
    if bad:
        raise DataError(bad, total=total_bad)


def _json_array_rows(table: TableStream, text: str, max_errors: int) -> Iterator[Row]:
    path = table.path
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError([f"{path}:{exc.lineno}: malformed JSON: {exc.msg}"]) from None
    except RecursionError:
        raise DataError([f"{path}: {TOO_DEEP}"]) from None
    del text
    rows = [Row(r, f"record {i}") for i, r in enumerate(records, 1)]
    bad = [
        f"{path} ({r.where}): expected a JSON object, found {type(r.values).__name__}"
        for r in rows
        if not isinstance(r.values, dict)
    ]
    bad += [p for r in rows if (p := _surrogate_problem(f"{path} ({r.where})", r.values))]
    if bad:
        raise DataError(bad[:max_errors], total=len(bad))
    for row in rows:
        table.add_columns(row.values)
    yield from rows
