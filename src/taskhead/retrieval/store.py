"""The files of a saved index (see ``taskhead.retrieval.index``): written atomically, checked when read.

``index.json`` is written last inside a temporary directory that is then swapped into place, so a directory
either holds a complete index or is not an index at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from taskhead.errors import RetrievalError
from taskhead.retrieval import ann
from taskhead.retrieval.corpus import Doc
from taskhead.workflows.outputs import Kind, warn_leftovers

if TYPE_CHECKING:
    from taskhead.retrieval.index import Index

FORMAT_VERSION = 1
META = "index.json"
VECTORS = "vectors.npy"
DOCS = "docs.jsonl"
FAISS_FILE = "faiss.index"


INDEX = Kind("a taskhead index", (META,), (META, VECTORS, DOCS, FAISS_FILE))


def write_index_files(target: Path, index: Index) -> Path:
    """Write ``index`` to ``target`` (a temporary directory first, then swapped into place).

    Raises:
        RetrievalError: ``target`` holds files that are not an index's (never replaced).
    """
    from taskhead import __version__
    from taskhead.workflows.outputs import check_replaceable, replace_dir

    check_replaceable(target, INDEX, "index folder", RetrievalError)

    meta = {
        "format_version": FORMAT_VERSION,
        "taskhead_version": __version__,
        "model": index.model_info,
        "dimension": index.dimension,
        "normalized": index.normalized,
        "similarity": index.similarity,
        "kind": index.kind,
        "params": dict(index.approx.params) if index.approx is not None else {},
        "count": len(index),
        "recall_at_10": index.recall,
        "recall_queries": index.approx.recall_queries if index.approx is not None else None,
    }

    def fill(tmp: Path) -> None:
        np.save(tmp / VECTORS, index.vectors)
        with (tmp / DOCS).open("w", encoding="utf-8") as fh:
            for ident, text, metadata in zip(index.ids, index.texts, index.metadata, strict=True):
                record = {"id": ident, "text": text, "metadata": metadata}
                fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        if index.approx is not None:
            faiss = ann.load_faiss()
            faiss.write_index(index.approx.index, str(tmp / FAISS_FILE))
        (tmp / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    replace_dir(target, fill)
    return target


def read_index_files(directory: Path) -> tuple[np.ndarray, list[Doc], dict[str, Any], ann.Approximate | None]:
    """Vectors, documents, metadata and the FAISS index (approximate kinds) of a saved index.

    Raises:
        RetrievalError: a missing directory or file, a newer format, counts or shapes that disagree.
    """
    meta = read_meta(directory)
    count, dim = int(meta["count"]), int(meta["dimension"])
    try:
        vectors = np.load(directory / VECTORS, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RetrievalError(f"{directory / VECTORS}: cannot read the vectors: {exc}") from None
    if vectors.shape != (count, dim) or vectors.dtype != np.float32:
        raise RetrievalError(
            f"{directory / VECTORS}: expected float32 ({count}, {dim}) as {META} says, "
            f"found {vectors.dtype} {vectors.shape}"
        )
    docs = read_docs(directory / DOCS)
    if len(docs) != count:
        raise RetrievalError(f"{directory / DOCS}: {len(docs)} documents, but {META} says {count}")
    approx = None
    if meta["kind"] != "exact":
        approx = _read_faiss(directory / FAISS_FILE, meta, count)
    return vectors, docs, meta, approx


def read_meta(directory: Path) -> dict[str, Any]:
    warn_leftovers(directory)
    path = directory / META
    if not directory.is_dir():
        raise RetrievalError(f"{directory}: index directory not found")
    if not path.is_file():
        raise RetrievalError(
            f"{directory}: not an index directory ({META} is missing); build one with "
            f"taskhead index build MODEL CORPUS --out {directory}"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RetrievalError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise RetrievalError(f"{path}: malformed: JSON nested too deeply") from None
    if not isinstance(meta, dict):
        raise RetrievalError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise RetrievalError(
            f"{path}: written by a newer taskhead (format {meta['format_version']}); upgrade"
        )
    missing = [k for k in ("model", "dimension", "normalized", "kind", "count") if k not in meta]
    if missing:
        raise RetrievalError(f"{path}: missing field(s) {', '.join(missing)}")
    if meta["kind"] not in ann.KINDS:
        raise RetrievalError(f"{path}: kind: expected one of {', '.join(ann.KINDS)}, found {meta['kind']!r}")
    meta["model"] = {**meta["model"], "dimension": meta["dimension"], "normalized": meta["normalized"]}
    return meta


def read_docs(path: Path) -> list[Doc]:
    if not path.is_file():
        raise RetrievalError(f"{path}: file missing from the index directory")
    docs = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            try:
                record = json.loads(line)
                docs.append(Doc(str(record["id"]), record["text"], record.get("metadata") or {}))
            except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as exc:
                raise RetrievalError(
                    f"{path}:{line_no}: damaged document record ({type(exc).__name__})"
                ) from None
    return docs


def _read_faiss(path: Path, meta: dict[str, Any], count: int) -> ann.Approximate:
    faiss = ann.load_faiss()

    if not path.is_file():
        raise RetrievalError(f"{path}: file missing from the index directory ({meta['kind']} index)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise RetrievalError(f"{path}: cannot read the FAISS index: {str(exc).splitlines()[0]}") from None
    if index.ntotal != count:
        raise RetrievalError(f"{path}: {index.ntotal} vectors, but {META} says {count}")
    approx = ann.Approximate(
        meta["kind"], index, dict(meta.get("params") or {}), meta.get("recall_queries") or 0
    )
    value = approx.params.get("ef_search" if meta["kind"] == "hnsw" else "nprobe")
    if value:
        approx.set_search_param(int(value))
    return approx
