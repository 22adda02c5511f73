"""Encoder and Index with a tiny sentence-transformers model: vectors, exact and approximate search, files."""

from __future__ import annotations

import json
import shutil
from itertools import product
from pathlib import Path

import numpy as np
import pytest

import taskhead
from taskhead.errors import DataError, IndexMismatchError, RetrievalError
from taskhead.retrieval.corpus import Doc, read_corpus
from taskhead.retrieval.encoder import Encoder
from taskhead.retrieval.index import Index

TOPICS = ["movie", "film", "plot", "game", "team", "market", "stock", "bank", "space", "city"]
MOODS = ["good", "bad", "great", "awful", "happy", "sad", "boring", "nice"]


def corpus(n: int | None = None) -> list[str]:
    texts = [f"the {m} {t} was {w}" for m, t, w in product(MOODS, TOPICS, ["fine", "dull", "not"])]
    return texts[:n] if n else texts


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    rows = np.array([sorted(range(len(vectors)), key=lambda r, s=s: (-s[r], r))[:k] for s in scores])
    return np.take_along_axis(scores, rows, axis=1), rows


@pytest.fixture(scope="module")
def encoder(tiny_sentence_model: Path) -> Encoder:
    return Encoder(tiny_sentence_model, precision="fp32", device="cpu", batch_size=7)


@pytest.fixture(scope="module")
def built(encoder: Encoder) -> Index:
    docs = [{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(corpus(60))]
    return Index.build(encoder, docs, quiet=True)


# --------------------------------------------------------------------------------------------- encoder


def test_encoder_matches_sentence_transformers_encode(encoder: Encoder, tiny_sentence_model: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [
        "good",
        "a very long story about the bad movie and the dull plot",
        "the film",
        "x y z",
        "space",
    ] * 3
    ours = encoder.encode(texts)
    theirs = SentenceTransformer(str(tiny_sentence_model), device="cpu").encode(texts, batch_size=4)
    assert ours.shape == (15, 32) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-6)  # input order kept across length-sorted batches
    assert encoder.normalized and encoder.similarity == "cosine" and encoder.dimension == 32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    assert encoder.encode([]).shape == (0, 32)
    assert encoder.describe()["fingerprint"] == encoder.fingerprint


def test_encoder_counts_truncated_texts(encoder: Encoder) -> None:
    encoder.encode(["good " * 80, "bad movie", "film " * 70])
    assert encoder.max_length == 64 and encoder.truncated == 2


def test_plain_encoder_directory_uses_mean_pooling(tiny_backbone: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    enc = Encoder(tiny_backbone, precision="fp32", device="cpu")
    assert enc.kind == "transformers" and enc.normalized
    texts = ["good movie", "the plot was very dull"]
    tok, model = AutoTokenizer.from_pretrained(tiny_backbone), AutoModel.from_pretrained(tiny_backbone)
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.encode(texts), expected, atol=2e-6)


def test_runs_resolve_to_their_model(tiny_sentence_model: Path, tmp_path: Path) -> None:
    run = tmp_path / "emb-run"
    shutil.copytree(tiny_sentence_model, run / "model")
    (run / "taskhead.json").write_text(json.dumps({"task": "embedding", "format_version": 1}))
    enc = Encoder(run, precision="fp32", device="cpu")
    assert enc.path == run / "model" and enc.model_id == str(run.resolve())
    other = tmp_path / "cls-run"
    other.mkdir()
    (other / "taskhead.json").write_text(json.dumps({"task": "classification", "format_version": 1}))
    with pytest.raises(RetrievalError, match=r"cls-run: a 'classification' run; an index needs an embedding"):
        Encoder(other)
    with pytest.raises(RetrievalError, match=r"neither a model directory"):
        Encoder(tmp_path)


def test_bf16_falls_back_to_fp32_when_it_disagrees(tiny_sentence_model: Path, monkeypatch) -> None:
    import taskhead.engine.devices
    import taskhead.retrieval.encoder as encoder_module

    monkeypatch.setattr(taskhead.engine.devices, "bf16_supported", lambda device: True)
    enc = Encoder(tiny_sentence_model, device="cpu")
    assert enc.precision == "bf16"
    low = enc.encode(["good movie", "bad plot"])
    fp32 = Encoder(tiny_sentence_model, device="cpu", precision="fp32").encode(["good movie", "bad plot"])
    assert (low * fp32).sum(1).min() > 0.99  # checked and kept
    assert enc.precision == "bf16"
    monkeypatch.setattr(encoder_module, "BF16_MIN_COSINE", 1.01)
    strict = Encoder(tiny_sentence_model, device="cpu")
    np.testing.assert_allclose(strict.encode(["good movie", "bad plot"]), fp32, atol=2e-6)
    assert strict.precision == "fp32"


# --------------------------------------------------------------------------------------------- index


def test_exact_search_equals_brute_force(built: Index, encoder: Encoder) -> None:
    queries = ["good film", "the stock market", "space", "awful game was dull"]
    results = built.search(queries, k=5)
    scores, rows = brute_force(built.vectors, encoder.encode(queries), 5)
    assert [[h["id"] for h in r] for r in results] == [[f"d{i}" for i in row] for row in rows]
    np.testing.assert_allclose([[h["score"] for h in r] for r in results], scores, rtol=1e-6, atol=1e-7)
    assert results[0][0]["metadata"] == {"n": int(rows[0][0])}
    assert results[0][0]["text"] == corpus(60)[rows[0][0]]
    random = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
    s2, r2 = brute_force(built.vectors, random, 60)
    got = built.search_vectors(random, k=100)  # k above the size: every document, best first
    assert [[h["id"] for h in r] for r in got] == [[f"d{i}" for i in row] for row in r2]
    np.testing.assert_allclose([[h["score"] for h in r] for r in got], s2, rtol=1e-6, atol=1e-7)
    # alone or in a batch of four the query is padded differently: the same hit, its score equal to float
    # rounding (on one thread, as under pytest-xdist, they differ in the 8th digit)
    assert built.search("good film", k=1) == [
        [{**results[0][0], "score": pytest.approx(results[0][0]["score"])}]
    ]
    assert built.search([]) == []


def test_small_batches_search_on_one_thread_and_restore_the_setting() -> None:
    """Fewer than SMALL_BATCH queries: one FAISS / BLAS thread during the search (not fighting the encoder's
    threads), the caller's thread settings afterwards, and the same results as a large batch."""
    faiss = pytest.importorskip("faiss")
    from threadpoolctl import threadpool_info

    from taskhead.retrieval import ann

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(ann.SMALL_BATCH, 16)).astype(np.float32)
    approx, _ = ann.build_approximate("hnsw", vectors, {"ef_search": 64})
    seen: list[int] = []

    class Spy:  # records FAISS's thread setting at each search
        ntotal = approx.index.ntotal

        def search(self, q: np.ndarray, k: int, inner=approx.index.search) -> tuple:
            seen.append(faiss.omp_get_max_threads())
            return inner(q, k)

    approx.index = Spy()
    before = faiss.omp_get_max_threads()
    blas_before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    one = approx.search(queries[:1], 5)
    many = approx.search(queries, 5)
    assert seen == [1, before]
    assert faiss.omp_get_max_threads() == before
    np.testing.assert_array_equal(one[1], many[1][:1])
    exact_one = ann.exact_search(vectors, queries[:1], 5)
    np.testing.assert_array_equal(exact_one[1], ann.exact_search(vectors, queries, 5)[1][:1])
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == blas_before


def test_save_load_round_trip(built: Index, tmp_path: Path, tiny_sentence_model: Path) -> None:
    built.save(tmp_path / "ix")
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == ["docs.jsonl", "index.json", "vectors.npy"]
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["format_version"] == 1 and meta["kind"] == "exact" and meta["count"] == 60
    assert meta["dimension"] == 32 and meta["normalized"] is True and meta["recall_at_10"] is None
    assert meta["model"]["model"] == str(tiny_sentence_model.resolve())
    loaded = Index.load(tmp_path / "ix", device="cpu", precision="fp32")
    assert loaded.search(["good film", "bank"], k=4) == built.search(["good film", "bank"], k=4)
    np.testing.assert_array_equal(loaded.vectors, built.vectors)
    assert taskhead.Index is Index


def test_add_and_its_errors(encoder: Encoder, tmp_path: Path) -> None:
    index = Index.build(encoder, corpus(20), quiet=True)
    assert index.ids[:3] == ["0", "1", "2"]  # strings: their position
    assert index.add(["space research was great", {"id": "x", "text": "the bank"}], quiet=True) == 2
    assert index.ids[-2:] == ["20", "x"] and len(index) == 22
    assert index.search("space research was great", k=1)[0][0]["id"] == "20"
    with pytest.raises(RetrievalError, match=r"duplicate document id 'x': already in the index \(row 21\)"):
        index.add([{"id": "x", "text": "again"}], quiet=True)
    with pytest.raises(RetrievalError, match=r"duplicate document id 'y': documents 0 and 1 of the input"):
        index.add([{"id": "y", "text": "a"}, {"id": "y", "text": "b"}], quiet=True)
    assert len(index) == 22  # nothing added by a failed call
    with pytest.raises(DataError, match=r"document 1 \(id 1\): text: expected a non-empty string"):
        Index.build(encoder, ["fine", "  "], quiet=True)
    with pytest.raises(RetrievalError, match=r"docs: no documents; an index needs at least one"):
        Index.build(encoder, [], quiet=True)


def test_model_mismatch_errors(encoder: Encoder, tiny_sentence_model: Path) -> None:
    index = Index.build(encoder, corpus(10), quiet=True)
    unnormalized = Encoder(tiny_sentence_model, normalize=False, precision="fp32", device="cpu")
    with pytest.raises(
        IndexMismatchError, match=r"gives 32-dimensional unnormalized \(dot\) embeddings; the index"
    ):
        index.add(["new one"], model=unnormalized, quiet=True)
    small = Index(
        np.zeros((1, 16), np.float32), [Doc("a", "x")], model_info={"dimension": 16, "normalized": True}
    )
    with pytest.raises(
        IndexMismatchError, match=r"gives 32-dimensional normalized \(cosine\) embeddings; the index"
    ):
        small.add(["good"], model=encoder, quiet=True)
    with pytest.raises(IndexMismatchError, match=r"query vectors: expected shape \(n, 32\), found \(2, 5\)"):
        index.search_vectors(np.zeros((2, 5)))
    with pytest.raises(RetrievalError, match=r"k: expected a positive integer, found 0"):
        index.search("good", k=0)


def test_hnsw_and_ivf_measure_and_store_recall(encoder: Encoder, tmp_path: Path, capsys) -> None:
    texts = corpus()  # 240 documents
    exact = Index.build(encoder, texts, quiet=True)
    hnsw = Index.build(encoder, texts, kind="hnsw")
    assert hnsw.recall is not None and hnsw.recall >= 0.98
    printed = capsys.readouterr().err
    assert (
        f"recall@10 {hnsw.recall:.4f} against exact search" in printed and "indexed 240 documents" in printed
    )
    assert (
        hnsw.approx is not None
        and hnsw.approx.params["M"] == 32
        and hnsw.approx.params["ef_construction"] == 200
    )
    queries = ["good film", "bank was dull", "space"]
    top_exact = [[h["id"] for h in r] for r in exact.search(queries, k=10)]
    top_hnsw = [[h["id"] for h in r] for r in hnsw.search(queries, k=10)]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_exact, top_hnsw, strict=True)])
    assert overlap >= 0.8
    hnsw.save(tmp_path / "hnsw")
    meta = json.loads((tmp_path / "hnsw" / "index.json").read_text())
    assert meta["kind"] == "hnsw" and meta["recall_at_10"] == hnsw.recall and meta["recall_queries"] == 24
    assert meta["params"]["ef_search"] == hnsw.approx.params["ef_search"]
    loaded = Index.load(tmp_path / "hnsw", model=encoder)
    assert loaded.search(queries, k=10) == hnsw.search(queries, k=10)
    ivf = Index.build(encoder, texts, kind="ivf", nlist=4, quiet=True)
    assert ivf.recall is not None and ivf.recall >= 0.98 and ivf.approx is not None
    assert ivf.approx.params["nlist"] == 4
    fixed = Index.build(encoder, texts, kind="hnsw", ef_search=16, M=8, quiet=True)
    assert fixed.approx is not None and fixed.approx.params["ef_search"] == 16 and fixed.recall is not None
    assert hnsw.add(["the sad stock was great"], quiet=True) == 1 and hnsw.approx.index.ntotal == 241
    assert hnsw.search("the sad stock was great", k=1)[0][0]["id"] == "240"
    with pytest.raises(RetrievalError, match=r"index parameters nlist do not apply to kind 'hnsw'"):
        Index.build(encoder, texts, kind="hnsw", nlist=3, quiet=True)


def test_load_errors(built: Index, tmp_path: Path) -> None:
    with pytest.raises(RetrievalError, match=r"not an index directory \(index.json is missing\)"):
        Index.load(tmp_path)
    built.save(tmp_path / "ix")
    docs = tmp_path / "ix" / "docs.jsonl"
    lines = docs.read_text().splitlines()
    docs.write_text("\n".join([*lines[:4], "{broken", *lines[5:]]) + "\n")
    with pytest.raises(RetrievalError, match=r"docs.jsonl:5: damaged document record"):
        Index.load(tmp_path / "ix")
    docs.write_text("\n".join(lines[:10]) + "\n")
    with pytest.raises(RetrievalError, match=r"docs.jsonl: 10 documents, but index.json says 60"):
        Index.load(tmp_path / "ix")


def test_recorded_model_missing_asks_for_model(
    encoder: Encoder, tiny_sentence_model: Path, tmp_path: Path
) -> None:
    model_copy = tmp_path / "model-copy"
    shutil.copytree(tiny_sentence_model, model_copy)
    index = Index.build(Encoder(model_copy, precision="fp32", device="cpu"), corpus(5), quiet=True)
    index.save(tmp_path / "ix")
    shutil.rmtree(model_copy)
    loaded = Index.load(tmp_path / "ix")
    with pytest.raises(
        RetrievalError, match=r"was built with .*model-copy, which is not found here; pass the"
    ):
        loaded.search("good")
    # another copy of the same weights is accepted without a warning about other weights
    assert Index.load(tmp_path / "ix", model=encoder).search("good", k=2)[0]


# --------------------------------------------------------------------------------------------- corpus files


def test_corpus_files(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text('id,text,source\na1,"good, movie",web\na2,bad film,news\n')
    docs = read_corpus(tmp_path / "c.csv")
    assert docs == [Doc("a1", "good, movie", {"source": "web"}), Doc("a2", "bad film", {"source": "news"})]
    (tmp_path / "c.txt").write_text("first doc\n\nthird line doc\n")
    assert [(d.id, d.text) for d in read_corpus(tmp_path / "c.txt")] == [
        ("1", "first doc"),
        ("3", "third line doc"),
    ]
    (tmp_path / "c.jsonl").write_text('{"doc": 7, "body": "x", "title": "T"}\n{"doc": 8, "body": "y"}\n')
    docs = read_corpus(tmp_path / "c.jsonl", id_column="doc", text_column="body", title_column="title")
    assert docs[0] == Doc("7", "T x", {"title": "T"}) and docs[1].text == "y"
    (tmp_path / "noid.jsonl").write_text('{"text": "x"}\n\n{"text": "y"}\n')
    assert [d.id for d in read_corpus(tmp_path / "noid.jsonl")] == ["1", "3"]  # line numbers


def test_corpus_file_errors(tmp_path: Path) -> None:
    (tmp_path / "c.tsv").write_text("id\tbody\n1\tgood\n")
    with pytest.raises(
        DataError, match=r"c.tsv: text column 'text' not found \(columns: id, body\); choose it"
    ):
        read_corpus(tmp_path / "c.tsv")
    (tmp_path / "d.tsv").write_text("id\ttext\n1\tgood\n2\t\n1\tbad\n")
    with pytest.raises(DataError, match=r"d.tsv:3: text: expected a non-empty string, found ''"):
        read_corpus(tmp_path / "d.tsv")
    (tmp_path / "e.tsv").write_text("id\ttext\n1\tgood\n2\tfine\n1\tbad\n")
    with pytest.raises(DataError, match=r"e.tsv:4: id: duplicate document id '1' \(first at 2\)"):
        read_corpus(tmp_path / "e.tsv")
    with pytest.raises(DataError, match=r"missing.csv: file not found"):
        read_corpus(tmp_path / "missing.csv")
