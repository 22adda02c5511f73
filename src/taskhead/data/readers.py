"""Readers for tabular data files: CSV, TSV, JSON Lines (and JSON arrays), Parquet and plain text.

Every row comes with where it was found (a 1-based line number, or a record number for Parquet and JSON
arrays) so that validation can say exactly which line is wrong. Nothing here knows about tasks.
"""

from __future__ import annotations

import csv
import io
import json
import sys
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


@dataclass
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
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            [
                f"{path}:{line}: not valid {encoding} (byte 0x{raw[exc.start]:02x} at column {column}); "
                f"set data.encoding to the file's encoding, e.g. latin-1"
            ]
        ) from None
    except LookupError:
        raise DataError([f"{path}: data.encoding: unknown encoding {encoding!r}"]) from None


def read_text_source(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole text of a file, or of standard input for ``-``."""
    if str(path) == "-":
        return _decode("<stdin>", sys.stdin.buffer.read(), encoding)
    p = Path(path)
    if not p.exists():
        raise DataError([f"{p}: file not found"])
    if p.is_dir():
        raise DataError([f"{p}: is a directory, expected a data file"])
    return _decode(str(p), p.read_bytes(), encoding)


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
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        fmt = "jsonl" if first.startswith("{") else "text"
    if fmt == "jsonl":
        return _read_json(name, text, max_errors)
    if fmt == "text":
        rows = [Row({text_column: line}, i) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        return Table(name, [text_column], rows)
    return _read_delimited(name, text, "," if fmt == "csv" else "\t", header, quoting, max_errors)


def _read_json(path: str, text: str, max_errors: int) -> Table:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError([f"{path}:{exc.lineno}: malformed JSON: {exc.msg}"]) from None
        rows = [Row(r, f"record {i}") for i, r in enumerate(records, 1)]
        bad = [
            f"{path} ({r.where}): expected a JSON object, found {type(r.values).__name__}"
            for r in rows
            if not isinstance(r.values, dict)
        ]
        if bad:
            raise DataError(bad[:max_errors], total=len(bad))
    else:
        rows, bad = [], []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(f"{path}:{i}: malformed JSON line: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(value, dict):
                bad.append(f"{path}:{i}: expected a JSON object per line, found {type(value).__name__}")
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
    mode = csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=mode, strict=False)
    rows: list[Row] = []
    bad: list[str] = []
    columns: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if columns is None:
                if header:
                    columns = [c.strip() for c in fields]
                    continue
                columns = [str(i) for i in range(len(fields))]
            if len(fields) != len(columns):
                bad.append(
                    f"{path}:{line}: expected {len(columns)} fields, found {len(fields)}"
                    + (" (a stray quote? try data.quoting=none)" if quoting != "none" else "")
                )
                continue
            rows.append(Row(dict(zip(columns, fields, strict=True)), line))
    except csv.Error as exc:
        bad.append(f"{path}:{start}: malformed {'CSV' if delimiter == ',' else 'TSV'}: {exc}")
    if bad:
        raise DataError(bad[:max_errors], total=len(bad))
    return Table(path, columns or [], rows)


def _read_parquet(path: Path) -> Table:
    if not path.exists():
        raise DataError([f"{path}: file not found"])
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError([f"{path}: cannot read as Parquet: {exc}"]) from None
    records = table.to_pylist()
    return Table(str(path), table.column_names, [Row(r, f"record {i}") for i, r in enumerate(records, 1)])
