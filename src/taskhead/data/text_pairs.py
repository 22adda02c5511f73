"""Reading data for embedding models: pairs, triplets, labelled pairs and scored pairs.

What a file holds is told by its columns (explicit ``data.columns`` settings, else the default names):

| kind       | columns                                    | a JSON Lines record                              |
|------------|--------------------------------------------|--------------------------------------------------|
| `scored`   | anchor, positive, score (0-1 or 0-5)       | `{"anchor": .., "positive": .., "score": 4.2}`   |
| `triplets` | anchor, positive, negative[, negative_2..] | `{"anchor": .., "positive": .., "negative": ..}` |
| `labelled` | anchor, positive, label (0 or 1)           | `{"anchor": .., "positive": .., "label": 1}`     |
| `pairs`    | anchor, positive                           | `{"anchor": .., "positive": ..}`                 |

``text`` / ``text_pair`` stand in for ``anchor`` / ``positive`` when those columns are absent. Every record
becomes an example ``{"texts": [...], "kind": .., "score" | "label": ..}``; problems are located
(``file:line: column: problem``). No torch here: ``taskhead validate`` reads files without it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskhead.data.readers import Row, Table, read_data_table
from taskhead.data.validation import Problems, require_column, text_field
from taskhead.errors import DataError

if TYPE_CHECKING:
    from taskhead.config import ColumnsConfig, DataConfig

KIND_NAMES = {
    "scored": "scored pairs",
    "triplets": "triplets",
    "labelled": "labelled pairs",
    "pairs": "pairs",
}
DEFAULT_SCORE_LIMIT = 5.0  # the largest scale detected without task.score_max (STS: 0-5)


@dataclass
class Layout:
    """Which columns of a file hold what: the texts in order (anchor, positive, negatives...), and the
    score or label column of a pair."""

    kind: str
    texts: list[str] = field(default_factory=list)
    score: str | None = None
    label: str | None = None


def _explicit(columns: ColumnsConfig, name: str) -> Any:
    """A column setting other than its default (the column must then exist), or None (used when present).

    Compared with the default rather than ``model_fields_set``: a run's saved config sets every field.
    """
    value = getattr(columns, name)
    return None if value == type(columns).model_fields[name].default else value


def _first_present(table: Table, *names: str | int | None) -> str | None:
    return next((str(n) for n in names if n is not None and str(n) in table.columns), None)


def _negative_number(name: str) -> int:
    return 1 if name == "negative" else int(name.rsplit("_", 1)[1])


def _negatives(table: Table, columns: ColumnsConfig, problems: Problems) -> list[str]:
    given = columns.negative
    if given is not None:
        names = given if isinstance(given, list) else [given]
        found = [require_column(table, n, "data.columns.negative", problems) for n in names]
        return [n for n in found if n is not None]
    auto = [c for c in table.columns if c == "negative" or re.fullmatch(r"negative_\d+", c)]
    return sorted(auto, key=_negative_number)


def resolve_layout(table: Table, columns: ColumnsConfig, problems: Problems, *, labelled: bool) -> Layout:
    """The layout of ``table``: explicit column settings must exist; default names are used when present."""
    anchor = _explicit(columns, "anchor")
    first = (
        require_column(table, anchor, "data.columns.anchor", problems)
        if anchor is not None
        else require_column(
            table, _first_present(table, "anchor") or columns.text, "data.columns.anchor", problems
        )
    )
    positive = _explicit(columns, "positive")
    second = (
        require_column(table, positive, "data.columns.positive", problems)
        if positive is not None
        else _first_present(table, "positive", columns.text_pair, "text_pair")
    )
    texts = [t for t in (first, second) if t is not None]
    if not labelled:
        return Layout("pairs" if second else "texts", texts)
    score_setting, label_setting = _explicit(columns, "score"), _explicit(columns, "label")
    score = (
        require_column(table, score_setting, "data.columns.score", problems)
        if score_setting is not None
        else _first_present(table, "score")
    )
    label = (
        require_column(table, label_setting, "data.columns.label", problems)
        if label_setting is not None
        else _first_present(table, columns.label)
    )
    negatives = _negatives(table, columns, problems)
    if first is not None and second is None and table.rows:
        wanted = "positive" if positive is None else str(positive)
        problems.add(
            f"{table.path}: no second text column ({wanted!r} or 'text_pair'; columns: "
            f"{', '.join(table.columns)}); embedding data holds pairs, triplets, or pairs with a score or a "
            f"0/1 label: set data.columns.positive to the column of the second text"
        )
    if score is not None:
        return Layout("scored", texts, score=score)
    if negatives:
        return Layout("triplets", texts + negatives)
    if label is not None:
        return Layout("labelled", texts, label=label)
    return Layout("pairs", texts)


def parse_score(table: Table, row: Row, column: str, limit: float, problems: Problems) -> float | None:
    """A finite score from 0 to ``limit`` (a number, or a numeric string in CSV/TSV), or a located problem."""
    value: Any = row.values.get(column)
    where = f"{table.loc(row)}: {column}"
    if isinstance(value, str) and value.strip():
        try:
            value = float(value)
        except ValueError:
            problems.add(f"{where}: expected a number (the pair's similarity score), found {value!r}")
            return None
    if value is None or value == "":
        problems.add(f"{where}: missing score; expected a number from 0 to {limit:g}")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.add(f"{where}: expected a number (the pair's similarity score), found {value!r}")
        return None
    if not 0 <= value <= limit:
        problems.add(
            f"{where}: {value:g} is out of range; expected a score from 0 to {limit:g} "
            f"(task.score_max sets the top of the scale)"
        )
        return None
    return float(value)


def parse_binary(table: Table, row: Row, column: str, problems: Problems) -> int | None:
    """A pair label 0 or 1 (an integer, 0.0/1.0, or the strings "0"/"1"), or a located problem."""
    value: Any = row.values.get(column)
    text = (
        str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    )
    if text in ("0", "1", "0.0", "1.0"):
        return int(float(text))
    problems.add(
        f"{table.loc(row)}: {column}: expected 0 or 1 (the pair is dissimilar or similar), found {value!r}; "
        f"for similarity scores set data.columns.score={column}"
    )
    return None


def read_text_groups(
    path: str | Path, data: DataConfig, *, labelled: bool, score_limit: float | None = None
) -> list[dict[str, Any]]:
    """Read and validate one embedding data file; raises DataError listing every located problem.

    Unlabelled (prediction input): single texts, or pairs when a second text column is present.
    """
    cols = data.columns
    table = read_data_table(path, data, text_column=str(_explicit(cols, "anchor") or cols.text))
    problems = Problems(data.max_errors)
    layout = resolve_layout(table, cols, problems, labelled=labelled)
    id_col = str(cols.id) if cols.id is not None and str(cols.id) in table.columns else None
    problems.raise_if_any()
    if not table.rows:
        raise DataError([f"{table.path}: no records; expected at least one"])
    limit = score_limit if score_limit is not None else DEFAULT_SCORE_LIMIT
    examples = []
    for row in table.rows:
        ex: dict[str, Any] = {"_where": table.loc(row)}
        if id_col is not None and row.values.get(id_col) is not None:
            ex["id"] = row.values[id_col]
        columns = layout.texts
        if not labelled and len(columns) == 2 and row.values.get(columns[1]) is None:
            columns = columns[:1]  # prediction input may mix texts and pairs (JSON Lines)
        ex["texts"] = [text_field(table, row, column, problems) for column in columns]
        if labelled:
            ex["kind"] = layout.kind
        if labelled and layout.score is not None:
            ex["score"] = parse_score(table, row, layout.score, limit, problems)
        if labelled and layout.label is not None:
            ex["label"] = parse_binary(table, row, layout.label, problems)
        examples.append(ex)
    problems.raise_if_any()
    return examples
