"""Search over an embedding matrix: exact inner product and approximate FAISS indexes (HNSW, IVF).

Exact search computes every inner product with the stored float32 matrix. Fewer than ``KNN_BATCH`` queries
go through numpy (a BLAS product in blocks of at most ``SCORE_BLOCK`` scores, then a partial sort: measured
here 4 ms for one query over 100,000 vectors on 2 BLAS threads, 5.4 ms on one, against 8-15 ms for FAISS's
flat search); larger batches
through ``faiss.knn`` (BLAS product fused with a heap: 0.35 ms a query at 1,000 queries, against 0.8-0.9
ms with numpy). Equal scores rank by row; no copy of the matrix is made.

Fewer than ``SMALL_BATCH`` queries search on one thread: numpy's BLAS product (exact) and FAISS (which
parallelizes over queries only). A query embedded by torch and then searched by another thread pool (numpy's
OpenBLAS threads, FAISS's own OpenMP runtime) makes two pools take turns on the cores, each spinning while the
other works: on 2 cores, embedding a query and searching HNSW with FAISS's 2 threads took 14.7 ms p50
against 7.9 ms with one thread.

Approximate indexes use inner product (= cosine on normalized vectors) and map FAISS ids to rows
(``IndexIDMap``). Their recall@10 is measured when they are built, on real held-out queries: a random sample
of the documents (up to ``RECALL_SAMPLE``, at most a tenth) is inserted last, and before it is inserted,
each sampled document searches the index of the others and is compared with exact search over the same
others. (Searching for documents already in the graph overestimates recall: on 20,000 MiniLM sentence
vectors, HNSW efSearch 16 scored 0.988 that way but 0.931 for unseen queries.) Where the user did not fix
``ef_search`` (HNSW) or ``nprobe`` (IVF), the smallest value of a ladder that reaches ``TARGET_RECALL`` is
kept, with a margin of two standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from taskhead.errors import RetrievalError

KINDS = ("exact", "hnsw", "ivf")
SCORE_BLOCK = 1 << 24  # scores held at once by numpy exact search (64 MiB of float32)
KNN_BATCH = 256  # from this many queries on, exact search uses faiss.knn
SMALL_BATCH = 16  # fewer queries search on one BLAS / FAISS thread (see the module docstring)
_BLAS: Any = None  # threadpoolctl.ThreadpoolController, made on first use
TARGET_RECALL = 0.98
RECALL_K = 10
RECALL_SAMPLE = 1000
EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
HNSW_DEFAULTS = {"M": 32, "ef_construction": 200}
PARAMS = {"exact": set(), "hnsw": {"M", "ef_construction", "ef_search"}, "ivf": {"nlist", "nprobe"}}


def load_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise RetrievalError(
            "approximate indexes (hnsw, ivf) need FAISS: pip install faiss-cpu (exact search does not)"
        ) from None
    return faiss


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of each query with ``vectors``: ``(scores, rows)``, best first.

    Both arrays are ``(len(queries), min(k, len(vectors)))``; ties rank by row number.
    """
    n = len(vectors)
    k = min(k, n)
    if len(queries) >= KNN_BATCH and 0 < k < n:
        try:
            import faiss
        except ImportError:
            pass
        else:
            scores, rows = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
            return _ordered(scores, rows.astype(np.int64, copy=False))
    scores_out = np.empty((len(queries), k), dtype=np.float32)
    rows_out = np.empty((len(queries), k), dtype=np.int64)
    if k == 0:
        return scores_out, rows_out
    step = max(1, SCORE_BLOCK // n)
    for start in range(0, len(queries), step):
        block = _inner_products(queries[start : start + step], vectors)
        if k < n:
            top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(n), block.shape).copy()
        scores, rows = _ordered(np.take_along_axis(block, top, axis=1), top)
        scores_out[start : start + step], rows_out[start : start + step] = scores, rows
    return scores_out, rows_out


def _inner_products(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``queries @ vectors.T``, on one BLAS thread for fewer than ``SMALL_BATCH`` queries (see above)."""
    if len(queries) >= SMALL_BATCH:
        return queries @ vectors.T
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return queries @ vectors.T
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"):
        return queries @ vectors.T


@contextmanager
def faiss_threads(n_queries: int) -> Iterator[None]:
    """One FAISS thread for fewer than ``SMALL_BATCH`` queries, FAISS's setting otherwise."""
    if n_queries >= SMALL_BATCH:
        yield
        return
    faiss = load_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _ordered(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((rows, -scores), axis=1)  # score descending, then row ascending
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


@dataclass
class Approximate:
    """A FAISS index whose ids are rows of the stored matrix, and how it was set up."""

    kind: str
    index: Any  # faiss.IndexIDMap around the HNSW / IVF index
    params: dict[str, Any]  # M, ef_construction, ef_search / nlist, nprobe; tuned: whether set by tune()
    recall_queries: int = 0  # held-out queries behind the last recall measurement

    @property
    def inner(self) -> Any:
        return load_faiss().downcast_index(self.index.index)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.index.ntotal)
        if k == 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        with faiss_threads(len(queries)):
            scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, rows.astype(np.int64, copy=False)

    def set_search_param(self, value: int) -> None:
        if self.kind == "hnsw":
            self.inner.hnsw.efSearch = int(value)
            self.params["ef_search"] = int(value)
        else:
            self.inner.nprobe = int(value)
            self.params["nprobe"] = int(value)

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), rows.astype(np.int64))


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validated FAISS parameters for ``kind`` (unknown names and bad values raise RetrievalError)."""
    if kind not in KINDS:
        raise RetrievalError(f"kind: expected one of {', '.join(KINDS)}, found {kind!r}")
    unknown = sorted(set(params) - PARAMS[kind])
    if unknown:
        raise RetrievalError(
            f"index parameters {', '.join(unknown)} do not apply to kind {kind!r} "
            f"(it takes: {', '.join(sorted(PARAMS[kind])) or 'none'})"
        )
    for name, value in params.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise RetrievalError(f"{name}: expected a positive integer, found {value!r}")
    return {k: v for k, v in params.items() if v is not None}


def build_approximate(
    kind: str, vectors: np.ndarray, params: dict[str, Any], *, seed: int = 0
) -> tuple[Approximate, float]:
    """An HNSW or IVF index over all rows of ``vectors``, its search parameter set (given or tuned), and
    its recall@10 measured on held-out rows as described in the module docstring."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    approx = _empty_hnsw(data, params) if kind == "hnsw" else _empty_ivf(data, params)
    fixed = params.get(_param_name(kind))
    approx.params["tuned"] = fixed is None
    approx.set_search_param(fixed or (64 if kind == "hnsw" else 1))
    recall = add_measured(approx, data, start=0, seed=seed)
    return approx, 1.0 if recall is None else recall  # None: a single document, found by any search


def add_measured(approx: Approximate, vectors: np.ndarray, *, start: int, seed: int = 0) -> float | None:
    """Insert rows ``start`` onwards of ``vectors`` (the rows before are in the index already), holding a
    sample of the new rows back as queries to measure recall@10 before they go in; retune the search
    parameter if it was tuned. Returns the recall, or None when no row could be held back."""
    n = len(vectors)
    new = np.arange(start, n)
    if start == 0:  # building: hold back a tenth, up to RECALL_SAMPLE
        size = min(RECALL_SAMPLE, max(1, n // 10)) if n >= 2 else 0
    else:  # adding: the new rows against the index as it was
        size = min(RECALL_SAMPLE, len(new))
    rng = np.random.default_rng(seed)
    held_out = np.sort(rng.choice(new, size=size, replace=False)) if size else new[:0]
    first = np.setdiff1d(new, held_out)
    if len(first):
        approx.add(vectors[first], first)
    if not len(held_out):
        return None
    base = np.setdiff1d(np.arange(n), held_out)
    fixed = None if approx.params.get("tuned") else approx.params.get(_param_name(approx.kind))
    recall = tune(approx, RecallProbe(vectors, held_out, base), fixed)
    approx.add(vectors[held_out], held_out)
    approx.recall_queries = len(held_out)
    return recall


def _param_name(kind: str) -> str:
    return "ef_search" if kind == "hnsw" else "nprobe"


def _empty_hnsw(data: np.ndarray, params: dict[str, Any]) -> Approximate:
    faiss = load_faiss()
    p = {**HNSW_DEFAULTS, **params}
    inner = faiss.IndexHNSWFlat(data.shape[1], int(p["M"]), faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = int(p["ef_construction"])
    return Approximate(
        "hnsw", faiss.IndexIDMap(inner), {"M": p["M"], "ef_construction": p["ef_construction"]}
    )


def _empty_ivf(data: np.ndarray, params: dict[str, Any]) -> Approximate:
    faiss = load_faiss()
    n, dim = data.shape
    nlist = int(params.get("nlist") or default_nlist(n))
    if nlist > n:
        raise RetrievalError(f"nlist: {nlist} clusters need at least as many documents; the index has {n}")
    inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    inner.cp.min_points_per_centroid = 1  # small corpora: no warning about few training points
    inner.train(data)
    return Approximate("ivf", faiss.IndexIDMap(inner), {"nlist": nlist})


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) clusters, with at least 39 training points each (FAISS's own minimum advice)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


class RecallProbe:
    """Exact top-k lists of held-out query rows over the other rows, computed once and compared with any
    number of settings of an approximate index that holds only the other rows."""

    def __init__(self, vectors: np.ndarray, query_rows: np.ndarray, base_rows: np.ndarray, k: int = RECALL_K):
        self.k = k
        self.queries = vectors[query_rows]
        rows = exact_search(vectors[base_rows], self.queries, k)[1]
        self.truth = base_rows[rows] if len(base_rows) else rows

    def per_query(self, approx: Approximate) -> np.ndarray:
        """Each query's share of its exact top-k that ``approx`` also returns in its top k."""
        if not len(self.queries) or not self.truth.shape[1]:
            return np.ones(len(self.queries))
        found = approx.search(self.queries, self.k)[1]
        hits = [len(set(t) & set(f[f >= 0])) for t, f in zip(self.truth, found, strict=True)]
        return np.asarray(hits, dtype=np.float64) / self.truth.shape[1]

    def recall(self, approx: Approximate) -> float:
        """Mean recall@k over the queries (1.0 without queries)."""
        values = self.per_query(approx)
        return float(values.mean()) if len(values) else 1.0


def tune(approx: Approximate, probe: RecallProbe, fixed: int | None) -> float:
    """Set the search parameter and return the mean recall@10 measured with it.

    The parameter is ``fixed``, or the smallest value on the ladder whose recall reaches TARGET_RECALL
    with a margin of two standard errors of the mean (the held-out queries are a sample, and a value that
    only just reaches the target on them can fall below it on new queries), else the best one.
    """
    if fixed is not None:
        approx.set_search_param(fixed)
        return probe.recall(approx)
    if approx.kind == "hnsw":
        ladder: list[int] = list(EF_LADDER)
    else:
        nlist = approx.params["nlist"]
        ladder = sorted({min(nlist, 2**i) for i in range(int(math.log2(nlist)) + 2)})
    best_value, best_recall = ladder[-1], -1.0
    for value in ladder:
        approx.set_search_param(value)
        values = probe.per_query(approx)
        recall = float(values.mean()) if len(values) else 1.0
        margin = 2 * float(values.std()) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        if recall > best_recall:
            best_value, best_recall = value, recall
        if recall - margin >= TARGET_RECALL:
            return recall
    approx.set_search_param(best_value)
    return best_recall
