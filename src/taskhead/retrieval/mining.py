"""Hard-negative mining: (anchor, positive) pairs + a corpus -> (anchor, positive, negative) triplets.

For each anchor the index retrieves its nearest documents; the candidates ranked ``range_min + 1`` to
``range_max`` (ranks counted from 1, as sentence-transformers' ``mine_hard_negatives`` does) are scanned best
first, and a candidate is dropped when

- its text equals the anchor or any positive of that anchor (after stripping whitespace), or
- its score is above ``positive_score * margin`` (with ``positive_score`` the similarity of the anchor and
  this pair's positive): so close to the anchor that it is likely an unlabelled positive. ``margin=None``
  keeps them. The rule assumes cosine-like scores, where the positive's score is above 0.

The first ``negatives`` candidates left become one triplet each. Pairs with fewer candidates left give fewer
triplets; the statistics count them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from taskhead.errors import DataError, RetrievalError

if TYPE_CHECKING:
    from taskhead.retrieval.index import Index


@dataclass
class MiningResult:
    triplets: list[dict[str, str]] = field(default_factory=list)
    pairs: int = 0
    short: int = 0  # pairs that got fewer than the requested negatives
    dropped_positive: int = 0  # candidates equal to the anchor or one of its positives
    dropped_margin: int = 0  # candidates scored above positive_score * margin


def read_pairs(
    path: str | Path, *, anchor_column: str = "anchor", positive_column: str = "positive"
) -> list[tuple[str, str]]:
    """(anchor, positive) text pairs from a CSV/TSV (with header) or JSON Lines file."""
    from taskhead.data.readers import read_table

    table = read_table(path)
    missing = [c for c in (anchor_column, positive_column) if c not in table.columns]
    if missing or not table.rows:
        found = ", ".join(table.columns) or "none"
        raise DataError(
            [
                f"{table.path}: expected columns {anchor_column!r} and {positive_column!r} "
                f"(found: {found}); choose them with --anchor-column / --positive-column"
            ]
        )
    pairs, problems = [], []
    for row in table.rows:
        texts = [row.values.get(anchor_column), row.values.get(positive_column)]
        for column, text in zip((anchor_column, positive_column), texts, strict=True):
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{table.loc(row)}: {column}: expected a non-empty string, found {text!r}")
        pairs.append((str(texts[0]), str(texts[1])))
    if problems:
        raise DataError(problems[:20], total=len(problems))
    return pairs


def mine_triplets(
    pairs: Sequence[tuple[str, str]],
    index: Index,
    *,
    negatives: int = 1,
    range_min: int = 0,
    range_max: int = 50,
    margin: float | None = 0.95,
) -> MiningResult:
    """Triplets ``{"anchor", "positive", "negative"}`` with negatives retrieved from ``index``."""
    if negatives < 1:
        raise RetrievalError(f"negatives: expected a positive integer, found {negatives}")
    if not 0 <= range_min < range_max:
        raise RetrievalError(
            f"range_min / range_max: expected 0 <= range_min < range_max, found {range_min} / {range_max}"
        )
    if margin is not None and margin <= 0:
        raise RetrievalError(f"margin: expected a positive number (or none), found {margin}")
    anchors = list(dict.fromkeys(a for a, _ in pairs))
    positives = list(dict.fromkeys(p for _, p in pairs))
    anchor_vecs = index.encoder.encode(anchors)
    positive_vecs = index.encoder.encode(positives)
    a_row = {a: i for i, a in enumerate(anchors)}
    p_row = {p: i for i, p in enumerate(positives)}
    own: dict[str, set[str]] = {}
    for a, p in pairs:
        own.setdefault(a, {a.strip()}).add(p.strip())
    scores, rows = index.search_raw(anchor_vecs, range_max)
    result = MiningResult(pairs=len(pairs))
    for a, p in pairs:
        i = a_row[a]
        limit = None if margin is None else float(anchor_vecs[i] @ positive_vecs[p_row[p]]) * margin
        found = _pick(index, scores[i, range_min:], rows[i, range_min:], own[a], limit, negatives, result)
        result.triplets += [{"anchor": a, "positive": p, "negative": n} for n in found]
        result.short += len(found) < negatives
    return result


def _pick(
    index: Index,
    scores: np.ndarray,
    rows: np.ndarray,
    excluded: set[str],
    limit: float | None,
    wanted: int,
    result: MiningResult,
) -> list[str]:
    picked: list[str] = []
    for score, row in zip(scores, rows, strict=True):
        if row < 0 or len(picked) == wanted:
            break
        text = index.texts[int(row)]
        if text.strip() in excluded:
            result.dropped_positive += 1
        elif limit is not None and score > limit:
            result.dropped_margin += 1
        else:
            picked.append(text)
    return picked


def summary(result: MiningResult, negatives: int) -> dict[str, Any]:
    return {
        "pairs": result.pairs,
        "triplets": len(result.triplets),
        f"pairs with fewer than {negatives} negatives": result.short,
        "candidates dropped as positives / duplicates": result.dropped_positive,
        "candidates dropped by the margin": result.dropped_margin,
    }
