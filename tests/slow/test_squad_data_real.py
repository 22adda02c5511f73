"""Slow tier: the official SQuAD v1.1 dev set from ../shared/datasets/squad.

Figures measured here: the file reads in about 0.1 s with no problem; the first-sentence baseline scores
exact match 0.028 (3 of 10,570 questions) and F1 9.755, the same to the last bit as the official
evaluate-v1.1.py (reproduced in tests/test_squad_metrics.py).
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import shared_dataset

from taskhead.data.squad import is_squad_json, read_squad
from taskhead.tasks.squad_metrics import first_sentence_baseline, squad_gold, squad_scores
from test_squad_metrics import official_evaluate

pytestmark = pytest.mark.slow


def test_squad_v1_1_dev_reads_whole_and_scores_the_first_sentence_baseline(
    capsys: pytest.CaptureFixture,
) -> None:
    path = shared_dataset("squad", "dev-v1.1.json")
    assert is_squad_json(path)
    started = time.perf_counter()
    records = read_squad(path)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"reading took {elapsed:.2f} s"
    assert len({r.title for r in records}) == 48
    assert len(records) == 10_570
    assert sum(len(r.answers) for r in records) == 34_726
    assert len({r.id for r in records}) == 10_570
    assert not any(r.is_impossible for r in records)
    assert records[0].where == f"{path} (article 1 'Super_Bowl_50', question 56be4db0acb8001400a502ec)"

    predictions = first_sentence_baseline(records)
    scores = squad_scores(predictions, squad_gold(records))
    official = official_evaluate(json.loads(path.read_text(encoding="utf-8"))["data"], predictions)
    capsys.readouterr()
    assert (scores["exact_match"], scores["f1"]) == (official["exact_match"], official["f1"])
    assert scores["total"] == 10_570 and scores["missing"] == 0
    assert scores["exact_match"] == pytest.approx(100 * 3 / 10_570)
    assert scores["f1"] == pytest.approx(9.7546, abs=1e-4)
