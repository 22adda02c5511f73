"""Readers for each format and the located validation messages of classification data (pinned text)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_jsonl

from taskhead.config import DataConfig
from taskhead.data.readers import read_table
from taskhead.errors import DataError
from taskhead.tasks.classification import ClassificationOptions, ClassificationTask


def task(**options) -> ClassificationTask:
    return ClassificationTask(ClassificationOptions(**options))


def data(**kw) -> DataConfig:
    return DataConfig(**kw)


# ---------------------------------------------------------------- readers


def test_csv_with_quotes_bom_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes('\ufeffid,text,label\n1,"hello, ""world""",a\n\n2,"two\nlines",b\n3,plain,a\n'.encode())
    table = read_table(path)
    assert table.columns == ["id", "text", "label"]
    assert [r.values["text"] for r in table.rows] == ['hello, "world"', "two\nlines", "plain"]
    assert [r.where for r in table.rows] == [2, 4, 6]


def test_tsv_without_quoting_and_without_header(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text('a "quoted\tpos\nsecond "\tneg\n', encoding="utf-8")
    table = read_table(path, header=False, quoting="none")
    assert table.columns == ["0", "1"]
    assert table.rows[0].values == {"0": 'a "quoted', "1": "pos"}


def test_latin1_file_needs_its_encoding(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_bytes(b"text\tlabel\nok\ta\nsister\xf0city\tb\n")
    with pytest.raises(
        DataError, match=r"d\.tsv:3: not valid utf-8 \(byte 0xf0 at column 7\); set data\.encoding"
    ):
        read_table(path)
    assert read_table(path, encoding="latin-1").rows[1].values["text"] == "sister\xf0city"


def test_jsonl_reports_every_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", \n[1, 2]\n{"text": "c", "label": "y"}\n')
    with pytest.raises(DataError) as info:
        read_table(path)
    assert info.value.problems == [
        f"{path}:2: malformed JSON line: Expecting property name enclosed in double quotes (column 15)",
        f"{path}:3: expected a JSON object per line, found list",
    ]


def test_parquet_and_json_array_and_text(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}).to_parquet(tmp_path / "d.parquet")
    table = read_table(tmp_path / "d.parquet")
    assert [r.values for r in table.rows] == [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    assert table.loc(table.rows[1]).endswith("d.parquet (record 2)")
    (tmp_path / "d.json").write_text('[{"text": "a"}, {"text": "b"}]')
    assert len(read_table(tmp_path / "d.json").rows) == 2
    (tmp_path / "d.txt").write_text("one\n\ntwo\n")
    assert [(r.values["text"], r.where) for r in read_table(tmp_path / "d.txt").rows] == [
        ("one", 1),
        ("two", 3),
    ]


def test_wrong_field_count_and_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,b\nc,d,e\n")
    with pytest.raises(DataError, match=r"d\.csv:3: expected 2 fields, found 3"):
        read_table(path)
    with pytest.raises(
        DataError, match=r"cannot tell the format from the extension '\.xyz'; set data\.format"
    ):
        read_table(tmp_path / "d.xyz")


# ---------------------------------------------------------------- validation


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        task().read(tmp_path / "nope.jsonl", data())


def test_missing_column_lists_existing_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"sentence": "a", "label": "x"}])
    with pytest.raises(DataError) as info:
        task().read(path, data())
    assert str(info.value) == (
        f"{path}: column 'text' not found (columns: sentence, label); set data.columns.text to the column "
        f"that holds it"
    )


def test_all_row_problems_are_reported_with_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"text": "fine", "label": "x"},
            {"text": "", "label": "x"},
            {"text": "no label"},
            {"text": 5, "label": "x"},
            {"text": "list label", "label": ["x"]},
        ],
    )
    with pytest.raises(DataError) as info:
        task().read(path, data())
    assert info.value.problems == [
        f"{path}:2: text: empty text; expected a non-empty string",
        f"{path}:3: label: missing label",
        f"{path}:4: text: expected a text (string), found int 5",
        f"{path}:5: label: expected a label (string or integer), found list",
    ]


def test_error_cap(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "", "label": "x"}] * 30)
    with pytest.raises(DataError) as info:
        task().read(path, data(max_errors=5))
    assert len(info.value.problems) == 5 and info.value.total == 30
    assert str(info.value).endswith("... and 25 more problem(s) not shown")


def test_unknown_eval_label_and_single_occurrence_warning(tmp_path: Path) -> None:
    t = task()
    train = t.read(
        write_jsonl(
            tmp_path / "t.jsonl",
            [
                {"text": "a", "label": "sports"},
                {"text": "b", "label": "sports"},
                {"text": "c", "label": "world"},
            ],
        ),
        data(),
    )
    ev = t.read(write_jsonl(tmp_path / "e.jsonl", [{"text": "a", "label": "sprots"}]), data())
    with pytest.raises(DataError) as info:
        t.prepare({"train": train, "eval": ev}, data())
    assert str(info.value) == (
        f"{tmp_path / 'e.jsonl'}:1: label: 'sprots' is not a label of the training data "
        f"(labels: sports, world); did you mean 'sports'?"
    )
    warnings = t.prepare({"train": train}, data())
    assert warnings == [f"{tmp_path / 't.jsonl'}:3: label 'world' occurs only once in the training data"]


def test_multilabel_from_list_and_delimited_string(tmp_path: Path) -> None:
    t = task(multi_label=True)
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"text": "a", "labels": ["x", "y"]}, {"text": "b", "labels": []}]
    )
    assert [ex["labels"] for ex in t.read(path, data())] == [["x", "y"], []]
    csv = tmp_path / "d.tsv"
    csv.write_text("text\tlabels\na\tx|y\nb\t\n")
    assert [ex["labels"] for ex in t.read(csv, data(label_delimiter="|"))] == [["x", "y"], []]


def test_text_pairs_and_ids_from_headerless_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("q1,first,second,yes\nq2,third,fourth,no\n")
    cols = {"id": 0, "text": 1, "text_pair": 2, "label": 3}
    examples = task().read(path, data(header=False, columns=cols))
    assert [(e["id"], e["text"], e["text_pair"], e["label"]) for e in examples] == [
        ("q1", "first", "second", "yes"),
        ("q2", "third", "fourth", "no"),
    ]
