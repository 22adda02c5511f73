"""Retrieval speed and quality: taskhead's Encoder and Index against sentence-transformers on one corpus.

The corpus pools real sentences from ../shared/datasets (SST-2 train, GoEmotions train, Multi30k train (en),
AG News test (title + description), SNLI dev/test premises and hypotheses, SICK, STS-B train, TREC
questions, SQuAD dev contexts and SciTLDR abstracts split into sentences, WikiText-2 paragraphs split into
sentences), keeps texts of at least 4 words, removes duplicates (case and whitespace folded), shuffles them
with random.Random(0) and takes the first --docs as documents and the next --queries as held-out queries.
The model is MiniLM (the bundled all-MiniLM-L6-v2, cosine).

Measured in one process, with --threads torch, FAISS and BLAS threads (default 2):

- embedding throughput on the first --embed-docs documents (default 20,000; all when --docs is smaller):
  sentence-transformers `model.encode(batch_size=32)` (its defaults: fp32) against taskhead's Encoder
  (its defaults: batch 64, token-length-sorted batches, bf16 autocast where the CPU has native bf16),
  interleaved for --repeats rounds; the cosine of each taskhead vector with sentence-transformers' vector;
- index build: embedding the whole corpus with taskhead, the exact index, the HNSW index (FAISS add) and
  the tuning of efSearch (measured recall on 1,000 sampled documents); save and load times, sizes on disk;
- memory: resident set size (RSS) after each stage;
- single-query latency p50 / p99 over the held-out queries, one at a time: search with a precomputed query
  vector (exact, HNSW, and sentence-transformers' `util.semantic_search` on the same vectors as a torch
  tensor), and the whole query from text (taskhead `Index.search(text)`; peer: `model.encode(text)` +
  `util.semantic_search`);
- batch query throughput: all held-out queries in one call, with and without embedding them;
- recall@10 of HNSW against exact search on the held-out queries (and the overlap of semantic_search's
  top 10 with taskhead's exact top 10, which should be 1.0).

Targets (issue 6): embedding >= 1.5x sentence-transformers encode with cosine >= 0.999; HNSW p50 <= 0.2 ms
without the query embedding at recall@10 >= 0.98; a whole query with its embedding <= 10 ms p50 on 2 cores.

    .venv/bin/python benchmarks/retrieval_bench.py --json /tmp/retrieval.json   # 100,000 documents
    .venv/bin/python benchmarks/retrieval_bench.py --docs 5000                  # smoke test
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")


# ----------------------------------------------------------------------------------------------- corpus


def _lines(*parts: str, encoding: str = "utf-8") -> list[str]:
    path = DATA.joinpath(*parts)
    return path.read_text(encoding=encoding).splitlines() if path.is_file() else []


def _tsv(*parts: str, quoting: int = csv.QUOTE_NONE) -> list[list[str]]:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        return []
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8")), delimiter="\t", quoting=quoting))


def _sources() -> Iterator[tuple[str, str]]:
    for row in _tsv("sst2", "train.tsv")[1:]:
        yield "sst2", row[0]
    for row in _tsv("goemotions", "train.tsv", quoting=csv.QUOTE_MINIMAL):
        yield "goemotions", row[0]
    for line in _lines("multi30k", "train.en"):
        yield "multi30k", line
    agnews = DATA / "ag_news" / "test.csv"
    if agnews.is_file():
        for row in csv.reader(io.StringIO(agnews.read_text(encoding="utf-8"))):
            yield "ag_news", f"{row[1]}. {row[2].replace(chr(92), ' ')}"
    for name in ("s1.dev", "s2.dev", "s1.test", "s2.test"):
        for line in _lines("snli_senteval", name):
            yield "snli", line
    for row in _tsv("sick", "SICK.txt")[1:]:
        yield "sick", row[1]
        yield "sick", row[2]
    for row in _tsv("stsb", "sts-train.csv"):
        if len(row) >= 7:
            yield "stsb", row[5]
            yield "stsb", row[6]
    for line in _lines("trec", "train_5500.label", encoding="latin-1"):
        yield "trec", line.partition(" ")[2]
    squad = DATA / "squad" / "dev-v1.1.json"
    if squad.is_file():
        for article in json.loads(squad.read_text(encoding="utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                for sentence in SENTENCE_END.split(paragraph["context"]):
                    yield "squad", sentence
    for line in _lines("scitldr", "train.jsonl"):
        for sentence in json.loads(line)["source"]:
            yield "scitldr", sentence
    for name in ("wiki.valid.tokens", "wiki.test.tokens"):
        for line in _lines("wikitext2", name):
            if line.strip() and not line.strip().startswith("="):
                for sentence in SENTENCE_END.split(line.strip()):
                    yield "wikitext2", sentence


def pool_sentences(min_words: int = 4) -> tuple[list[str], dict[str, int]]:
    """Unique texts of at least ``min_words`` words, shuffled with Random(0); texts kept per source."""
    seen: set[str] = set()
    texts: list[str] = []
    counts: dict[str, int] = {}
    for source, text in _sources():
        text = " ".join(text.split())
        key = text.lower()
        if len(text.split()) < min_words or key in seen:
            continue
        seen.add(key)
        texts.append(text)
        counts[source] = counts.get(source, 0) + 1
    random.Random(0).shuffle(texts)
    return texts, counts


# ----------------------------------------------------------------------------------------------- helpers


def rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def latencies_ms(fn: Callable[[Any], Any], items: list[Any], warmup: int = 20) -> dict[str, float]:
    for item in items[:warmup]:
        fn(item)
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
        "mean_ms": statistics.fmean(times),
        "n": len(times),
    }


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir()) / 2**20


def overlap_at_10(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x[:10]) & set(y[:10])) / 10 for x, y in zip(a, b, strict=True)]))


# ----------------------------------------------------------------------------------------------- stages


def bench_embedding(st: Any, encoder: Any, texts: list[str], repeats: int) -> dict[str, Any]:
    """Interleaved rounds of sentence-transformers encode and taskhead's Encoder on the same texts."""
    st.encode(texts[:256], batch_size=32)  # warm-up: first-call costs, and taskhead's bf16 check
    encoder.encode(texts[:256])
    rounds = []
    ours = theirs = None
    for _ in range(repeats):
        theirs, t_st = timed(lambda: st.encode(texts, batch_size=32, convert_to_numpy=True))
        ours, t_ours = timed(lambda: encoder.encode(texts))
        rounds.append({"st_s": t_st, "taskhead_s": t_ours})
    cos = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    st_rate = len(texts) / statistics.fmean(r["st_s"] for r in rounds)
    our_rate = len(texts) / statistics.fmean(r["taskhead_s"] for r in rounds)
    return {
        "texts": len(texts),
        "rounds": rounds,
        "st_texts_per_s": st_rate,
        "taskhead_texts_per_s": our_rate,
        "ratio": our_rate / st_rate,
        "taskhead_precision": encoder.precision,
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "share_cosine_ge_0999": float(np.mean(cos >= 0.999)),
    }


def build_indexes(encoder: Any, docs: list[str], tmp: Path, memory: dict[str, float]) -> dict[str, Any]:
    from taskhead.retrieval.index import Index

    out: dict[str, Any] = {}
    vectors, out["embed_corpus_s"] = timed(lambda: encoder.encode(docs))
    out["embed_docs_per_s"] = len(docs) / out["embed_corpus_s"]
    memory["after embedding the corpus"] = rss_mb()
    exact, out["exact_build_s"] = timed(lambda: Index.from_vectors(vectors, docs, encoder))
    memory["after the exact index"] = rss_mb()
    hnsw, out["hnsw_build_and_tune_s"] = timed(
        lambda: Index.from_vectors(vectors, docs, encoder, kind="hnsw")
    )
    memory["after the HNSW index"] = rss_mb()
    out["hnsw_params"] = dict(hnsw.approx.params)
    out["hnsw_recall_at_10_sampled_docs"] = hnsw.recall
    for name, index in (("exact", exact), ("hnsw", hnsw)):
        _, out[f"{name}_save_s"] = timed(lambda index=index, name=name: index.save(tmp / name))
        _, out[f"{name}_load_s"] = timed(lambda name=name: Index.load(tmp / name, model=encoder))
        out[f"{name}_disk_mb"] = dir_mb(tmp / name)
    out["indexes"] = (exact, hnsw)
    return out


def bench_queries(st: Any, exact: Any, hnsw: Any, queries: list[str]) -> dict[str, Any]:
    import torch
    from sentence_transformers import util

    encoder = exact.encoder
    qvecs = encoder.encode(queries)
    corpus = torch.from_numpy(exact.vectors)
    single = [q[None, :] for q in qvecs]
    out: dict[str, Any] = {"queries": len(queries)}
    out["exact_vector"] = latencies_ms(lambda v: exact.search_vectors(v, k=10), single)
    out["hnsw_vector"] = latencies_ms(lambda v: hnsw.search_vectors(v, k=10), single)
    out["st_semantic_search_vector"] = latencies_ms(
        lambda v: util.semantic_search(torch.from_numpy(v), corpus, top_k=10), single
    )
    out["hnsw_text"] = latencies_ms(lambda q: hnsw.search(q, k=10), queries)
    out["exact_text"] = latencies_ms(lambda q: exact.search(q, k=10), queries)
    out["st_text"] = latencies_ms(
        lambda q: util.semantic_search(st.encode(q, convert_to_tensor=True), corpus, top_k=10), queries
    )
    batch: dict[str, float] = {}
    _, t = timed(lambda: exact.search_vectors(qvecs, k=10))
    batch["exact_vector_qps"] = len(queries) / t
    _, t = timed(lambda: hnsw.search_vectors(qvecs, k=10))
    batch["hnsw_vector_qps"] = len(queries) / t
    _, t = timed(lambda: util.semantic_search(torch.from_numpy(qvecs), corpus, top_k=10))
    batch["st_semantic_search_vector_qps"] = len(queries) / t
    _, t = timed(lambda: hnsw.search(queries, k=10))
    batch["hnsw_text_qps"] = len(queries) / t
    _, t = timed(lambda: util.semantic_search(st.encode(queries, convert_to_tensor=True), corpus, top_k=10))
    batch["st_text_qps"] = len(queries) / t
    out["batch"] = batch
    exact_rows = exact.search_raw(qvecs, 10)[1]
    hnsw_rows = hnsw.search_raw(qvecs, 10)[1]
    st_hits = util.semantic_search(torch.from_numpy(qvecs), corpus, top_k=10)
    st_rows = np.array([[h["corpus_id"] for h in row] for row in st_hits])
    out["hnsw_recall_at_10_queries"] = overlap_at_10(hnsw_rows, exact_rows)
    out["st_exact_overlap_at_10"] = overlap_at_10(st_rows, exact_rows)
    return out


# ----------------------------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> list[tuple[str, bool]]:
    emb, idx, q = results["embedding"], results["build"], results["queries"]
    print(f"\ncorpus: {results['docs']} documents, {q['queries']} held-out queries", end="; ")
    print(f"threads {results['threads']}")
    print(f"sources: {results['sources']}\n")
    rows = [
        ("embedding texts/s", emb["taskhead_texts_per_s"], emb["st_texts_per_s"], "taskhead / ST encode"),
        (
            "single query, vector, p50 ms",
            q["hnsw_vector"]["p50_ms"],
            q["st_semantic_search_vector"]["p50_ms"],
            "HNSW / ST semantic_search",
        ),
        (
            "single query, vector, p99 ms",
            q["hnsw_vector"]["p99_ms"],
            q["st_semantic_search_vector"]["p99_ms"],
            "HNSW / ST semantic_search",
        ),
        (
            "exact single query, vector, p50 ms",
            q["exact_vector"]["p50_ms"],
            q["st_semantic_search_vector"]["p50_ms"],
            "exact / ST semantic_search",
        ),
        (
            "whole query from text, p50 ms",
            q["hnsw_text"]["p50_ms"],
            q["st_text"]["p50_ms"],
            "HNSW / ST encode + semantic_search",
        ),
        ("whole query from text, p99 ms", q["hnsw_text"]["p99_ms"], q["st_text"]["p99_ms"], "HNSW / ST"),
        (
            "batch queries/s, vectors",
            q["batch"]["hnsw_vector_qps"],
            q["batch"]["st_semantic_search_vector_qps"],
            "HNSW / ST semantic_search",
        ),
        ("batch queries/s, from text", q["batch"]["hnsw_text_qps"], q["batch"]["st_text_qps"], "HNSW / ST"),
    ]
    print(f"{'measure':40} {'taskhead':>12} {'peer':>12} {'ratio':>8}  compared")
    for name, ours, peer, what in rows:
        print(f"{name:40} {ours:12.4f} {peer:12.4f} {ours / peer:8.2f}  {what}")
    print(
        f"\nembedding agreement with ST fp32 ({emb['taskhead_precision']}): "
        f"cosine min {emb['cosine_min']:.5f}, mean {emb['cosine_mean']:.6f}, "
        f"share >= 0.999: {emb['share_cosine_ge_0999']:.4f}"
    )
    print(
        f"build: embed corpus {idx['embed_corpus_s']:.1f} s ({idx['embed_docs_per_s']:.0f} docs/s), exact "
        f"{idx['exact_build_s']:.2f} s, HNSW build + tune {idx['hnsw_build_and_tune_s']:.1f} s "
        f"({idx['hnsw_params']}), recall@10 on sampled docs {idx['hnsw_recall_at_10_sampled_docs']:.4f}"
    )
    print(
        f"files: exact {idx['exact_disk_mb']:.1f} MB (save {idx['exact_save_s']:.2f} s, load "
        f"{idx['exact_load_s']:.2f} s), HNSW {idx['hnsw_disk_mb']:.1f} MB (save {idx['hnsw_save_s']:.2f} s, "
        f"load {idx['hnsw_load_s']:.2f} s)"
    )
    print("memory (RSS MB): " + ", ".join(f"{k} {v:.0f}" for k, v in results["memory"].items()))
    print(
        f"recall@10 of HNSW on held-out queries {q['hnsw_recall_at_10_queries']:.4f}; "
        f"ST semantic_search top-10 overlap with exact {q['st_exact_overlap_at_10']:.4f}\n"
    )
    checks = [
        (f"embedding >= 1.5x ST encode ({emb['ratio']:.2f}x)", emb["ratio"] >= 1.5),
        (f"embedding cosine with fp32 >= 0.999 (min {emb['cosine_min']:.5f})", emb["cosine_min"] >= 0.999),
        (
            f"HNSW p50 <= 0.2 ms without the query embedding ({q['hnsw_vector']['p50_ms']:.3f} ms)",
            q["hnsw_vector"]["p50_ms"] <= 0.2,
        ),
        (
            f"HNSW recall@10 >= 0.98 on held-out queries ({q['hnsw_recall_at_10_queries']:.4f})",
            q["hnsw_recall_at_10_queries"] >= 0.98,
        ),
        (
            f"whole query incl. embedding <= 10 ms p50 ({q['hnsw_text']['p50_ms']:.2f} ms, "
            f"{results['threads']} threads)",
            q["hnsw_text"]["p50_ms"] <= 10,
        ),
    ]
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000, help="corpus size (default 100,000)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries (default 1,000)")
    parser.add_argument("--embed-docs", type=int, default=20_000, help="documents for the encode comparison")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds of the encode comparison")
    parser.add_argument("--threads", type=int, default=2, help="torch and FAISS threads (default 2)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    opts = parser.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} is absent: the benchmark pools sentences from ../shared/datasets", file=sys.stderr)
        return 2
    import faiss
    import torch
    from sentence_transformers import SentenceTransformer
    from threadpoolctl import threadpool_limits

    from taskhead.engine.backbones import quiet_loading, resolve_backbone
    from taskhead.retrieval.encoder import Encoder

    torch.set_num_threads(opts.threads)
    faiss.omp_set_num_threads(opts.threads)
    blas = threadpool_limits(opts.threads)  # noqa: F841 - numpy's BLAS (exact search) too
    memory = {"start": rss_mb()}
    texts, counts = pool_sentences()
    if len(texts) < opts.docs + opts.queries:
        print(f"only {len(texts)} unique texts for {opts.docs} + {opts.queries}", file=sys.stderr)
        return 2
    docs, queries = texts[: opts.docs], texts[opts.docs : opts.docs + opts.queries]
    path = resolve_backbone("minilm")
    with quiet_loading():
        st = SentenceTransformer(path, device="cpu")
    encoder = Encoder("minilm", device="cpu")
    memory["after loading both models"] = rss_mb()
    results: dict[str, Any] = {
        "docs": len(docs),
        "threads": opts.threads,
        "sources": counts,
        "memory": memory,
    }
    print(f"embedding {min(opts.embed_docs, len(docs))} documents with ST and taskhead ...", file=sys.stderr)
    results["embedding"] = bench_embedding(st, encoder, docs[: opts.embed_docs], opts.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"building indexes over {len(docs)} documents ...", file=sys.stderr)
        results["build"] = build_indexes(encoder, docs, Path(tmp), memory)
        exact, hnsw = results["build"].pop("indexes")
        print(f"timing {len(queries)} queries ...", file=sys.stderr)
        results["queries"] = bench_queries(st, exact, hnsw, queries)
    checks = report(results)
    if opts.json:
        results["checks"] = [{"target": what, "pass": ok} for what, ok in checks]
        results["settings"] = vars(opts) | {"json": str(opts.json), "cpu_count": os.cpu_count()}
        opts.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {opts.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
