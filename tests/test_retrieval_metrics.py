"""Retrieval metrics on hand-computed cases, and the BEIR / TREC readers with their located errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from taskhead.errors import DataError
from taskhead.retrieval import metrics
from taskhead.retrieval.beir import read_beir, read_beir_corpus, read_qrels, read_queries

RANKING = ["d1", "d2", "d3", "d4", "d5"]
JUDGED = {"d2": 2, "d4": 1, "d9": 3, "d5": 0, "d1": -1}  # relevant: d2, d4, d9 (d9 never retrieved)


def test_recall_and_precision_at_k() -> None:
    assert metrics.recall_at_k(RANKING, JUDGED, 1) == 0.0
    assert metrics.recall_at_k(RANKING, JUDGED, 2) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(RANKING, JUDGED, 5) == pytest.approx(2 / 3)
    assert metrics.precision_at_k(RANKING, JUDGED, 2) == pytest.approx(1 / 2)
    assert metrics.precision_at_k(RANKING, JUDGED, 5) == pytest.approx(2 / 5)
    # precision divides by k even when fewer documents were returned (trec_eval's P_k)
    assert metrics.precision_at_k(RANKING, JUDGED, 10) == pytest.approx(2 / 10)


def test_reciprocal_rank_cut_at_k() -> None:
    assert metrics.reciprocal_rank(RANKING, JUDGED, 10) == pytest.approx(1 / 2)
    assert metrics.reciprocal_rank(RANKING, JUDGED, 1) == 0.0
    assert metrics.reciprocal_rank(["x", "y", "d4"], JUDGED) == pytest.approx(1 / 3)


def test_graded_ndcg() -> None:
    # DCG@10 = 2/log2(3) + 1/log2(5); ideal order of the grades 3, 2, 1 = 3/log2(2) + 2/log2(3) + 1/log2(4)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 3 / 1 + 2 / math.log2(3) + 1 / 2
    assert metrics.ndcg_at_k(RANKING, JUDGED, 10) == pytest.approx(dcg / ideal)
    assert dcg / ideal == pytest.approx(0.355436, abs=1e-6)
    # cut at 2: only d2 counts, the ideal holds the two best grades
    assert metrics.ndcg_at_k(RANKING, JUDGED, 2) == pytest.approx((2 / math.log2(3)) / (3 + 2 / math.log2(3)))
    assert metrics.ndcg_at_k(["d9", "d2", "d4"], JUDGED, 10) == pytest.approx(1.0)
    # a negative grade gains nothing (it is not -1 gain)
    assert metrics.ndcg_at_k(["d1", "d9"], JUDGED, 10) == pytest.approx((3 / math.log2(3)) / ideal)


def test_average_precision() -> None:
    # relevant at ranks 2 and 4: (1/2 + 2/4) / 3 relevant documents
    assert metrics.average_precision(RANKING, JUDGED) == pytest.approx(1 / 3)
    assert metrics.average_precision(RANKING, JUDGED, 3) == pytest.approx((1 / 2) / 3)
    assert metrics.average_precision(["d9", "d2", "d4"], JUDGED) == pytest.approx(1.0)
    # a repeated id counts once, at its first rank
    assert metrics.average_precision(["d2", "d2", "d4"], {"d2": 1, "d4": 1}) == pytest.approx((1 + 2 / 2) / 2)


def test_evaluate_means_skips_unjudgeable_and_scores_missing_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 2, "c": 1}, "q3": {"x": 0}, "q4": {"z": 1}}
    run = {"q1": ["a", "b"], "q2": ["c", "b"], "q3": ["x"]}
    report = metrics.evaluate(run, qrels, ks=(1, 2), depth=10)
    assert report["queries"] == 3
    assert report["without_relevant"] == ["q3"]
    assert report["missing_from_run"] == ["q4"]
    per = report["per_query"]
    assert per["q1"]["mrr@10"] == 1.0 and per["q2"]["mrr@10"] == 1.0 and per["q4"]["mrr@10"] == 0.0
    assert report["mean"]["mrr@10"] == pytest.approx(2 / 3)
    assert per["q2"]["recall@1"] == pytest.approx(1 / 2)
    assert report["mean"]["recall@2"] == pytest.approx((1 + 1 + 0) / 3)
    q2_ndcg = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert per["q2"]["ndcg@10"] == pytest.approx(q2_ndcg)
    assert report["mean"]["ndcg@10"] == pytest.approx((1 + q2_ndcg + 0) / 3)
    assert set(report["mean"]) == {
        "ndcg@10",
        "mrr@10",
        "map@10",
        "recall@1",
        "recall@2",
        "precision@1",
        "precision@2",
    }


# --------------------------------------------------------------------------------------------- readers


def _beir(folder: Path, qrels_lines: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = [
        {"_id": "d1", "title": "Space", "text": "research on space"},
        {"_id": "d2", "title": "", "text": "the stock market fell"},
        {"_id": "d3", "text": "a good film", "metadata": {"year": 2020}},
    ]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    queries = [
        {"_id": "q1", "text": "space research"},
        {"_id": "q2", "text": "markets"},
        {"_id": "q3", "text": "x"},
    ]
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    lines = qrels_lines or ["query-id\tcorpus-id\tscore", "q1\td1\t2", "q2\td2\t1", "q2\td3\t0"]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_read_beir_folder(tmp_path: Path) -> None:
    collection = read_beir(_beir(tmp_path / "beir"))
    assert collection.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1, "d3": 0}}
    assert collection.queries == {"q1": "space research", "q2": "markets"}  # only judged queries
    assert collection.corpus is not None
    docs = {d.id: d for d in collection.corpus}
    assert docs["d1"].text == "Space research on space" and docs["d1"].metadata == {"title": "Space"}
    assert docs["d2"].text == "the stock market fell"
    assert docs["d3"].metadata == {"year": 2020}


def test_read_trec_qrels_and_query_formats(tmp_path: Path) -> None:
    (tmp_path / "qrels.txt").write_text("1 0 184 2\n1 0 29 -1\n\n2 0 12 1\n", encoding="utf-8")
    assert read_qrels(tmp_path / "qrels.txt") == {"1": {"184": 2, "29": -1}, "2": {"12": 1}}
    (tmp_path / "q.tsv").write_text('1\twhat is space\n2\tstock "prices"\n', encoding="utf-8")
    assert read_queries(tmp_path / "q.tsv") == {"1": "what is space", "2": 'stock "prices"'}
    (tmp_path / "qh.tsv").write_text("qid\ttext\na\tfirst\n", encoding="utf-8")
    assert read_queries(tmp_path / "qh.tsv") == {"a": "first"}
    (tmp_path / "q.csv").write_text('id,query\nx,"hello, world"\n', encoding="utf-8")
    assert read_queries(tmp_path / "q.csv") == {"x": "hello, world"}
    (tmp_path / "q.txt").write_text("first query\n\nsecond query\n", encoding="utf-8")
    assert read_queries(tmp_path / "q.txt") == {"1": "first query", "3": "second query"}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ["query-id\tcorpus-id\tscore", "q1\td1\t2", "q1\td2\thigh"],
            r"test.tsv:3: score: expected an integer",
        ),
        (["query-id\tcorpus-id\tscore", "q1\td1"], r"test.tsv:2: expected 3 fields \(query-id<TAB>corpus-id"),
        (["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td1\t2"], r"test.tsv:3: query 'q1' judges document"),
        (
            ["query-id\tcorpus-id\tscore", "q9\td1\t1"],
            r"judges 1 query id\(s\) not in queries.jsonl, e.g. 'q9'",
        ),
    ],
)
def test_qrels_errors_are_located(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_beir(_beir(tmp_path / "beir", lines))


def test_reader_errors_are_located(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("1 0 d1\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"t.txt:1: expected 4 fields \(query_id iteration doc_id relevance\)"
    ):
        read_qrels(tmp_path / "t.txt")
    (tmp_path / "q.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n{"_id": 3\n')
    with pytest.raises(DataError, match=r"q.jsonl:3: malformed JSON line"):
        read_queries(tmp_path / "q.jsonl")
    (tmp_path / "q.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": ""}\n')
    with pytest.raises(DataError) as info:
        read_queries(tmp_path / "q.jsonl")
    assert info.value.problems == [
        "{}:2: _id: duplicate id 'a' (first at {}:1)".format(*[tmp_path / "q.jsonl"] * 2),
        f"{tmp_path / 'q.jsonl'}:2: text: expected a non-empty string, found ''",
    ]
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "title": "", "text": " "}\n')
    with pytest.raises(DataError, match=r"c.jsonl:1: text: expected a non-empty string"):
        read_beir_corpus(tmp_path / "c.jsonl")
    with pytest.raises(DataError, match=r"qrels/dev.tsv: file not found \(splits in .*qrels: test\)"):
        read_beir(_beir(tmp_path / "beir"), "dev")
