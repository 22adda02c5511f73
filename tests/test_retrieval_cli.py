"""``taskhead index | search | mine`` as a user runs them, and cross-encoder re-ranking."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE, run_cli, tiny_config, write_jsonl

import taskhead
from taskhead.errors import RetrievalError
from taskhead.retrieval.index import Index
from taskhead.retrieval.metrics import evaluate
from taskhead.retrieval.mining import mine_triplets
from taskhead.retrieval.rerank import Reranker

DOCS = [
    ("m1", "good movie with a great plot"),
    ("m2", "awful film and a boring story"),
    ("s1", "the team won the match"),
    ("s2", "the team lost the game in the rain"),
    ("f1", "the stock market fell"),
    ("f2", "the bank price was very bad"),
    ("x1", "space research in the city"),
    ("x2", "the election war in the world"),
]


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    return result


def _one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pattern in lines[0], lines[0]


def test_import_does_not_load_torch() -> None:
    code = "import sys, taskhead.retrieval.cli, taskhead.retrieval; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_build_search_add_evaluate(tiny_sentence_model: Path, tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": i, "text": t, "topic": i[0]} for i, t in DOCS])
    ix = tmp_path / "ix"
    result = _ok(
        run_cli("index", "build", str(tiny_sentence_model), str(corpus), "--out", str(ix), "--quiet")
    )
    assert result.stdout.strip() == f"index written to {ix} (8 documents, exact)"
    assert json.loads((ix / "index.json").read_text())["count"] == 8

    result = _ok(run_cli("search", str(ix), "the stock market fell", "-k", "3"))
    assert "f1" in result.stdout and "the stock market fell" in result.stdout and "1.0000" in result.stdout

    queries = tmp_path / "q.tsv"
    queries.write_text(
        "qa\tthe team won the match\nqb\tspace research in the city\nqc\thappy story about the sun\n"
    )
    out = tmp_path / "hits.jsonl"
    _ok(run_cli("search", str(ix), "--queries", str(queries), "-k", "2", "-o", str(out)))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["query_id"] for r in lines] == ["qa", "qb", "qc"]
    assert lines[0]["query"] == "the team won the match" and len(lines[0]["hits"]) == 2
    assert lines[0]["hits"][0]["id"] == "s1" and lines[0]["hits"][0]["metadata"] == {"topic": "s"}
    assert lines[1]["hits"][0]["id"] == "x1"
    more = tmp_path / "more.csv"
    more.write_text("id,text\nn1,happy story about the sun\n")
    result = _ok(run_cli("index", "add", str(ix), str(more), "--quiet"))
    assert result.stdout.strip() == f"added 1 documents to {ix} (now 9)"
    stdout = _ok(run_cli("search", str(ix), "--queries", str(queries), "-k", "2")).stdout  # JSON Lines
    after = [json.loads(line) for line in stdout.splitlines()]
    assert [r["query_id"] for r in after] == ["qa", "qb", "qc"] and after[2]["hits"][0]["id"] == "n1"

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nqa\ts1\t2\nqa\ts2\t1\nqb\tx1\t1\nqc\tn1\t1\n")
    metrics_out = tmp_path / "metrics.json"
    result = _ok(
        run_cli(
            "index",
            "evaluate",
            str(ix),
            "--queries",
            str(queries),
            "--qrels",
            str(qrels),
            "-o",
            str(metrics_out),
        )
    )
    assert "ndcg@10" in result.stdout and "recall@10" in result.stdout
    assert re.search(r"queries\s+│\s+3 ", result.stdout), result.stdout
    written = json.loads(metrics_out.read_text())
    index = Index.load(ix, precision="fp32")
    texts = {
        "qa": "the team won the match",
        "qb": "space research in the city",
        "qc": "happy story about the sun",
    }
    run = {
        q: [h["id"] for h in r] for q, r in zip(texts, index.search(list(texts.values()), k=100), strict=True)
    }
    expected = evaluate(run, {"qa": {"s1": 2, "s2": 1}, "qb": {"x1": 1}, "qc": {"n1": 1}})
    assert written["mean"] == pytest.approx(expected["mean"])
    assert written["mean"]["mrr@10"] == 1.0


def test_bad_input_exits_2_with_one_line(tiny_sentence_model: Path, tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "good"}, {"id": "a", "text": "bad"}])
    ix = tmp_path / "ix"
    result = run_cli("index", "build", str(tiny_sentence_model), str(corpus), "--out", str(ix))
    _one_line_error(result, "c.jsonl:2: id: duplicate document id 'a' (first at 1)")
    result = run_cli("search", str(tmp_path / "nowhere"), "good")
    _one_line_error(result, "nowhere: index directory not found")
    result = run_cli("index", "build", "minilm", str(tmp_path / "missing.jsonl"), "--out", str(ix), "--quiet")
    _one_line_error(result, "missing.jsonl: file not found")


def test_add_duplicate_and_build_over_existing(tiny_sentence_model: Path, tmp_path: Path) -> None:
    index = Index.build(tiny_sentence_model, [{"id": "a", "text": "good film"}], quiet=True, precision="fp32")
    index.save(tmp_path / "ix")
    (tmp_path / "dup.csv").write_text("id,text\na,bad film\n")
    _one_line_error(
        run_cli("index", "add", str(tmp_path / "ix"), str(tmp_path / "dup.csv")),
        "duplicate document id 'a': already in the index (row 0)",
    )
    _one_line_error(
        run_cli(
            "index",
            "build",
            str(tiny_sentence_model),
            str(tmp_path / "dup.csv"),
            "--out",
            str(tmp_path / "ix"),
        ),
        "already exists; pass --overwrite to replace it",
    )
    assert len(Index.load(tmp_path / "ix")) == 1


def test_mine_writes_triplets_without_positives(tiny_sentence_model: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([*POSITIVE, *NEGATIVE]) + "\n")
    pairs = [
        {"anchor": "good movie", "positive": "great film"},
        {"anchor": "bad movie", "positive": "awful film"},
    ]
    pairs.append({"anchor": "good movie", "positive": "nice plot"})
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "triplets.jsonl"
    result = run_cli(
        "mine",
        str(pairs_file),
        str(corpus),
        "--model",
        str(tiny_sentence_model),
        "--out",
        str(out),
        "--negatives",
        "3",
        "--margin",
        "none",
        "--quiet",
    )
    assert _ok(result).stdout.strip() == f"9 triplets written to {out}"
    triplets = [json.loads(line) for line in out.read_text().splitlines()]
    positives = {
        "good movie": {"great film", "nice plot", "good movie"},
        "bad movie": {"awful film", "bad movie"},
    }
    assert {(t["anchor"], t["positive"]) for t in triplets} == {(p["anchor"], p["positive"]) for p in pairs}
    for t in triplets:
        assert set(t) == {"anchor", "positive", "negative"}
        assert t["negative"] not in positives[t["anchor"]]  # never the anchor itself or one of its positives


def test_mining_rules(tiny_sentence_model: Path) -> None:
    texts = [*POSITIVE, *NEGATIVE]
    index = Index.build(tiny_sentence_model, texts, quiet=True, precision="fp32")
    pairs = [("good movie", "great film")]
    everything = mine_triplets(pairs, index, negatives=100, margin=None)
    assert len(everything.triplets) == len(texts) - 2 and everything.dropped_positive == 2
    enc = index.encoder
    anchor, positive = enc.encode(["good movie"])[0], enc.encode(["great film"])[0]
    limit = float(anchor @ positive) * 0.9
    scored = {t: float(v @ anchor) for t, v in zip(texts, index.vectors, strict=True)}
    kept = mine_triplets(pairs, index, negatives=100, margin=0.9)
    assert {t["negative"] for t in kept.triplets} == {
        t for t, s in scored.items() if s <= limit and t not in ("good movie", "great film")
    }
    assert kept.dropped_margin == sum(
        s > limit for t, s in scored.items() if t not in ("good movie", "great film")
    )
    ranked = [t for t in sorted(scored, key=lambda t: -scored[t]) if t not in ("good movie", "great film")]
    window = mine_triplets(pairs, index, negatives=2, range_min=5, range_max=12, margin=None)
    inside = [t for t in [*sorted(scored, key=lambda t: -scored[t])][5:12] if t in ranked]
    assert [t["negative"] for t in window.triplets] == inside[:2]
    with pytest.raises(RetrievalError, match=r"expected 0 <= range_min < range_max, found 5 / 5"):
        mine_triplets(pairs, index, range_min=5, range_max=5)


@pytest.fixture(scope="module")
def pair_run(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pair-run")
    rows = [
        {"text": q, "text_pair": d, "label": "1" if (q in POSITIVE) == (d in POSITIVE) else "0"}
        for q in POSITIVE[:4] + NEGATIVE[:4]
        for d in POSITIVE[4:8] + NEGATIVE[4:8]
    ]
    data = {"train": write_jsonl(tmp / "pairs.jsonl", rows)}
    config = tiny_config(tiny_backbone, data, tmp / "run", data={"columns": {"text_pair": "text_pair"}})
    return taskhead.train(config, quiet=True).run_dir


def test_rerank_orders_by_positive_probability(
    pair_run: Path, tiny_sentence_model: Path, tmp_path: Path
) -> None:
    texts = [*POSITIVE, *NEGATIVE]
    index = Index.build(tiny_sentence_model, texts, quiet=True, precision="fp32")
    reranker = Reranker(pair_run, device="cpu", precision="fp32")  # a tiny model's near-ties: exact order
    assert reranker.label == "1"
    query = "good film"
    candidates = index.search(query, k=12)[0]
    reranked = reranker.rerank([query], [candidates], k=5)[0]
    probabilities = [
        p["scores"]["1"]
        for p in taskhead.load(pair_run, precision="fp32").predict([(query, h["text"]) for h in candidates])
    ]
    order = np.argsort([-p for p in probabilities], kind="stable")[:5]
    assert [h["id"] for h in reranked] == [candidates[i]["id"] for i in order]
    assert [h["score"] for h in reranked] == pytest.approx([probabilities[i] for i in order], abs=1e-6)
    assert [h["retrieval_score"] for h in reranked] == [candidates[i]["score"] for i in order]
    with pytest.raises(
        RetrievalError, match=r"rerank label: 'relevant' is not a label of .* \(labels: 0, 1\)"
    ):
        Reranker(pair_run, label="relevant")

    index.save(tmp_path / "ix")
    result = _ok(run_cli("search", str(tmp_path / "ix"), query, "-k", "5", "--rerank", str(pair_run)))
    assert "retrieval" in result.stdout and "cross-encoder" in result.stdout
    assert reranked[0]["text"] in result.stdout


def test_embedding_runs_index_and_train_on_mined_triplets(tiny_backbone: Path, tmp_path: Path) -> None:
    pairs = [
        {"anchor": a, "positive": p}
        for a, p in zip(POSITIVE[:5] + NEGATIVE[:5], POSITIVE[5:] + NEGATIVE[5:], strict=True)
    ]
    train = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    config = tiny_config(tiny_backbone, {"train": train}, tmp_path / "run", task={"name": "embedding"})
    config["train"]["max_steps"] = 2
    run = taskhead.train(config, quiet=True).run_dir

    index = Index.build(run, [*POSITIVE, *NEGATIVE], quiet=True, precision="fp32", device="cpu")
    assert index.model_info["model"] == str(run.resolve()) and index.encoder.path == run / "model"
    predicted = np.array([p["embedding"] for p in taskhead.load(run, precision="fp32").predict(POSITIVE)])
    np.testing.assert_allclose(index.vectors[: len(POSITIVE)], predicted, atol=1e-5)

    mined = mine_triplets([(p["anchor"], p["positive"]) for p in pairs], index, negatives=2, margin=None)
    triplets = write_jsonl(tmp_path / "triplets.jsonl", mined.triplets)
    # the embedding task reads mined triplets as they are (the triplet loss: an anchor with two negatives
    # has two rows, which in-batch-negative losses keep out of one batch)
    task = {"name": "embedding", "loss": "triplet"}
    config = tiny_config(tiny_backbone, {"train": triplets}, tmp_path / "run2", task=task)
    config["train"]["max_steps"] = 2
    trained = taskhead.train(config, quiet=True)
    assert len(mined.triplets) == 20 and json.loads((trained.run_dir / "taskhead.json").read_text())[
        "rows"
    ] == {"train": 20}
