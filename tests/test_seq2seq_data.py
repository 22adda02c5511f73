"""Generation data: tables with several references, parallel text files and SQuAD as abstractive QA, with
located error messages (pinned)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

from taskhead.data.seq2seq import (
    Pair,
    count_long,
    pairs_from_squad,
    read_pairs,
    read_parallel,
    split_parallel_spec,
)
from taskhead.errors import ConfigError, DataError


def problems_of(call, *args, **kwargs) -> list[str]:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return info.value.problems


# ---------------------------------------------------------------- tables: layouts


def test_jsonl_text_and_list_targets_with_ids(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": "a", "source": "Hello world.", "target": "Hallo Welt."}\n'
        "\n"
        '{"id": 7, "source": "Good morning.", "target": ["Guten Morgen.", "Morgen!"]}\n',
        encoding="utf-8",
    )
    assert read_pairs(path) == [
        Pair("Hello world.", ["Hallo Welt."], f"{path}:1", "a"),
        Pair("Good morning.", ["Guten Morgen.", "Morgen!"], f"{path}:3", "7"),
    ]


def test_source_as_a_list_of_sentences_is_joined_with_spaces(tmp_path: Path) -> None:
    """SciTLDR keeps each abstract as a list of sentences."""
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"source": ["First sentence.", "Second one."], "target": ["tldr one", "tldr two"], "paper_id": 3}],
    )
    (pair,) = read_pairs(path)
    assert pair == Pair("First sentence. Second one.", ["tldr one", "tldr two"], f"{path}:1", None)


def test_renamed_columns_and_unlabelled(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"uid": "x", "document": "long text", "summary": "short"}])
    assert read_pairs(path, source="document", target="summary", id_column="uid") == [
        Pair("long text", ["short"], f"{path}:1", "x")
    ]
    unlabelled = write_jsonl(tmp_path / "u.jsonl", [{"document": "only a source"}])
    assert read_pairs(unlabelled, source="document", labelled=False) == [
        Pair("only a source", [], f"{unlabelled}:1", None)
    ]


def test_csv_several_references_need_a_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('source,target\n"a, b",x | y|z\nc,"one ref"\n', encoding="utf-8")
    assert read_pairs(path, reference_delimiter="|") == [
        Pair("a, b", ["x", "y", "z"], f"{path}:2"),
        Pair("c", ["one ref"], f"{path}:3"),
    ]
    assert read_pairs(path)[0].targets == ["x | y|z"]  # without a delimiter the cell is one reference


def test_tsv_without_header_and_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text('he said "hi"\ter sagte "hallo"\n', encoding="utf-8")
    assert read_pairs(path, header=False, quoting="none", source="0", target="1") == [
        Pair('he said "hi"', ['er sagte "hallo"'], f"{path}:1")
    ]
    text = tmp_path / "inputs.txt"
    text.write_text("first\n\nsecond\n", encoding="utf-8")
    assert [(p.source, p.where) for p in read_pairs(text, labelled=False)] == [
        ("first", f"{text}:1"),
        ("second", f"{text}:3"),
    ]


def test_parquet_list_targets(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    path = tmp_path / "d.parquet"
    pd.DataFrame({"source": ["s1", "s2"], "target": [["t1"], ["t2", "t2b"]]}).to_parquet(path)
    assert read_pairs(path) == [
        Pair("s1", ["t1"], f"{path} (record 1)"),
        Pair("s2", ["t2", "t2b"], f"{path} (record 2)"),
    ]


# ---------------------------------------------------------------- tables: errors


def test_missing_columns_list_the_existing_ones(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"src": "a", "tgt": "b"}])
    assert problems_of(read_pairs, path) == [
        f"{path}: column 'source' not found (columns: src, tgt); did you mean 'src'? set data.columns.source "
        f"to the column that holds it",
        f"{path}: column 'target' not found (columns: src, tgt); did you mean 'tgt'? set data.columns.target "
        f"to the column that holds it",
    ]


def test_every_row_problem_is_reported(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"source": "ok", "target": "ok"},
            {"source": "  ", "target": "x"},
            {"source": 5, "target": "x"},
            {"target": "x"},
            {"source": "a", "target": ""},
            {"source": "a", "target": []},
            {"source": "a", "target": ["fine", 3, " "]},
            {"source": "a", "target": {"text": "x"}},
            {"source": "a"},
            {"source": "a", "target": "x", "id": 1.5},
        ],
    )
    assert problems_of(read_pairs, path) == [
        f"{path}:2: source: empty, expected a non-empty text, found '  '",
        f"{path}:3: source: expected a text or a list of texts, found int 5",
        f"{path}:4: source: missing, expected a non-empty text",
        f"{path}:5: target: empty, expected a non-empty text, found ''",
        f"{path}:6: target: empty list, expected at least one reference text, found []",
        f"{path}:7: target[1]: expected a text (string), found int 3",
        f"{path}:7: target[2]: empty, expected a non-empty text, found ' '",
        f"{path}:8: target: expected a text or a list of texts, found dict {{'text': 'x'}}",
        f"{path}:9: target: expected a text or a list of texts, missing",
        f"{path}:10: id: expected a string or an integer, found float 1.5",
    ]


def test_empty_reference_between_delimiters(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("source\ttarget\na\tx||y\nb\t \n", encoding="utf-8")
    assert problems_of(read_pairs, path, reference_delimiter="|") == [
        f"{path}:2: target: empty reference 2 of 3 (split on '|'), expected a non-empty text between "
        f"delimiters, found 'x||y'",
        f"{path}:3: target: empty, expected a non-empty text, found ' '",
    ]


def test_problems_are_capped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"source": "", "target": "x"}] * 5)
    with pytest.raises(DataError) as info:
        read_pairs(path, max_errors=2)
    assert len(info.value.problems) == 2
    assert str(info.value).endswith("... and 3 more problem(s) not shown")


def test_no_records_and_squad_json(tmp_path: Path) -> None:
    empty = tmp_path / "e.csv"
    empty.write_text("source,target\n", encoding="utf-8")
    assert problems_of(read_pairs, empty) == [f"{empty}: no records, expected at least one"]
    squad = tmp_path / "dev.json"
    squad.write_text(json.dumps({"version": "1.1", "data": []}), encoding="utf-8")
    assert problems_of(read_pairs, squad) == [
        f'{squad}: SQuAD JSON (an object with a "data" list of articles), expected one record per line for '
        f"JSON Lines; read it with pairs_from_squad(path)"
    ]
    assert problems_of(read_pairs, tmp_path / "absent.jsonl") == [
        f"{tmp_path / 'absent.jsonl'}: file not found"
    ]


# ---------------------------------------------------------------- parallel text files


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("end", ["\n", ""])
def test_parallel_with_and_without_final_newline(tmp_path: Path, end: str) -> None:
    en = write(tmp_path / "train.en", "A man.\nTwo dogs.\nA red car." + end)
    de = write(tmp_path / "train.de", "Ein Mann.\nZwei Hunde.\nEin rotes Auto." + end)
    assert read_parallel(en, de) == [
        Pair("A man.", ["Ein Mann."], f"{en}:1"),
        Pair("Two dogs.", ["Zwei Hunde."], f"{en}:2"),
        Pair("A red car.", ["Ein rotes Auto."], f"{en}:3"),
    ]


def test_parallel_one_file_with_final_newline_the_other_without(tmp_path: Path) -> None:
    en = write(tmp_path / "a.en", "one\ntwo\n")
    de = write(tmp_path / "a.de", "eins\r\nzwei")  # CRLF, no final newline
    assert [(p.source, p.targets) for p in read_parallel(en, de)] == [("one", ["eins"]), ("two", ["zwei"])]


def test_parallel_splits_on_newline_only(tmp_path: Path) -> None:
    en = write(tmp_path / "a.en", "line\u2028with separator\x85and NEL\nsecond\n")
    de = write(tmp_path / "a.de", "Zeile\nzweite\n")
    assert [p.source for p in read_parallel(en, de)] == ["line\u2028with separator\x85and NEL", "second"]


def test_parallel_target_longer(tmp_path: Path) -> None:
    en = write(tmp_path / "train.en", "s\n" * 1000)
    de = write(tmp_path / "train.de", "t\n" * 1001)
    assert problems_of(read_parallel, en, de) == [
        f"{de}: 1,001 lines, 1 more than {en} (1,000); expected one target line per source line"
    ]


def test_parallel_source_longer(tmp_path: Path) -> None:
    en = write(tmp_path / "train.en", "a\nb\nc\n")
    de = write(tmp_path / "train.de", "x\n")
    assert problems_of(read_parallel, en, de) == [
        f"{en}: 3 lines, 2 more than {de} (1); expected one target line per source line"
    ]


def test_parallel_empty_lines_are_located_in_their_file(tmp_path: Path) -> None:
    en = write(tmp_path / "train.en", "a\n\nc\nd\n\n")  # line 2 empty, and an empty line 5 before the end
    de = write(tmp_path / "train.de", "w\nx\n  \nz\nv\n")
    assert problems_of(read_parallel, en, de) == [
        f"{en}:2: empty source line, expected one sentence on every line",
        f"{en}:5: empty source line, expected one sentence on every line",
        f"{de}:3: empty target line, expected one sentence on every line",
    ]


def test_parallel_mismatch_and_empty_lines_together(tmp_path: Path) -> None:
    en = write(tmp_path / "train.en", "a\n\n")
    de = write(tmp_path / "train.de", "x\n")
    assert problems_of(read_parallel, en, de) == [
        f"{en}: 2 lines, 1 more than {de} (1); expected one target line per source line",
        f"{en}:2: empty source line, expected one sentence on every line",
    ]


def test_parallel_unlabelled_empty_and_missing(tmp_path: Path) -> None:
    en = write(tmp_path / "test.en", "a\nb\n")
    assert read_parallel(en, None, labelled=False) == [Pair("a", [], f"{en}:1"), Pair("b", [], f"{en}:2")]
    with pytest.raises(ConfigError, match=r"test\.en: no target file, expected a target file for labelled"):
        read_parallel(en, None)
    empty = write(tmp_path / "empty.en", "")
    assert problems_of(read_parallel, empty, None, labelled=False) == [
        f"{empty}: no lines, expected one sentence per line"
    ]
    assert problems_of(read_parallel, en, tmp_path / "test.de") == [f"{tmp_path / 'test.de'}: file not found"]


def test_split_parallel_spec(tmp_path: Path) -> None:
    assert split_parallel_spec("train.en+train.de") == ("train.en", "train.de")
    assert split_parallel_spec("data/train.en + data/train.de") == ("data/train.en", "data/train.de")
    assert split_parallel_spec("train.jsonl") is None
    assert split_parallel_spec("a+b+c") is None
    assert split_parallel_spec("+train.de") is None
    plus = write(tmp_path / "a+b.jsonl", "{}\n")
    assert split_parallel_spec(plus) is None  # an existing file whose name holds a +


# ---------------------------------------------------------------- SQuAD as abstractive QA

CONTEXT = "The Normans gave their name to Normandy, a region in France."


def squad_file(tmp_path: Path, qas: list[dict[str, Any]], title: str = "Normans") -> Path:
    data = {"version": "v2.0", "data": [{"title": title, "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def answer(text: str) -> dict[str, Any]:
    return {"text": text, "answer_start": CONTEXT.index(text)}


QAS = [
    {
        "id": "q1",
        "question": "Who?",
        "answers": [answer("The Normans"), answer("Normans"), answer("The Normans")],
    },
    {"id": "q2", "question": "Capital?", "answers": [], "is_impossible": True},
    {"id": "q3", "question": "Where?", "answers": [answer("France")], "is_impossible": False},
]


def test_squad_pairs_distinct_answers_and_skipped_unanswerable(tmp_path: Path) -> None:
    path = squad_file(tmp_path, QAS)
    pairs, skipped = pairs_from_squad(path)
    assert skipped == 1
    assert pairs == [
        Pair(
            f"question: Who? context: {CONTEXT}",
            ["The Normans", "Normans"],
            f"{path} (article 1 'Normans', question q1)",
            "q1",
        ),
        Pair(
            f"question: Where? context: {CONTEXT}",
            ["France"],
            f"{path} (article 1 'Normans', question q3)",
            "q3",
        ),
    ]


def test_squad_template_with_title_and_unlabelled(tmp_path: Path) -> None:
    path = squad_file(tmp_path, QAS)
    pairs, skipped = pairs_from_squad(path, template="{title}: {question}", labelled=False)
    assert skipped == 0
    assert [(p.source, p.targets) for p in pairs] == [
        ("Normans: Who?", []),
        ("Normans: Capital?", []),
        ("Normans: Where?", []),
    ]


def test_squad_template_errors(tmp_path: Path) -> None:
    path = squad_file(tmp_path, QAS)
    with pytest.raises(ConfigError) as info:
        pairs_from_squad(path, template="q: {question} a: {answer}")
    assert str(info.value) == "task.template: unknown field {answer}; fields: question, context, title"
    with pytest.raises(ConfigError) as info:
        pairs_from_squad(path, template="context: {context}")
    assert str(info.value) == (
        "task.template: no {question} field in 'context: {context}'; fields: question, context, title"
    )
    with pytest.raises(ConfigError) as info:
        pairs_from_squad(path, template="{question} {")
    assert str(info.value) == (
        "task.template: Single '{' encountered in format string; write {{ and }} for literal braces"
    )
    with pytest.raises(ConfigError, match=r"unknown field \{0\}"):
        pairs_from_squad(path, template="{question} {0}")


def test_squad_without_answerable_questions_and_invalid_file(tmp_path: Path) -> None:
    path = squad_file(tmp_path, [QAS[1]])
    assert problems_of(pairs_from_squad, path) == [
        f"{path}: no answerable questions (1 unanswerable skipped), expected at least one"
    ]
    bad = squad_file(tmp_path, [{"id": "q1", "question": "", "answers": [answer("France")]}])
    assert problems_of(pairs_from_squad, bad) == [
        f"{bad} (article 1 'Normans', question q1): question: empty, expected a non-empty text, found ''"
    ]


def test_count_long() -> None:
    assert count_long([3, 10, 11, 64], 10) == 2
    assert count_long([], 5) == 0
