"""Readers for retrieval test collections: the BEIR layout and TREC-style relevance judgements.

BEIR folder::

    corpus.jsonl        {"_id", "title", "text"}          one document per line
    queries.jsonl       {"_id", "text"}                   one query per line
    qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score, with that header line

TREC qrels: ``query_id iteration doc_id relevance`` per line, whitespace-separated (the iteration column is
ignored). Queries may also come as TSV (``id <TAB> text``, with or without a header), CSV with a header, or
text (one query per line, ids = line numbers).

Every problem is reported with its place: ``file:line: field: problem``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskhead.errors import DataError
from taskhead.retrieval.corpus import Doc

MAX_ERRORS = 20
QUERY_ID_COLUMNS = ("_id", "id", "qid", "query_id", "query-id")
QUERY_TEXT_COLUMNS = ("text", "query")


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.total = 0

    def add(self, line: str) -> None:
        self.total += 1
        if len(self.lines) < MAX_ERRORS:
            self.lines.append(line)

    def raise_if_any(self) -> None:
        if self.total:
            raise DataError(self.lines, total=self.total)


def _lines(path: Path) -> list[str]:
    """The file's lines (a UTF-8 BOM accepted; a missing or undecodable file is a located error)."""
    from taskhead.data.readers import read_text_source, split_lines

    return split_lines(read_text_source(path))


def _json_records(path: Path) -> list[tuple[int | str, dict[str, Any]]]:
    """JSON Lines records with their line numbers, through the shared reader (every bad line reported)."""
    from taskhead.data.readers import read_table

    return [(row.where, row.values) for row in read_table(path, "jsonl").rows]  # line, or "record N"


def _text(value: Any, where: str, field: str, problems: _Problems, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        problems.add(f"{where}: {field}: expected a non-empty string, found {value!r}")
        return ""
    return value


def _ident(value: Any, where: str, field: str, problems: _Problems, seen: dict[str, str]) -> str:
    if value is None or (isinstance(value, str) and not value.strip()) or isinstance(value, (dict, list)):
        problems.add(f"{where}: {field}: expected an id, found {value!r}")
        return ""
    ident = str(value)
    if ident in seen:
        problems.add(f"{where}: {field}: duplicate id {ident!r} (first at {seen[ident]})")
    seen.setdefault(ident, where)
    return ident


def read_beir_corpus(path: str | Path) -> list[Doc]:
    """Documents of a BEIR ``corpus.jsonl``: text = title + " " + text (title also in metadata)."""
    path = Path(path)
    docs, problems, seen = [], _Problems(), dict[str, str]()
    for line_no, record in _json_records(path):
        where = f"{path}:{line_no}"
        ident = _ident(record.get("_id"), where, "_id", problems, seen)
        title = _text(record.get("title"), where, "title", problems, required=False)
        body = _text(record.get("text"), where, "text", problems, required=not title.strip())
        metadata = dict(record.get("metadata") or {})
        if title.strip():
            metadata["title"] = title
        docs.append(Doc(ident, f"{title.strip()} {body.strip()}".strip(), metadata))
    problems.raise_if_any()
    if not docs:
        raise DataError([f"{path}: no documents"])
    return docs


def read_queries(path: str | Path) -> dict[str, str]:
    """Queries by id from JSON Lines (``_id``/``id`` + ``text``/``query``), TSV, CSV or text."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = [(f"{path}:{n}", r) for n, r in _json_records(path)]
    elif suffix in (".tsv", ".csv", ".tab"):
        rows = _delimited_queries(path, "," if suffix == ".csv" else "\t")
    else:
        rows = [
            (f"{path}:{n}", {"id": str(n), "text": t}) for n, t in enumerate(_lines(path), 1) if t.strip()
        ]
    queries: dict[str, str] = {}
    problems, seen = _Problems(), dict[str, str]()
    for where, record in rows:
        id_key = next((k for k in QUERY_ID_COLUMNS if k in record), "_id")
        text_key = next((k for k in QUERY_TEXT_COLUMNS if k in record), "text")
        ident = _ident(record.get(id_key), where, id_key, problems, seen)
        queries[ident] = _text(record.get(text_key), where, text_key, problems)
    problems.raise_if_any()
    if not queries:
        raise DataError([f"{path}: no queries"])
    return queries


def _delimited_queries(path: Path, delimiter: str) -> list[tuple[str, dict[str, Any]]]:
    import csv
    import io

    text = "\n".join(_lines(path))
    if delimiter == "\t":  # TSV queries hold raw quotes
        reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = list(enumerate(reader, 1))
    rows = [(i, r) for i, r in rows if r and any(c.strip() for c in r)]
    if not rows:
        return []
    first = [c.strip() for c in rows[0][1]]
    if any(c in QUERY_ID_COLUMNS for c in first):
        return [(f"{path}:{i}", dict(zip(first, r, strict=False))) for i, r in rows[1:]]
    out = []
    for i, r in rows:
        if len(r) < 2:
            raise DataError([f"{path}:{i}: expected 2 fields (query id, text), found {len(r)}"])
        out.append((f"{path}:{i}", {"id": r[0], "text": delimiter.join(r[1:])}))
    return out


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Relevance grades ``{query_id: {doc_id: grade}}`` from a BEIR qrels TSV or a TREC qrels file."""
    path = Path(path)
    lines = _lines(path)
    first = next((ln for ln in lines if ln.strip()), "")
    beir = first.split("\t")[0].strip().lower() in ("query-id", "query_id", "qid", "query")
    qrels: dict[str, dict[str, int]] = {}
    problems, header_seen = _Problems(), False
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if beir and not header_seen:
            header_seen = True
            continue
        fields = line.split("\t") if beir else line.split()
        expected = 3 if beir else 4
        if len(fields) != expected:
            layout = "query-id<TAB>corpus-id<TAB>score" if beir else "query_id iteration doc_id relevance"
            problems.add(f"{path}:{line_no}: expected {expected} fields ({layout}), found {len(fields)}")
            continue
        qid, doc, grade = (fields[0], fields[1], fields[2]) if beir else (fields[0], fields[2], fields[3])
        field = "score" if beir else "relevance"
        try:
            value = int(grade.strip())
        except ValueError:
            problems.add(f"{path}:{line_no}: {field}: expected an integer grade, found {grade.strip()!r}")
            continue
        judged = qrels.setdefault(qid.strip(), {})
        if doc.strip() in judged:
            problems.add(f"{path}:{line_no}: query {qid.strip()!r} judges document {doc.strip()!r} twice")
            continue
        judged[doc.strip()] = value
    problems.raise_if_any()
    if not qrels:
        raise DataError([f"{path}: no relevance judgements"])
    return qrels


@dataclass
class Collection:
    """A test collection: documents (optional), queries by id and graded judgements by query id."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus: list[Doc] | None = None


def read_beir(folder: str | Path, split: str = "test", *, corpus: bool = True) -> Collection:
    """A BEIR folder: ``queries.jsonl``, ``qrels/<split>.tsv`` and (``corpus=True``) ``corpus.jsonl``.

    Only the queries that the split judges are kept.
    """
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        found = (
            sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        )
        raise DataError(
            [f"{qrels_path}: file not found (splits in {folder / 'qrels'}: {', '.join(found) or 'none'})"]
        )
    qrels = read_qrels(qrels_path)
    queries = read_queries(folder / "queries.jsonl")
    unknown = sorted(set(qrels) - set(queries))
    if unknown:
        raise DataError(
            [f"{qrels_path}: judges {len(unknown)} query id(s) not in queries.jsonl, e.g. {unknown[0]!r}"]
        )
    docs = read_beir_corpus(folder / "corpus.jsonl") if corpus else None
    return Collection({q: queries[q] for q in qrels}, qrels, docs)
