"""Readers for tabular data files: CSV, TSV, JSON Lines (and JSON arrays), Parquet and plain text.

Every row comes with where it was found (a 1-based line number, or a record number for Parquet and JSON
arrays) so that validation can say exactly which line is wrong. Nothing here knows about tasks.

Lines: every reader of taskhead splits a file into lines with ``split_lines`` (here), which breaks only at
``\n``, ``\r\n`` and a lone ``\r``: never at U+2028, U+2029, U+0085, form feed or the other characters
``str.splitlines`` treats as breaks, which are valid inside a JSON Lines string or a sentence. Line numbers
in errors are thus the line numbers editors show.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskhead.errors import DataError

if TYPE_CHECKING:
    from taskhead.config import DataConfig

FORMATS_BY_SUFFIX = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
}


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

    def loc(self, row: Row) -> str:
        """``file:LINE`` or ``file (record N)``."""
        return f"{self.path}:{row.where}" if isinstance(row.where, int) else f"{self.path} ({row.where})"


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# json.loads raises RecursionError past the interpreter's recursion limit (about 1,000 levels): the bound
TOO_DEEP = "JSON nested too deeply (arrays/objects within each other beyond about 1,000 levels)"
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """The lines of a text file, split at ``\\n``, ``\\r\\n`` and a lone ``\\r`` only (not at U+2028,
    U+2029, U+0085, form feed or the other breaks of ``str.splitlines``), without their line breaks.

    A final line break ends the last line rather than starting an empty one, so ``split_lines(text)[i]``
    is line ``i + 1`` of the file as editors number it.
    """
    lines = _LINE_BREAK.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` pairs of ``split_lines(text)``, numbered from 1."""
    return list(enumerate(split_lines(text), 1))


def detect_format(path: Path | str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(str(path)).suffix.lower()
    if suffix in FORMATS_BY_SUFFIX:
        return FORMATS_BY_SUFFIX[suffix]
    raise DataError(
        [
            f"{path}: cannot tell the format from the extension {suffix!r}; set data.format "
            f"(one of csv, tsv, jsonl, parquet, text)"
        ]
    )


def _decode(path: str, raw: bytes, encoding: str) -> str:
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        breaks = list(_LINE_BREAK_BYTES.finditer(raw, 0, exc.start))
        line = len(breaks) + 1
        column = exc.start - (breaks[-1].end() if breaks else 0) + 1
        raise DataError(
            [
                f"{path}:{line}: not valid {encoding} (byte 0x{raw[exc.start]:02x} at column {column}); "
                f"set data.encoding to the file's encoding, e.g. latin-1"
            ]
        ) from None
    except LookupError:
        raise DataError([f"{path}: data.encoding: unknown encoding {encoding!r}"]) from None


_stdin: tuple[object, bytes] | None = None


def _stdin_bytes() -> bytes:
    """Standard input, read once: sniffing a format and then reading it see the same bytes. (Kept per
    ``sys.stdin`` object, since stdin cannot be read twice.)"""
    global _stdin
    stream = sys.stdin.buffer
    if _stdin is None or _stdin[0] is not stream:
        _stdin = (stream, stream.read())
    return _stdin[1]


# leading bytes of compressed files, which would otherwise be reported as undecodable text
COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip", "gunzip FILE"),
    (b"PK\x03\x04", "zip", "unzip FILE"),
    (b"BZh", "bzip2", "bunzip2 FILE"),
    (b"\xfd7zXZ\x00", "xz", "unxz FILE"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd FILE"),
)
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(path: Path, mode: int) -> DataError:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return DataError([f"{path}: is {kind}, expected a regular data file"])


def open_data_file(path: str | Path) -> io.BufferedReader:
    """Open a data file for reading bytes, refusing at once what is not a regular file.

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor: a plain
    ``open`` of a FIFO blocks until a writer appears (and a check before opening could race).

    Raises:
        DataError: ``FILE: file not found``, ``FILE: is a FIFO (named pipe), expected a regular data
            file`` (directory, socket, device alike), ``FILE: cannot read: permission denied``.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DataError([f"{p}: file not found"]) from None
    except IsADirectoryError:
        raise DataError([f"{p}: is a directory, expected a regular data file"]) from None
    except OSError as exc:  # PermissionError, ELOOP, ENXIO (a socket), ...
        try:
            mode = os.stat(p).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise _not_regular(p, mode) from None
        reason = (exc.strerror or type(exc).__name__).lower()
        raise DataError([f"{p}: cannot read: {reason}"]) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(p, mode)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def check_not_compressed(path: str | Path, head: bytes) -> None:
    """Refuse a file whose first bytes are a compression format's magic number (gzip ``1f 8b``, zip,
    bzip2, xz, zstd): taskhead reads uncompressed text.

    Raises:
        DataError: ``FILE: is gzip-compressed (...); decompress it first: gunzip FILE``.
    """
    for magic, name, command in COMPRESSED_MAGIC:
        if head.startswith(magic):
            raise DataError(
                [
                    f"{path}: is {name}-compressed (starts with bytes {magic.hex(' ')}); taskhead reads "
                    f"uncompressed files: decompress it first, e.g. {command.replace('FILE', str(path))}"
                ]
            )


def read_data_bytes(path: str | Path) -> bytes:
    """All bytes of a regular, readable, uncompressed data file (see ``open_data_file``).

    Raises:
        DataError: a missing, non-regular, unreadable or compressed file.
    """
    with open_data_file(path) as fh:
        try:
            raw = fh.read()
        except OSError as exc:
            raise DataError(
                [f"{path}: cannot read: {(exc.strerror or type(exc).__name__).lower()}"]
            ) from None
    check_not_compressed(path, raw[:8])
    return raw


def read_text_source(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole text of a file, or of standard input for ``-`` (read once, then served again).

    Raises:
        DataError: a missing, non-regular (FIFO, device, directory), unreadable or compressed file, or
            bytes that are not text in ``encoding`` (located by line and column).
    """
    if str(path) == "-":
        return _decode("<stdin>", _stdin_bytes(), encoding)
    return _decode(str(path), read_data_bytes(path), encoding)


def read_data_table(path: str | Path, data: DataConfig, *, text_column: str, fmt: str | None = None) -> Table:
    """``read_table`` with the reading settings of a config's ``data`` section (format, header, encoding,
    quoting, error cap); ``fmt`` overrides ``data.format``."""
    return read_table(
        path,
        data.format if fmt is None else fmt,
        header=data.header,
        encoding=data.encoding,
        quoting=data.quoting,
        max_errors=data.max_errors,
        text_column=text_column,
    )


def read_table(
    path: str | Path,
    fmt: str = "auto",
    *,
    header: bool = True,
    encoding: str = "utf-8",
    quoting: str = "minimal",
    max_errors: int = 20,
    text_column: str = "text",
) -> Table:
    """Read a data file into a Table. Malformed lines are all reported (up to ``max_errors``)."""
    name = "<stdin>" if str(path) == "-" else str(path)
    if fmt == "auto" and name == "<stdin>":
        fmt = "sniff"
    fmt = detect_format(path, fmt) if fmt != "sniff" else fmt
    if fmt == "parquet":
        return _read_parquet(Path(path))
    text = read_text_source(path, encoding)
    if fmt == "sniff":
        fmt = sniff_format(text)
    if fmt == "jsonl":
        return _read_json(name, text, max_errors)
    if fmt == "text":
        rows = [Row({text_column: line}, i) for i, line in numbered_lines(text) if line.strip()]
        return Table(name, [text_column], rows)
    return _read_delimited(name, text, "," if fmt == "csv" else "\t", header, quoting, max_errors)


def sniff_format(text: str) -> str:
    """``jsonl`` when the first non-blank line is a JSON object, else ``text`` (one input per line).

    The rule for standard input, whose name tells no format: the same bytes in a ``.jsonl`` file and in a
    ``.txt`` file give the same result as on stdin unless a text file's first line is itself a JSON object
    (pass ``--format text`` / ``data.format: text`` for such files).
    """
    first = next((line.strip() for line in split_lines(text) if line.strip()), "")
    if not first.startswith("{"):
        return "text"
    try:
        return "jsonl" if isinstance(json.loads(first), dict) else "text"
    except (json.JSONDecodeError, RecursionError):
        return "text"


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


def _read_json(path: str, text: str, max_errors: int) -> Table:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError([f"{path}:{exc.lineno}: malformed JSON: {exc.msg}"]) from None
        except RecursionError:
            raise DataError([f"{path}: {TOO_DEEP}"]) from None
        rows = [Row(r, f"record {i}") for i, r in enumerate(records, 1)]
        bad = [
            f"{path} ({r.where}): expected a JSON object, found {type(r.values).__name__}"
            for r in rows
            if not isinstance(r.values, dict)
        ]
        bad += [p for r in rows if (p := _surrogate_problem(f"{path} ({r.where})", r.values))]
        if bad:
            raise DataError(bad[:max_errors], total=len(bad))
    else:
        rows, bad = [], []
        for i, line in numbered_lines(text):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(f"{path}:{i}: malformed JSON line: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:
                bad.append(f"{path}:{i}: {TOO_DEEP}")
                continue
            if not isinstance(value, dict):
                bad.append(f"{path}:{i}: expected a JSON object per line, found {type(value).__name__}")
                continue
            problem = _surrogate_problem(f"{path}:{i}", value)
            if problem:
                bad.append(problem)
                continue
            rows.append(Row(value, i))
        if bad:
            raise DataError(bad[:max_errors], total=len(bad))
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row.values))
    return Table(path, list(columns), rows)


def _read_delimited(
    path: str, text: str, delimiter: str, header: bool, quoting: str, max_errors: int
) -> Table:
    """Rows of a CSV/TSV text. With a header, every row must have its number of fields; without one,
    columns are named by index (``"0"``, ``"1"``, ...) and rows may have different numbers of fields (the
    STS Benchmark files add two source columns to some lines): the columns a config addresses are checked
    row by row where they are used ("missing")."""
    mode = csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL
    # lines one at a time rather than io.StringIO(text), which copies the whole text as 4-byte characters
    consumed: list[str] = []  # the raw lines of the row being read (to re-check rows over several lines)
    reader = csv.reader(
        _recorded(_lines_with_breaks(text), consumed), delimiter=delimiter, quoting=mode, strict=False
    )
    kind = "CSV" if delimiter == "," else "TSV"
    rows: list[Row] = []
    bad: list[str] = []
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
                bad.append(
                    f"{path}:{line}: a quoted field runs over lines {line}-{reader.line_num}, swallowing "
                    f"them: a stray quote (field starts {runaway!r}); "
                    + (
                        "TSV files such as GLUE's are unquoted: set data.quoting=none"
                        if kind == "TSV"
                        else "close the quote, or for an unquoted file set data.quoting=none"
                    )
                )
                continue
            if columns is None:
                if header:
                    columns = [c.strip() for c in fields]
                    continue
                columns = [str(i) for i in range(len(fields))]
            if not header and len(fields) > len(columns):
                columns += [str(i) for i in range(len(columns), len(fields))]
            if header and len(fields) != len(columns):
                bad.append(
                    f"{path}:{line}: expected {len(columns)} fields, found {len(fields)}"
                    + _width_hint(fields, len(columns), delimiter, quoting)
                )
                continue
            rows.append(Row(dict(zip(columns, fields, strict=False)), line))
    except csv.Error as exc:
        bad.append(f"{path}:{start}: malformed {kind}: {exc}")
    if bad:
        raise DataError(bad[:max_errors], total=len(bad))
    return Table(path, columns or [], rows)


def _lines_with_breaks(text: str) -> Iterator[str]:
    """The lines of ``text`` with their line breaks, split at ``\n``, ``\r\n`` and a lone ``\r`` only
    (what ``io.StringIO(text, newline="")`` gives the csv module, without copying the text)."""
    start = 0
    for match in _LINE_BREAK.finditer(text):
        yield text[start : match.end()]
        start = match.end()
    if start < len(text):
        yield text[start:]


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


def _unclosed_quote(raw: str, delimiter: str, mode: int, fields: list[str]) -> str | None:
    """The start of a quoted field of a row over several lines (``raw``) that never closes (the lenient
    reader ran to the end of the file inside it), or, in a TSV file, any quoted field over a line break:
    in a one-column file no delimiter count can tell a stray quote from a multi-line value, and TSV files
    (GLUE's, spreadsheets' exports) are unquoted by convention."""
    spanning = next((value for value in fields if _LINE_BREAK.search(value)), None)
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
        later = _LINE_BREAK.split(value)[1:]
        if any(part.count(delimiter) >= max(1, width - 1) for part in later):
            return value[:30]
    return None


def _read_parquet(path: Path) -> Table:
    with open_data_file(path) as fh:  # refuses FIFOs, devices and unreadable files before pyarrow opens it
        check_not_compressed(path, fh.read(8))
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError([f"{path}: cannot read as Parquet: {exc}"]) from None
    records = table.to_pylist()
    return Table(str(path), table.column_names, [Row(r, f"record {i}") for i, r in enumerate(records, 1)])
