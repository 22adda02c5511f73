"""Retrieval metrics per query and their means, as ``trec_eval`` / ``pytrec_eval`` define them (the
definitions BEIR reports).

A *ranking* is a list of document ids, best first (a repeated id counts at its first rank only). The
*judgements* of a query map document ids to relevance grades; a document is relevant when its grade is
above 0 (grades of 0 or below, such as Cranfield's -1, and unjudged documents are not relevant).

- ``recall@k``: relevant documents in the top k / all relevant documents of the query.
- ``precision@k``: relevant documents in the top k / k (k, not the number returned).
- ``mrr@k``: 1 / rank of the first relevant document in the top k, else 0.
- ``ndcg@k``: graded: DCG@k = sum over ranks i <= k of grade_i / log2(i + 1) (linear gain, as trec_eval's
  ``ndcg_cut`` and therefore BEIR), divided by the DCG@k of the ideal order of all the query's grades.
- ``map@k``: average precision: the sum of precision@i over the ranks i <= k that hold a relevant document,
  divided by the number of relevant documents; ``k=None`` uses the whole ranking (trec_eval's ``map``).

``evaluate`` averages over the judged queries that have at least one relevant document (others cannot be
scored); a judged query missing from the run scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_KS = (1, 3, 5, 10, 100)


def _top(ranking: Sequence[str], k: int | None) -> list[str]:
    seen: dict[str, None] = {}
    for doc in ranking:
        if k is not None and len(seen) >= k:
            break
        seen.setdefault(doc, None)
    return list(seen)


def _relevant(judgements: Mapping[str, float]) -> set[str]:
    return {doc for doc, grade in judgements.items() if grade > 0}


def recall_at_k(ranking: Sequence[str], judgements: Mapping[str, float], k: int) -> float:
    relevant = _relevant(judgements)
    if not relevant:
        return 0.0
    return sum(doc in relevant for doc in _top(ranking, k)) / len(relevant)


def precision_at_k(ranking: Sequence[str], judgements: Mapping[str, float], k: int) -> float:
    relevant = _relevant(judgements)
    return sum(doc in relevant for doc in _top(ranking, k)) / k


def reciprocal_rank(ranking: Sequence[str], judgements: Mapping[str, float], k: int = 10) -> float:
    relevant = _relevant(judgements)
    for rank, doc in enumerate(_top(ranking, k), 1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranking: Sequence[str], judgements: Mapping[str, float], k: int = 10) -> float:
    gains = [max(float(judgements.get(doc, 0)), 0.0) for doc in _top(ranking, k)]
    ideal = sorted((float(g) for g in judgements.values() if g > 0), reverse=True)[:k]
    best = _dcg(ideal)
    return _dcg(gains) / best if best > 0 else 0.0


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, 1))


def average_precision(ranking: Sequence[str], judgements: Mapping[str, float], k: int | None = None) -> float:
    relevant = _relevant(judgements)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for rank, doc in enumerate(_top(ranking, k), 1):
        if doc in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


def query_metrics(
    ranking: Sequence[str],
    judgements: Mapping[str, float],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    depth: int = 100,
) -> dict[str, float]:
    """All metrics of one query: ndcg@10, mrr@10, map@depth, recall@k and precision@k for each k."""
    out = {
        "ndcg@10": ndcg_at_k(ranking, judgements, 10),
        "mrr@10": reciprocal_rank(ranking, judgements, 10),
        f"map@{depth}": average_precision(ranking, judgements, depth),
    }
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranking, judgements, k)
    for k in ks:
        out[f"precision@{k}"] = precision_at_k(ranking, judgements, k)
    return out


def evaluate(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    depth: int = 100,
) -> dict[str, Any]:
    """Per-query metrics and their means over the judged queries with a relevant document.

    Returns:
        ``{"mean": {metric: value}, "per_query": {query_id: {metric: value}}, "queries": n,
        "without_relevant": [query ids skipped], "missing_from_run": [query ids scored 0]}``
    """
    per_query: dict[str, dict[str, float]] = {}
    skipped, missing = [], []
    for qid, judgements in qrels.items():
        if not _relevant(judgements):
            skipped.append(qid)
            continue
        if qid not in run:
            missing.append(qid)
        per_query[qid] = query_metrics(run.get(qid, []), judgements, ks=ks, depth=depth)
    names = list(next(iter(per_query.values()))) if per_query else []
    mean = {name: sum(m[name] for m in per_query.values()) / len(per_query) for name in names}
    return {
        "mean": mean,
        "per_query": per_query,
        "queries": len(per_query),
        "without_relevant": skipped,
        "missing_from_run": missing,
    }
