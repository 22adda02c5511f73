"""Readers for generation (sequence-to-sequence) data: tables, parallel text files, SQuAD as abstractive QA.

Every reader returns one ``Pair`` per example: a source text, its reference targets (one or more; the first
is the one trained on, all are used by the metrics) and where it was found. Records are checked as they
enter; every problem of a file is collected (up to ``max_errors``) before one DataError is raised, each as
one located line ``PATH:LINE: field: problem, expected X, found Y``. Pure Python, no torch.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskhead.data.readers import Row, Table, detect_format, read_table, read_text_source, split_lines
from taskhead.data.squad import is_squad_json, read_squad
from taskhead.data.validation import Problems, require_column
from taskhead.errors import ConfigError, DataError

SHOWN_CHARS = 60  # values quoted in messages are shortened to this many characters
TEMPLATE_FIELDS = ("question", "context", "title")


@dataclass
class Pair:
    """One generation example: the source text and its reference targets."""

    source: str
    targets: list[str]  # one or more references; [] when read unlabelled. Training uses targets[0].
    where: str  # "PATH:LINE", "PATH (record N)"; for parallel files the source file's "train.en:LINE"
    id: str | None = None


def _kind(value: Any) -> str:
    """``type value`` for messages, the value shortened."""
    shown = repr(value)
    shown = shown if len(shown) <= SHOWN_CHARS else shown[: SHOWN_CHARS - 1] + "…"
    return f"{type(value).__name__} {shown}"


def count_long(lengths: list[int], limit: int) -> int:
    """How many of ``lengths`` exceed ``limit`` (e.g. targets longer than max_target_length, in tokens)."""
    return sum(1 for n in lengths if n > limit)


# ---------------------------------------------------------------------------------------------- tables


def _source_text(value: Any, where: str, name: str, problems: Problems) -> str | None:
    """A non-empty text; a list of texts (SciTLDR's sentences) is joined with single spaces."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    if value is None:
        problems.add(f"{where}: {name}: missing, expected a non-empty text")
    elif not isinstance(value, str):
        problems.add(f"{where}: {name}: expected a text or a list of texts, found {_kind(value)}")
    elif not value.strip():
        problems.add(f"{where}: {name}: empty, expected a non-empty text, found {value!r}")
    else:
        return value
    return None


def _references(
    value: Any, where: str, name: str, delimiter: str | None, problems: Problems
) -> list[str] | None:
    """One or more non-empty reference texts: a list of texts, or a text (split on ``delimiter`` if set)."""
    if isinstance(value, str) and value.strip() and delimiter:
        parts = [part.strip() for part in value.split(delimiter)]
        empty = [n for n, part in enumerate(parts, 1) if not part]
        if empty:
            problems.add(
                f"{where}: {name}: empty reference {empty[0]} of {len(parts)} (split on {delimiter!r}), "
                f"expected a non-empty text between delimiters, found {value!r}"
            )
            return None
        return parts
    if isinstance(value, str):
        if value.strip():
            return [value]
        problems.add(f"{where}: {name}: empty, expected a non-empty text, found {value!r}")
        return None
    if isinstance(value, list):
        if not value:
            problems.add(f"{where}: {name}: empty list, expected at least one reference text, found []")
            return None
        ok = True
        for n, item in enumerate(value):
            if not isinstance(item, str):
                problems.add(f"{where}: {name}[{n}]: expected a text (string), found {_kind(item)}")
                ok = False
            elif not item.strip():
                problems.add(f"{where}: {name}[{n}]: empty, expected a non-empty text, found {item!r}")
                ok = False
        return list(value) if ok else None
    found = "missing" if value is None else f"found {_kind(value)}"
    problems.add(f"{where}: {name}: expected a text or a list of texts, {found}")
    return None


def _row_id(value: Any, where: str, name: str, problems: Problems) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.add(f"{where}: {name}: expected a string or an integer, found {_kind(value)}")
        return None
    return str(value)


def _row_pair(
    table: Table,
    row: Row,
    columns: tuple[str, str | None, str | None],
    delimiter: str | None,
    problems: Problems,
) -> Pair | None:
    source_col, target_col, id_col = columns
    where = table.loc(row)
    before = problems.total
    source = _source_text(row.values.get(source_col), where, source_col, problems)
    targets: list[str] | None = []
    if target_col is not None:
        targets = _references(row.values.get(target_col), where, target_col, delimiter, problems)
    pair_id = _row_id(row.values.get(id_col), where, id_col, problems) if id_col else None
    if source is None or targets is None or problems.total > before:
        return None
    return Pair(source, targets, where, pair_id)


def read_pairs(
    path: str | Path,
    fmt: str = "auto",
    *,
    source: str = "source",
    target: str = "target",
    labelled: bool = True,
    header: bool = True,
    encoding: str = "utf-8",
    quoting: str = "minimal",
    reference_delimiter: str | None = None,
    max_errors: int = 20,
    id_column: str = "id",
) -> list[Pair]:
    """Read generation pairs from JSON Lines, CSV, TSV, Parquet (or plain text, unlabelled), one per row.

    The ``source`` cell is a text; a list of texts (SciTLDR keeps an abstract as its sentences) is joined
    with single spaces. The ``target`` cell is a text or a list of texts (several references: all are used
    by the metrics, the first is trained on). With ``reference_delimiter`` set, a text target is split on it
    into several references (the way to give several in CSV/TSV), each stripped of surrounding
    whitespace. With ``labelled=False`` the target column is neither required nor read (``targets == []``).
    ``id_column`` is optional: rows get ``id=None`` when the file has no such column.

    Raises:
        DataError: every located problem of the file (up to ``max_errors``): a missing column (the existing
            ones are listed), an empty source or target, an empty reference list, a wrong type; no records;
            SQuAD JSON (read it with ``pairs_from_squad``); a missing or undecodable file.
    """
    if str(path) != "-" and detect_format(path, fmt) == "jsonl" and is_squad_json(path, encoding):
        raise DataError(
            [
                f'{path}: SQuAD JSON (an object with a "data" list of articles), expected one record per '
                f"line for JSON Lines; read it with pairs_from_squad(path)"
            ]
        )
    table = read_table(
        path,
        fmt,
        header=header,
        encoding=encoding,
        quoting=quoting,
        max_errors=max_errors,
        text_column=source,
    )
    problems = Problems(max_errors)
    source_col = require_column(table, source, "data.columns.source", problems)
    target_col = require_column(table, target, "data.columns.target", problems) if labelled else None
    problems.raise_if_any()
    if not table.rows:
        raise DataError([f"{table.path}: no records, expected at least one"])
    id_col = id_column if id_column in table.columns else None
    columns = (str(source_col), target_col, id_col)
    read = (_row_pair(table, row, columns, reference_delimiter, problems) for row in table.rows)
    pairs = [pair for pair in read if pair is not None]
    problems.raise_if_any()
    return pairs


# ---------------------------------------------------------------------------------------------- parallel text


def split_parallel_spec(spec: str | Path) -> tuple[str, str] | None:
    """``"train.en+train.de"`` -> ``("train.en", "train.de")``; None for anything else.

    A spec that is itself an existing file (a name that contains ``+``) is not split.
    """
    text = str(spec)
    if "+" not in text or Path(text).exists():
        return None
    parts = [part.strip() for part in text.split("+")]
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def _lines(text: str) -> list[str]:
    """Lines split by ``readers.split_lines`` (a caption may hold U+2028 or U+0085, which ``splitlines``
    would also split on, shifting the alignment); a final newline ends the last line."""
    return split_lines(text)


def _name(path: str | Path) -> str:
    return "<stdin>" if str(path) == "-" else str(path)


def _empty_lines(name: str, lines: list[str], side: str, problems: Problems) -> None:
    for i, line in enumerate(lines, 1):
        if not line.strip():
            problems.add(f"{name}:{i}: empty {side} line, expected one sentence on every line")


def read_parallel(
    source_path: str | Path,
    target_path: str | Path | None,
    *,
    labelled: bool = True,
    encoding: str = "utf-8",
    max_errors: int = 20,
) -> list[Pair]:
    """Read parallel text files, one sentence per line: line *i* of the target translates line *i* of the
    source (``train.en`` + ``train.de``). Lines are split on ``\\n``; a final newline does not start an
    empty last line. ``Pair.where`` is the source file's ``PATH:LINE``.

    With ``labelled=False`` only the source file is read (``target_path`` may be None).

    Raises:
        ConfigError: labelled data without a target file.
        DataError: a line-count mismatch (naming the longer file and by how much), every empty line of
            either file (located in that file), an empty file, a missing or undecodable file.
    """
    if labelled and target_path is None:
        raise ConfigError(
            f"{source_path}: no target file, expected a target file for labelled parallel data "
            f"(give both as 'train.en+train.de')"
        )
    source_name = _name(source_path)
    sources = _lines(read_text_source(source_path, encoding))
    problems = Problems(max_errors)
    if not sources:
        problems.add(f"{source_name}: no lines, expected one sentence per line")
    if not labelled or target_path is None:
        _empty_lines(source_name, sources, "source", problems)
        problems.raise_if_any()
        return [Pair(s, [], f"{source_name}:{i}") for i, s in enumerate(sources, 1)]
    target_name = _name(target_path)
    targets = _lines(read_text_source(target_path, encoding))
    if len(targets) != len(sources):
        (longer, n_long), (shorter, n_short) = sorted(
            [(source_name, len(sources)), (target_name, len(targets))], key=lambda named: -named[1]
        )
        problems.add(
            f"{longer}: {n_long:,} lines, {n_long - n_short:,} more than {shorter} ({n_short:,}); "
            f"expected one target line per source line"
        )
    _empty_lines(source_name, sources, "source", problems)
    _empty_lines(target_name, targets, "target", problems)
    problems.raise_if_any()
    return [
        Pair(s, [t], f"{source_name}:{i}") for i, (s, t) in enumerate(zip(sources, targets, strict=True), 1)
    ]


# ---------------------------------------------------------------------------------------------- SQuAD


def check_template(template: str) -> None:
    """Raise a ConfigError unless ``template`` is a format string over question, context and title only,
    with at least ``{question}``."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"task.template: {exc}; write {{{{ and }}}} for literal braces") from None
    fields = ", ".join(TEMPLATE_FIELDS)
    for name in names:
        if name not in TEMPLATE_FIELDS:
            raise ConfigError(f"task.template: unknown field {{{name}}}; fields: {fields}")
    if "question" not in names:
        raise ConfigError(f"task.template: no {{question}} field in {template!r}; fields: {fields}")


def pairs_from_squad(
    path: str | Path,
    *,
    template: str = "question: {question} context: {context}",
    labelled: bool = True,
    encoding: str = "utf-8",
    max_errors: int = 20,
) -> tuple[list[Pair], int]:
    """SQuAD JSON as abstractive QA: ``(pairs, skipped)``, one pair per answerable question.

    The source is ``template.format(question=..., context=..., title=...)`` (title ``""`` when the article
    has none); the targets are the distinct gold answer texts, in order. Unanswerable (SQuAD v2
    ``is_impossible``) questions have no target text and are skipped; ``skipped`` counts them, for the
    caller to report. With ``labelled=False`` every question is kept with ``targets == []``.

    Raises:
        ConfigError: a template with an unknown field, without ``{question}``, or with unbalanced braces.
        DataError: every located problem of the file (see ``read_squad``), or no answerable question.
    """
    check_template(template)
    pairs: list[Pair] = []
    skipped = 0
    for record in read_squad(path, labelled=labelled, encoding=encoding, max_errors=max_errors):
        if labelled and not record.answers:
            skipped += 1
            continue
        source = template.format(question=record.question, context=record.context, title=record.title or "")
        targets = list(dict.fromkeys(text for text, _ in record.answers))
        pairs.append(Pair(source, targets, record.where, record.id))
    if not pairs:
        raise DataError(
            [f"{path}: no answerable questions ({skipped:,} unanswerable skipped), expected at least one"]
        )
    return pairs, skipped
