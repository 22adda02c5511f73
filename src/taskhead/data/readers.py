"""Readers for tabular data files: CSV, TSV, JSON Lines (and JSON arrays), Parquet and plain text.

Every row comes with where it was found (a 1-based line number, or a record number for Parquet and JSON
arrays) so that validation can say exactly which line is wrong. Nothing here knows about tasks.

Lines: every reader of taskhead splits a file into lines with ``split_lines`` (here), which breaks only at
``\n``, ``\r\n`` and a lone ``\r``: never at U+2028, U+2029, U+0085, form feed or the other characters
``str.splitlines`` treats as breaks, which are valid inside a JSON Lines string or a sentence. Line numbers
in errors are thus the line numbers editors show.

Streaming: ``text_lines`` decodes a file a block at a time and ``stream_table`` gives its rows as they are
read (``TableStream``), so a large CSV/TSV/JSON Lines file is never held whole; ``read_table`` collects the
rows into a ``Table``. Errors are the same either way.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from taskhead.data.delimited import delimited_rows
from taskhead.data.json_readers import json_rows
from taskhead.data.rows import LINE_BREAK, Row, Table, TableStream
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


_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """The lines of a text file, split at ``\\n``, ``\\r\\n`` and a lone ``\\r`` only (not at U+2028,
    U+2029, U+0085, form feed or the other breaks of ``str.splitlines``), without their line breaks.

    A final line break ends the last line rather than starting an empty one, so ``split_lines(text)[i]``
    is line ``i + 1`` of the file as editors number it.
    """
    lines = LINE_BREAK.split(text)
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


def _codec(encoding: str) -> str:
    """The codec that reads ``encoding``: UTF-8 skips a byte-order mark."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def _decode(path: str, raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(_codec(encoding))
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


def text_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """The lines of a text file (``-``: standard input), each with its line break, as they are read: split
    where ``split_lines`` splits (``\\n``, ``\\r\\n``, a lone ``\\r``) and decoded from ``encoding``
    a block at a time, so a file is never held whole (standard input is, as ``read_text_source`` keeps it).

    Raises:
        DataError: as ``read_text_source`` (the same messages), each when reading reaches it.
    """
    if str(path) == "-":
        yield from _lines_with_breaks(read_text_source(path, encoding))
        return
    with open_data_file(path) as fh:
        try:
            check_not_compressed(path, fh.peek(8)[:8])
            try:
                # newline="": lines end at \n, \r\n or a lone \r, kept as they are (never at U+2028 etc.)
                lines = io.TextIOWrapper(fh, encoding=_codec(encoding), newline="")
            except LookupError:
                raise DataError([f"{path}: data.encoding: unknown encoding {encoding!r}"]) from None
            yield from lines
        except UnicodeDecodeError:
            # located as read_text_source locates it (line and column of the first bad byte): only a
            # file that does not decode is read whole
            _decode(str(path), read_data_bytes(path), encoding)
            raise DataError([f"{path}: not valid {encoding} (it changed while read)"]) from None
        except OSError as exc:
            raise DataError(
                [f"{path}: cannot read: {(exc.strerror or type(exc).__name__).lower()}"]
            ) from None


def _lines_with_breaks(text: str) -> Iterator[str]:
    """The lines of ``text`` with their line breaks, split at ``\\n``, ``\\r\\n`` and a lone ``\\r``
    only (what ``io.StringIO(text, newline="")`` gives, without copying the text)."""
    start = 0
    for match in LINE_BREAK.finditer(text):
        yield text[start : match.end()]
        start = match.end()
    if start < len(text):
        yield text[start:]


def read_data_table(path: str | Path, data: DataConfig, *, text_column: str, fmt: str | None = None) -> Table:
    """``read_table`` with the reading settings of a config's ``data`` section (format, header, encoding,
    quoting, error cap); ``fmt`` overrides ``data.format``."""
    return _materialize(stream_data_table(path, data, text_column=text_column, fmt=fmt))


def stream_data_table(
    path: str | Path, data: DataConfig, *, text_column: str, fmt: str | None = None
) -> TableStream:
    """``stream_table`` with the reading settings of a config's ``data`` section (as ``read_data_table``)."""
    return stream_table(
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
    return _materialize(
        stream_table(
            path,
            fmt,
            header=header,
            encoding=encoding,
            quoting=quoting,
            max_errors=max_errors,
            text_column=text_column,
        )
    )


def _materialize(stream: TableStream) -> Table:
    rows = list(stream)
    return Table(stream.path, stream.columns, rows)


def stream_table(
    path: str | Path,
    fmt: str = "auto",
    *,
    header: bool = True,
    encoding: str = "utf-8",
    quoting: str = "minimal",
    max_errors: int = 20,
    text_column: str = "text",
) -> TableStream:
    """The rows of a data file as they are read (see ``TableStream``), with the errors of ``read_table``.

    Raises:
        DataError: at once, a format that cannot be told from the extension; the rest while iterating.
    """
    name = "<stdin>" if str(path) == "-" else str(path)
    if fmt == "auto" and name == "<stdin>":
        fmt = "sniff"
    fmt = detect_format(path, fmt) if fmt != "sniff" else fmt
    if fmt == "sniff":
        fmt = sniff_format(read_text_source(path, encoding))
    table = TableStream(name)
    if fmt == "parquet":
        table._rows = _parquet_rows(table, Path(path))
    elif fmt == "jsonl":
        table._rows = json_rows(table, text_lines(path, encoding), max_errors)
    elif fmt == "text":
        table._rows = _text_rows(table, text_lines(path, encoding), text_column)
    else:
        lines = text_lines(path, encoding)
        delimiter = "," if fmt == "csv" else "\t"
        table._rows = delimited_rows(table, lines, delimiter, header, quoting, max_errors)
    return table


def _text_rows(table: TableStream, lines: Iterator[str], text_column: str) -> Iterator[Row]:
    table.add_columns([text_column])
    for i, line in enumerate(lines, 1):
        if line.strip():
            yield Row({text_column: line.rstrip("\r\n")}, i)  # one line break at most: the line's own


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


def _parquet_rows(table: TableStream, path: Path) -> Iterator[Row]:
    with open_data_file(path) as fh:  # refuses FIFOs, devices and unreadable files before pyarrow opens it
        check_not_compressed(path, fh.read(8))
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError([f"{path}: cannot read as Parquet: {exc}"]) from None
    table.add_columns(data.column_names)
    records = data.to_pylist()
    del data
    yield from (Row(r, f"record {i}") for i, r in enumerate(records, 1))
