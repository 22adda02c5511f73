"""Commands ``taskhead index build | add | evaluate``, ``taskhead search`` and ``taskhead mine``.

``register`` only declares arguments: torch, transformers and FAISS load inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from taskhead.errors import RetrievalError


def register(subparsers: Any) -> dict[str, Any]:
    """Add the retrieval commands to ``taskhead``'s sub-parsers; returns ``{command: handler}``."""
    _index_commands(subparsers)
    s = subparsers.add_parser("search", help="search an index with one query or a file of queries")
    s.add_argument("index_dir")
    s.add_argument("query", nargs="?", help="query text (or use --queries)")
    s.add_argument("--queries", help="queries file: JSON Lines, TSV, CSV or text (one query per line)")
    s.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    s.add_argument("--output", "-o", help="JSON Lines output for --queries (default: standard output)")
    _rerank_options(s)
    _encoder_options(s, model=True)

    m = subparsers.add_parser("mine", help="hard negatives: (anchor, positive) pairs -> triplets")
    m.add_argument("pairs", help="CSV/TSV/JSON Lines file with anchor and positive columns")
    m.add_argument("corpus", help="corpus file, BEIR folder or index directory to draw negatives from")
    m.add_argument("--model", help="MODEL_OR_RUN (required unless CORPUS is an index directory)")
    m.add_argument("--out", required=True, help="triplets JSON Lines file to write")
    m.add_argument("--negatives", type=int, default=1, help="negatives per pair (default: 1)")
    m.add_argument("--range-min", type=int, default=0, help="skip the best N candidates (default: 0)")
    m.add_argument("--range-max", type=int, default=50, help="consider ranks up to N (default: 50)")
    m.add_argument(
        "--margin",
        type=_margin,
        default=0.95,
        help="drop candidates scored above positive_score * MARGIN (default 0.95; 'none' keeps them)",
    )
    m.add_argument("--anchor-column", default="anchor")
    m.add_argument("--positive-column", default="positive")
    _corpus_options(m)
    _encoder_options(m)
    return {"index": _cmd_index, "search": _cmd_search, "mine": _cmd_mine}


def _index_commands(subparsers: Any) -> None:
    """``taskhead index build | add | evaluate``."""
    idx = subparsers.add_parser("index", help="build, extend or evaluate an embedding index")
    actions = idx.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    b = actions.add_parser("build", help="embed a corpus and write an index directory")
    b.add_argument("model", metavar="MODEL_OR_RUN", help="alias (minilm), model directory or embedding run")
    b.add_argument("corpus", help="corpus file (CSV/TSV, JSON Lines, text) or BEIR folder")
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument("--kind", default="exact", choices=["exact", "hnsw", "ivf"], help="search structure")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    _corpus_options(b)
    _faiss_options(b)
    _encoder_options(b)

    a = actions.add_parser("add", help="embed more documents into an existing index (in place)")
    a.add_argument("index_dir")
    a.add_argument("corpus", help="corpus file (CSV/TSV, JSON Lines, text) or BEIR folder")
    _corpus_options(a)
    _encoder_options(a, model=True)

    e = actions.add_parser("evaluate", help="retrieval metrics of an index on judged queries")
    e.add_argument("index_dir")
    e.add_argument("--queries", help="queries file (JSON Lines _id/text, TSV id<TAB>text, CSV, text)")
    e.add_argument(
        "--qrels", help="judgements: BEIR TSV (query-id corpus-id score) or TREC (qid 0 docid rel)"
    )
    e.add_argument("--beir", metavar="DIR", help="a BEIR folder instead of --queries / --qrels")
    e.add_argument("--split", default="test", help="BEIR qrels split (default: test)")
    e.add_argument("--depth", type=int, default=100, help="documents retrieved per query (default: 100)")
    e.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10, 100], help="cut-offs for recall/P")
    e.add_argument("--output", "-o", help="write mean and per-query metrics as JSON")
    _rerank_options(e)
    _encoder_options(e, model=True)


def _margin(value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', found {value!r}") from None


def _corpus_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto", choices=["auto", "csv", "tsv", "jsonl", "text"])
    p.add_argument("--id-column", help="column of document ids (default: id or _id, else line numbers)")
    p.add_argument("--text-column", default="text", help="column of document texts (default: text)")
    p.add_argument("--title-column", help="column put before the text (e.g. title)")


def _faiss_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--M", dest="M", type=int, help="HNSW links per node (default 32)")
    p.add_argument("--ef-construction", type=int, help="HNSW build beam (default 200)")
    p.add_argument("--ef-search", type=int, help="HNSW search beam (default: tuned to recall@10 >= 0.98)")
    p.add_argument("--nlist", type=int, help="IVF clusters (default about 4 sqrt(documents))")
    p.add_argument("--nprobe", type=int, help="IVF clusters searched (default: tuned to recall@10 >= 0.98)")


def _encoder_options(p: argparse.ArgumentParser, *, model: bool = False) -> None:
    if model:
        p.add_argument("--model", help="embed with this copy of the index's model (default: as recorded)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp32"],
        help="embedding precision (auto: bf16 where the hardware has it and it agrees with fp32; bf16: "
        "where the hardware has it, unchecked; else fp32)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's (and the --rerank run's) own Python code; never taken from saved files",
    )


def _rerank_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rerank", metavar="RUN_DIR", help="re-score candidates with a text-pair classification run"
    )
    p.add_argument("--rerank-label", help="the run's label meaning relevant (default: see docs/retrieval.md)")
    p.add_argument(
        "--candidates",
        type=int,
        help="candidates re-scored per query (default: search 3 x k, evaluate --depth)",
    )


# ---------------------------------------------------------------------------------------------- helpers


def _encoder_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "device": args.device,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "trust_remote_code": args.trust_remote_code,
    }


def _docs(args: argparse.Namespace) -> list[Any]:
    from taskhead.retrieval.beir import read_beir_corpus
    from taskhead.retrieval.corpus import read_corpus

    path = Path(args.corpus)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        return read_beir_corpus(path / "corpus.jsonl")
    return read_corpus(
        args.corpus,
        fmt=args.format,
        id_column=args.id_column,
        text_column=args.text_column,
        title_column=args.title_column,
    )


def _load_index(args: argparse.Namespace) -> Any:
    from taskhead.retrieval.index import Index

    return Index.load(args.index_dir, model=args.model, **_encoder_kwargs(args))


def _info(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        from taskhead.console import info

        info(message)


# ---------------------------------------------------------------------------------------------- index


def _cmd_index(args: argparse.Namespace) -> int:
    return {"build": _index_build, "add": _index_add, "evaluate": _index_evaluate}[args.index_command](args)


def _index_build(args: argparse.Namespace) -> int:
    from taskhead.retrieval.index import Index
    from taskhead.retrieval.store import INDEX
    from taskhead.workflows.outputs import check_replaceable

    out = Path(args.out)
    check_replaceable(
        out, INDEX, "--out", RetrievalError
    )  # before the corpus is embedded, and even with --overwrite
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise RetrievalError(f"--out {out}: already exists; pass --overwrite to replace it")
    params = {k: getattr(args, k) for k in ("M", "ef_construction", "ef_search", "nlist", "nprobe")}
    wanted = {"exact": (), "hnsw": ("M", "ef_construction", "ef_search"), "ivf": ("nlist", "nprobe")}[
        args.kind
    ]
    stray = [k for k, v in params.items() if v is not None and k not in wanted]
    if stray:
        names = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise RetrievalError(f"{names}: does not apply to --kind {args.kind}")
    docs = _docs(args)
    index = Index.build(
        args.model,
        docs,
        kind=args.kind,
        quiet=args.quiet,
        **_encoder_kwargs(args),
        **{k: v for k, v in params.items() if v is not None},
    )
    index.save(out)
    print(f"index written to {out} ({len(index)} documents, {args.kind})")
    return 0


def _index_add(args: argparse.Namespace) -> int:
    index = _load_index(args)
    docs = _docs(args)
    added = index.add(docs, quiet=args.quiet)
    index.save(args.index_dir)
    print(f"added {added} documents to {args.index_dir} (now {len(index)})")
    return 0


def _index_evaluate(args: argparse.Namespace) -> int:
    from taskhead.console import print_table
    from taskhead.retrieval.metrics import evaluate
    from taskhead.workflows.files import atomic_write_json
    from taskhead.workflows.outputs import check_output_file

    if args.output:
        check_output_file(args.output, "--output", [args.queries, args.qrels, args.beir])
    queries, qrels = _judged_queries(args)
    index = _load_index(args)
    ids = list(queries)
    depth = max(args.depth, *args.ks)
    hits = _retrieve(args, index, [queries[q] for q in ids], depth, candidates=depth)
    run = {q: [h["id"] for h in row] for q, row in zip(ids, hits, strict=True)}
    report = evaluate(run, qrels, ks=args.ks, depth=args.depth)
    print_table(_metrics_table(report, args), stdout=True)
    if args.output:
        atomic_write_json(Path(args.output), {"index": args.index_dir, **report})
        print(f"metrics written to {args.output}")
    return 0


def _judged_queries(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    from taskhead.retrieval.beir import read_beir, read_qrels, read_queries

    if args.beir:
        if args.queries or args.qrels:
            raise RetrievalError("--beir: give either a BEIR folder or --queries and --qrels, not both")
        collection = read_beir(args.beir, args.split, corpus=False)
        return collection.queries, collection.qrels
    if not (args.queries and args.qrels):
        raise RetrievalError("index evaluate: needs --queries and --qrels (or --beir DIR)")
    queries, qrels = read_queries(args.queries), read_qrels(args.qrels)
    unknown = sorted(set(qrels) - set(queries))
    if unknown:
        raise RetrievalError(
            f"{args.qrels}: judges {len(unknown)} query id(s) missing from {args.queries}, "
            f"e.g. {unknown[0]!r}"
        )
    return {q: queries[q] for q in qrels}, qrels


def _metrics_table(report: dict[str, Any], args: argparse.Namespace) -> Any:
    from rich.table import Table

    table = Table(title=f"{Path(args.beir or args.qrels).name}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("queries", str(report["queries"]))
    for name, value in report["mean"].items():
        table.add_row(name, f"{value:.4f}")
    if report["without_relevant"]:
        table.caption = (
            f"{len(report['without_relevant'])} judged queries without a relevant document skipped"
        )
    return table


# ---------------------------------------------------------------------------------------------- search


def _retrieve(
    args: argparse.Namespace, index: Any, texts: list[str], k: int, *, candidates: int | None = None
) -> list[list[dict[str, Any]]]:
    """Top-k hits per query text; with --rerank, the top --candidates (default: ``candidates``, else 3 k)
    re-scored by the cross-encoder."""
    if not args.rerank:
        return index.search(texts, k=k)
    from taskhead.retrieval.rerank import Reranker

    candidates = args.candidates or candidates or 3 * k
    if candidates < k:
        raise RetrievalError(f"--candidates {candidates}: must be at least k ({k})")
    reranker = Reranker(
        args.rerank,
        label=args.rerank_label,
        batch_size=args.batch_size,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )
    return reranker.rerank(texts, index.search(texts, k=candidates), k)


def _cmd_search(args: argparse.Namespace) -> int:
    from taskhead.workflows.files import atomic_write_text
    from taskhead.workflows.outputs import check_output_file

    if (args.query is None) == (args.queries is None):
        raise RetrievalError("search: give one query text or --queries FILE (not both)")
    if args.k < 1:
        raise RetrievalError(f"-k: expected a positive integer, found {args.k}")
    if args.output and not args.queries:
        raise RetrievalError("--output: only with --queries (a single query prints a table)")
    if args.output:
        check_output_file(args.output, "--output", [args.queries])
    index = _load_index(args)
    if args.query is not None:
        hits = _retrieve(args, index, [args.query], args.k)[0]
        _print_hits(args.query, hits, index.similarity)
        return 0
    from taskhead.retrieval.beir import read_queries

    queries = read_queries(args.queries)
    results = _retrieve(args, index, list(queries.values()), args.k)
    lines = [
        json.dumps({"query_id": q, "query": text, "hits": hits}, ensure_ascii=False, default=str)
        for (q, text), hits in zip(queries.items(), results, strict=True)
    ]
    text = "".join(line + "\n" for line in lines)
    if args.output:
        atomic_write_text(Path(args.output), text)
        _info(args, f"{len(lines)} result lists written to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _print_hits(query: str, hits: list[dict[str, Any]], similarity: str) -> None:
    from rich.table import Table

    from taskhead.console import print_table

    reranked = bool(hits) and "retrieval_score" in hits[0]
    table = Table(title=f"{query}", title_justify="left")
    for col in ("rank", "score", *(["retrieval"] if reranked else []), "id", "text"):
        table.add_column(col, justify="right" if col in ("rank", "score", "retrieval") else "left")
    for rank, h in enumerate(hits, 1):
        text = h["text"] if len(h["text"]) <= 200 else h["text"][:199] + "…"
        extra = [f"{h['retrieval_score']:.4f}"] if reranked else []
        table.add_row(str(rank), f"{h['score']:.4f}", *extra, str(h["id"]), text)
    table.caption = f"score: {'cross-encoder' if reranked else similarity}"
    print_table(table, stdout=True)


# ---------------------------------------------------------------------------------------------- mine


def _cmd_mine(args: argparse.Namespace) -> int:
    from taskhead.retrieval.index import Index
    from taskhead.retrieval.mining import mine_triplets, read_pairs, summary
    from taskhead.workflows.files import atomic_write_text
    from taskhead.workflows.outputs import check_output_file

    check_output_file(args.out, "--out", [args.pairs, args.corpus])
    pairs = read_pairs(args.pairs, anchor_column=args.anchor_column, positive_column=args.positive_column)
    if (Path(args.corpus) / "index.json").is_file():
        index = Index.load(args.corpus, model=args.model, **_encoder_kwargs(args))
    else:
        if not args.model:
            raise RetrievalError(
                f"--model: required to embed the corpus {args.corpus} (or pass an index directory)"
            )
        index = Index.build(args.model, _docs(args), quiet=args.quiet, **_encoder_kwargs(args))
    result = mine_triplets(
        pairs,
        index,
        negatives=args.negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        margin=args.margin,
    )
    atomic_write_text(
        Path(args.out), "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in result.triplets)
    )
    for name, value in summary(result, args.negatives).items():
        _info(args, f"{name}: {value}")
    print(f"{len(result.triplets)} triplets written to {args.out}")
    return 0
