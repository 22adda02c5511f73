"""CSV/TSV rows, read one line at a time (``readers.stream_table`` calls this; nothing here knows tasks).

Rows that the csv module's lenient reading would get wrong are located errors: a quoted field that runs
over lines holding whole rows (a stray quote swallowing them), one that never closes, any TSV field over a
line break, and a row whose number of fields differs from the header's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from taskhead.data.rows import LINE_BREAK, Row
from taskhead.errors import DataError

if TYPE_CHECKING:
    from taskhead.data.rows import TableStream

# The csv module's quoting modes this reader uses: csv.QUOTE_MINIMAL (0) or csv.QUOTE_NONE (3).
_Quoting = Literal[0, 3]


def delimited_rows(
    table: TableStream, lines: Iterator[str], delimiter: str, header: bool, quoting: str, max_errors: int
) -> Iterator[Row]:
    """The rows of CSV/TSV ``lines`` (each with its line break), as they are read. With a header, every row
    must have its number of fields; without one, columns are named by index (``"0"``, ``"1"``, ...) and rows
    may have different numbers of fields (the STS Benchmark files add two source columns to some lines):
    the columns a config addresses are checked row by row where they are used ("missing").

    ``table``'s columns are set from the header line (or grow with the widest row so far).

    Raises:
        DataError: after the last row, every malformed line (up to ``max_errors``, with the total).
    """
    mode: _Quoting = csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL
    consumed: list[str] = []  # the raw lines of the row being read (to re-check rows over several lines)
    reader = csv.reader(_recorded(lines, consumed), delimiter=delimiter, quoting=mode, strict=False)
    kind = "CSV" if delimiter == "," else "TSV"
    path = table.path
    bad: list[str] = []  # the first max_errors problems
    total_bad = 0

    def note(problem: str) -> None:
        nonlocal total_bad
        total_bad += 1
        if len(bad) < max_errors:
            bad.append(problem)

    columns: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            raw = "".join(consumed)
            consumed.clear()
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            width = len(columns) if columns else len(fields)
            runaway = _runaway_quote(fields, delimiter, width) or _unclosed_quote(
                raw, delimiter, mode, fields
            )
            if mode == csv.QUOTE_MINIMAL and runaway:
                note(_stray_quote(f"{path}:{line}", line, reader.line_num, runaway, kind))
                continue
            if columns is None:
                columns = [c.strip() for c in fields] if header else [str(i) for i in range(len(fields))]
                table.add_columns(columns)
                if header:
                    continue
            if not header and len(fields) > len(columns):
                columns += [str(i) for i in range(len(columns), len(fields))]
                table.add_columns(columns)
            if header and len(fields) != len(columns):
                note(
                    f"{path}:{line}: expected {len(columns)} fields, found {len(fields)}"
                    + _width_hint(fields, len(columns), delimiter, quoting)
                )
                continue
            yield Row(dict(zip(columns, fields, strict=False)), line)
    except csv.Error as exc:
        note(f"{path}:{start}: malformed {kind}: {exc}")
    if bad:
        raise DataError(bad, total=total_bad)


def _stray_quote(where: str, line: int, end: int, runaway: str, kind: str) -> str:
    """The problem of a quoted field that ran from ``line`` over the lines up to ``end``."""
    return (
        f"{where}: a quoted field runs over lines {line}-{end}, swallowing "
        f"them: a stray quote (field starts {runaway!r}); "
        + (
            "TSV files such as GLUE's are unquoted: set data.quoting=none"
            if kind == "TSV"
            else "close the quote, or for an unquoted file set data.quoting=none"
        )
    )


def _width_hint(fields: list[str], width: int, delimiter: str, quoting: str) -> str:
    """The likely fix for a row whose field count differs from the header's."""
    if delimiter == "," and any("\t" in value for value in fields):
        return " (the line holds tabs: for tab-separated data set data.format=tsv)"
    if len(fields) > width:
        return (
            f" (more fields than the {width} of the header line: if the file has no header line, set "
            f"data.header=false, where rows may have extra columns)"
        )
    return " (a stray quote? try data.quoting=none)" if quoting != "none" else ""


def _recorded(lines: Iterator[str], into: list[str]) -> Iterator[str]:
    """``lines``, each also appended to ``into`` as the csv module takes it."""
    for line in lines:
        into.append(line)
        yield line


def _unclosed_quote(raw: str, delimiter: str, mode: _Quoting, fields: list[str]) -> str | None:
    """The start of a quoted field of a row over several lines (``raw``) that never closes (the lenient
    reader ran to the end of the file inside it), or, in a TSV file, any quoted field over a line break:
    in a one-column file no delimiter count can tell a stray quote from a multi-line value, and TSV files
    (GLUE's, spreadsheets' exports) are unquoted by convention."""
    spanning = next((value for value in fields if LINE_BREAK.search(value)), None)
    if spanning is None:
        return None
    if delimiter == "\t":
        return spanning[:30]
    try:
        list(csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter, quoting=mode, strict=True))
    except csv.Error:
        return spanning[:30]
    return None


def _runaway_quote(fields: list[str], delimiter: str, width: int) -> str | None:
    """The start of a field that a quote carried over a line holding a whole row's worth of delimiters
    (``width - 1`` of them): a stray quote swallowing the rows that follow, not a multi-line value."""
    for value in fields:
        later = LINE_BREAK.split(value)[1:]
        if any(part.count(delimiter) >= max(1, width - 1) for part in later):
            return value[:30]
    return None
