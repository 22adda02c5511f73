"""Question-answering data: SQuAD JSON (v1.1, v2.0) and QA tables, with located error messages (pinned)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

from taskhead.data.squad import QARecord, is_squad_json, read_qa_table, read_squad
from taskhead.errors import ConfigError, DataError

NORMANS = "The Normans were the people who gave their name to Normandy, a region in France."
WARSAW = "Warsaw is the capital of Poland. It lies on the Vistula."


def squad(*articles: dict[str, Any], version: str = "1.1") -> dict[str, Any]:
    return {"version": version, "data": list(articles)}


def article(title: str, *paragraphs: dict[str, Any]) -> dict[str, Any]:
    return {"title": title, "paragraphs": list(paragraphs)}


def paragraph(context: Any, *qas: dict[str, Any]) -> dict[str, Any]:
    return {"context": context, "qas": list(qas)}


def qa(qid: Any, question: Any, *answers: tuple[Any, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": qid,
        "question": question,
        "answers": [{"text": t, "answer_start": s} for t, s in answers],
    } | extra


def write_json(path: Path, value: Any, *, indent: int | None = None) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=indent), encoding="utf-8")
    return path


def problems_of(call, *args, **kwargs) -> list[str]:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return info.value.problems


V1 = squad(
    article(
        "Normans",
        paragraph(
            NORMANS,
            qa("q1", "Who gave their name to Normandy?", ("The Normans", 0), ("Normans", 4)),
            qa("q2", "Where is Normandy?", ("France", 73), ("in France", 70), ("France", 73)),
        ),
    ),
    article("Warsaw", paragraph(WARSAW, qa("q3", "What is the capital of Poland?", ("Warsaw", 0)))),
)


# ---------------------------------------------------------------- SQuAD JSON: layouts


def test_squad_v1_records_in_file_order(tmp_path: Path) -> None:
    path = write_json(tmp_path / "dev.json", V1, indent=2)
    records = read_squad(path)
    assert [r.id for r in records] == ["q1", "q2", "q3"]
    assert records[0] == QARecord(
        "q1",
        "Who gave their name to Normandy?",
        NORMANS,
        [("The Normans", 0), ("Normans", 4)],
        False,
        f"{path} (article 1 'Normans', question q1)",
        "Normans",
    )
    assert records[1].answers == [("France", 73), ("in France", 70), ("France", 73)]  # repeats are kept
    assert records[2].where == f"{path} (article 2 'Warsaw', question q3)"
    assert [r.title for r in records] == ["Normans", "Normans", "Warsaw"]


def test_squad_v2_unanswerable_questions(tmp_path: Path) -> None:
    plausible = {"plausible_answers": [{"text": "Poland", "answer_start": 25}]}
    data = squad(
        article(
            "Warsaw",
            paragraph(
                WARSAW,
                qa("a", "What is the capital of Poland?", ("Warsaw", 0), is_impossible=False),
                qa("b", "What is the capital of Spain?", is_impossible=True, **plausible),
            ),
        ),
        version="v2.0",
    )
    records = read_squad(write_json(tmp_path / "dev-v2.0.json", data))
    assert [(r.id, r.answers, r.is_impossible) for r in records] == [
        ("a", [("Warsaw", 0)], False),
        ("b", [], True),
    ]


def test_an_is_impossible_key_makes_a_file_v2_whatever_its_version(tmp_path: Path) -> None:
    data = squad(article("W", paragraph(WARSAW, qa("b", "Capital of Spain?", is_impossible=True))))
    del data["version"]
    assert read_squad(write_json(tmp_path / "d.json", data))[0].is_impossible is True


def test_unlabelled_reads_neither_answers_nor_is_impossible(tmp_path: Path) -> None:
    data = squad(
        article(
            "W",
            paragraph(
                WARSAW,
                {"id": "x", "question": "No answers here?"},
                qa("y", "Wrong offset?", ("Warsaw", 3), is_impossible=True),
            ),
        )
    )
    records = read_squad(write_json(tmp_path / "test.json", data), labelled=False)
    assert [(r.id, r.answers, r.is_impossible) for r in records] == [("x", [], False), ("y", [], False)]


def test_answer_with_surrounding_whitespace_is_stripped_and_its_start_moved(tmp_path: Path) -> None:
    data = squad(
        article(
            "N",
            paragraph(
                NORMANS,
                qa("a", "Region?", (" Normandy", 50)),  # start at the space before the word
                qa("b", "Region?", ("Normandy ", 51)),  # the context has "," after the word
                qa("c", "Region?", ("  Normandy", 51)),  # start already at the word
            ),
        )
    )
    records = read_squad(write_json(tmp_path / "d.json", data))
    assert [r.answers for r in records] == [[("Normandy", 51)]] * 3


def test_ids_integers_and_missing_ids(tmp_path: Path) -> None:
    data = squad(
        article("W", paragraph(WARSAW, qa(7, "Capital?", ("Warsaw", 0)), qa(None, "River?", ("Vistula", 48))))
    )
    path = write_json(tmp_path / "d.json", data)
    records = read_squad(path)
    assert [r.id for r in records] == ["7", "1.1.2"]
    assert records[1].where == f"{path} (article 1 'W', paragraph 1, question 2)"


def test_stdin_bom_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = "\ufeff".encode() + json.dumps(V1).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw)))
    records = read_squad("-")
    assert len(records) == 3
    assert records[0].where == "<stdin> (article 1 'Normans', question q1)"
    assert problems_of(read_squad, tmp_path / "absent.json") == [
        f"{tmp_path / 'absent.json'}: file not found"
    ]


# ---------------------------------------------------------------- SQuAD JSON: validation (pinned text)


def test_every_answer_and_question_problem_of_a_file_is_reported(tmp_path: Path) -> None:
    data = squad(
        article(
            "Normans",
            paragraph(
                NORMANS,
                qa("ok", "Who?", ("Normans", 4)),
                qa("off", "Where?", ("Normandy", 48)),
                qa("neg", "Where?", ("France", -1)),
                qa("far", "Where?", ("France", 500)),
                qa("str", "Where?", ("France", "75")),
                qa("float", "Where?", ("France", 75.0)),
                qa("empty", "Where?", ("  ", 3)),
                qa("none", "Where?"),
                qa("ok", "Who again?", ("Normans", 4)),
                qa("blank", "  ", ("Normans", 4)),
                {"id": "noq", "answers": [{"text": "Normans", "answer_start": 4}]},
                {"id": "noa", "question": "What?"},
                qa("gone", "Where?", ("Paris", 10)),
            ),
            paragraph("", qa("ctx", "Anything?", ("x", 0))),
        )
    )
    path = write_json(tmp_path / "dev.json", data)
    at = f"{path} (article 1 'Normans'"
    assert problems_of(read_squad, path) == [
        f"{at}, question off): answers[0]: answer_start 48 points at 'to Norma' in the context, "
        "expected 'Normandy'; the text occurs at offset 51",
        f"{at}, question neg): answers[0].answer_start: out of range, expected an offset from 0 to 79 "
        "(the context has 80 characters), found -1",
        f"{at}, question far): answers[0].answer_start: out of range, expected an offset from 0 to 79 "
        "(the context has 80 characters), found 500",
        f"{at}, question str): answers[0].answer_start: expected an integer character offset, found str '75'",
        f"{at}, question float): answers[0].answer_start: expected an integer character offset, "
        "found float 75.0",
        f"{at}, question empty): answers[0].text: empty answer text, expected the answer, found '  '",
        f"{at}, question none): answers: no answers, expected at least one (SQuAD v1.1 has no unanswerable "
        'questions; SQuAD v2 marks them "is_impossible": true), found []',
        f"{at}, question ok): id: duplicated question id 'ok', expected unique ids, first seen at "
        f"{at}, question ok)",
        f"{at}, question blank): question: empty, expected a non-empty text, found '  '",
        f"{at}, question noq): question: missing, expected a non-empty text",
        f'{at}, question noa): answers: expected a list of {{"text", "answer_start"}} objects, missing',
        f"{at}, question gone): answers[0]: answer_start 10 points at 's wer' in the context, "
        "expected 'Paris'; the text does not occur in the context",
        f"{at}, paragraph 2): context: empty, expected a non-empty text, found ''",
    ]


def test_v2_is_impossible_must_agree_with_the_answers(tmp_path: Path) -> None:
    data = squad(
        article(
            "W",
            paragraph(
                WARSAW,
                qa("both", "Capital?", ("Warsaw", 0), is_impossible=True),
                qa("neither", "Capital?", is_impossible=False),
                qa("odd", "Capital?", ("Warsaw", 0), is_impossible="no"),
            ),
        ),
        version="v2.0",
    )
    path = write_json(tmp_path / "v2.json", data)
    assert problems_of(read_squad, path) == [
        f"{path} (article 1 'W', question both): answers: expected none on a question marked "
        '"is_impossible": '
        'true (SQuAD v2 keeps those in "plausible_answers"), found 1',
        f"{path} (article 1 'W', question neither): answers: no answers, expected at least one "
        'or "is_impossible": true, found []',
        f"{path} (article 1 'W', question odd): is_impossible: expected true or false, found str 'no'",
    ]


def test_long_texts_are_shortened_in_messages(tmp_path: Path) -> None:
    context = "x" * 200 + "y" * 100
    data = squad(article("L", paragraph(context, qa("q", "Long?", ("y" * 100, 150)))))
    path = write_json(tmp_path / "l.json", data)
    shown_found, shown_text = "x" * 50 + "y" * 9 + "…", "y" * 59 + "…"
    assert problems_of(read_squad, path) == [
        f"{path} (article 1 'L', question q): answers[0]: answer_start 150 points at {shown_found!r} in the "
        f"context, expected {shown_text!r}; the text occurs at offset 200"
    ]


def test_structure_problems_are_located(tmp_path: Path) -> None:
    data = squad(
        "not an article",
        {"title": "NoParagraphs"},
        article("P", "not a paragraph", {"context": WARSAW, "qas": {"id": "x"}}, paragraph(WARSAW, ["q"])),
    )
    path = write_json(tmp_path / "s.json", data)
    assert problems_of(read_squad, path) == [
        f'{path} (article 1): expected an object with "title" and "paragraphs", found str \'not an article\'',
        f"{path} (article 2 'NoParagraphs'): paragraphs: expected a list of "
        '{"context", "qas"} objects, missing',
        f'{path} (article 3 \'P\', paragraph 1): expected an object with "context" and "qas", '
        "found str 'not a paragraph'",
        f"{path} (article 3 'P', paragraph 2): qas: expected a list of questions, found dict {{'id': 'x'}}",
        f'{path} (article 3 \'P\', paragraph 3, question 1): expected an object with "id", "question" and '
        "\"answers\", found list ['q']",
    ]


def test_malformed_json_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"version": "1.1",\n "data": [\n  {"title": "x",, }\n ]}\n', encoding="utf-8")
    assert problems_of(read_squad, path) == [
        f"{path}:3: malformed JSON: Expecting property name enclosed in double quotes (column 17)"
    ]


def test_json_lines_and_other_layouts_are_not_squad(tmp_path: Path) -> None:
    lines = write_jsonl(tmp_path / "qa.jsonl", [{"question": "a"}, {"question": "b"}])
    assert problems_of(read_squad, lines) == [
        f"{lines}:2: malformed JSON: Extra data (column 1); one JSON value per line is JSON Lines: "
        "read it with read_qa_table(path, 'jsonl')"
    ]
    array = write_json(tmp_path / "a.json", [{"question": "a"}])
    assert problems_of(read_squad, array) == [
        f'{array}: not SQuAD JSON, expected an object with a "data" list of articles, found a JSON array; '
        "for one question per record read it with read_qa_table(path, 'jsonl')"
    ]
    other = write_json(tmp_path / "o.json", {"version": "1.1", "questions": []})
    assert problems_of(read_squad, other) == [
        f'{other}: not SQuAD JSON, expected an object with a "data" list of articles, found an object with '
        "keys 'version', 'questions'"
    ]
    no_list = write_json(tmp_path / "n.json", {"data": {"title": "x"}})
    assert problems_of(read_squad, no_list)[0].endswith('found "data" holding dict')
    empty = write_json(tmp_path / "e.json", squad(article("E", paragraph(WARSAW))))
    assert problems_of(read_squad, empty) == [
        f"{empty}: no questions, expected at least one article with paragraphs and qas"
    ]


def test_problems_are_capped_at_max_errors(tmp_path: Path) -> None:
    questions = [qa(f"q{i}", "Capital?", ("Warsaw", 1)) for i in range(30)]
    path = write_json(tmp_path / "many.json", squad(article("W", paragraph(WARSAW, *questions))))
    with pytest.raises(DataError) as info:
        read_squad(path, max_errors=5)
    assert len(info.value.problems) == 5
    assert info.value.total == 30
    assert str(info.value).endswith("... and 25 more problem(s) not shown")


def test_is_squad_json(tmp_path: Path) -> None:
    assert is_squad_json(write_json(tmp_path / "compact.json", V1))
    assert is_squad_json(write_json(tmp_path / "pretty.json", V1, indent=2))
    assert is_squad_json(write_json(tmp_path / "empty.json", {"data": []}))
    assert not is_squad_json(write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "context": "c"}]))
    assert not is_squad_json(write_json(tmp_path / "array.json", [V1]))
    assert not is_squad_json(write_json(tmp_path / "data.json", {"data": [1, 2]}))
    assert not is_squad_json(tmp_path / "absent.json")
    assert not is_squad_json("-")
    assert not is_squad_json(tmp_path)


# ---------------------------------------------------------------- QA tables


def test_jsonl_hugging_face_layout(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {
                "id": "q1",
                "question": "Capital?",
                "context": WARSAW,
                "answers": {"text": ["Warsaw"], "answer_start": [0]},
            },
            {
                "question": "River?",
                "context": WARSAW,
                "answers": {"text": ["the Vistula", "Vistula"], "answer_start": [44, 48]},
            },
            {
                "id": "q3",
                "question": "Spain?",
                "context": WARSAW,
                "answers": {"text": [], "answer_start": []},
            },
        ],
    )
    records = read_qa_table(path, "jsonl")
    assert records[0] == QARecord("q1", "Capital?", WARSAW, [("Warsaw", 0)], False, f"{path}:1 (question q1)")
    assert (records[1].id, records[1].where, records[1].answers) == (
        "2",
        f"{path}:2",
        [("the Vistula", 44), ("Vistula", 48)],
    )
    assert (records[2].answers, records[2].is_impossible) == ([], True)
    assert read_qa_table(path, "auto") == records


def test_jsonl_list_of_answer_objects_and_plain_text_layouts(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {
                "id": "a",
                "question": "Capital?",
                "context": WARSAW,
                "answers": [{"text": "Warsaw", "answer_start": 0}],
            },
            {"id": "b", "question": "Capital?", "context": WARSAW, "answers": "Warsaw", "answer_start": 0},
            {"id": "c", "question": "Spain?", "context": WARSAW, "answers": []},
            {"id": "d", "question": "Spain?", "context": WARSAW, "answers": ""},
        ],
    )
    records = read_qa_table(path, "jsonl")
    assert [(r.id, r.answers, r.is_impossible) for r in records] == [
        ("a", [("Warsaw", 0)], False),
        ("b", [("Warsaw", 0)], False),
        ("c", [], True),
        ("d", [], True),
    ]


def test_csv_and_tsv_one_answer_per_row(tmp_path: Path) -> None:
    csv = tmp_path / "qa.csv"
    csv.write_text(
        f'id,question,context,answers,answer_start\nq1,Capital?,"{WARSAW}",Warsaw,0\nq2,Spain?,"{WARSAW}",,\n',
        encoding="utf-8",
    )
    records = read_qa_table(csv, "csv")
    assert records[0] == QARecord("q1", "Capital?", WARSAW, [("Warsaw", 0)], False, f"{csv}:2 (question q1)")
    assert (records[1].answers, records[1].is_impossible) == ([], True)
    tsv = tmp_path / "qa.tsv"
    tsv.write_text(f"question\tpassage\tanswer\tstart\nRiver?\t{WARSAW}\tVistula\t 48\n", encoding="utf-8")
    columns = {"context": "passage", "answers": "answer", "answer_start": "start"}
    records = read_qa_table(tsv, "auto", columns=columns)
    assert [(r.id, r.context, r.answers) for r in records] == [("2", WARSAW, [("Vistula", 48)])]


def test_parquet_hugging_face_struct_layout(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {
            "id": "p1",
            "question": "Capital?",
            "context": WARSAW,
            "answers": {"text": ["Warsaw"], "answer_start": [0]},
        },
        {
            "id": "p2",
            "question": "Wrong?",
            "context": WARSAW,
            "answers": {"text": ["Poland"], "answer_start": [0]},
        },
    ]
    path = tmp_path / "qa.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:1]), path)
    assert read_qa_table(path, "parquet")[0].where == f"{path} (record 1, question p1)"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert problems_of(read_qa_table, path, "parquet") == [
        f"{path} (record 2, question p2): answers[0]: answer_start 0 points at 'Warsaw' in the context, "
        "expected 'Poland'; the text occurs at offset 25"
    ]


def test_unlabelled_table_needs_no_answers_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "question": "Capital?", "context": WARSAW}])
    assert read_qa_table(path, "jsonl", labelled=False)[0].answers == []
    assert problems_of(read_qa_table, path, "jsonl") == [
        f"{path}: column 'answers' not found (columns: id, question, context); "
        "set data.columns.answers to the "
        "column that holds it"
    ]


def test_table_problems_are_located_and_all_reported(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {
                "id": "a",
                "question": "Capital?",
                "context": WARSAW,
                "answers": {"text": ["Warsaw"], "answer_start": [0]},
            },
            {"id": "a", "question": "", "context": WARSAW, "answers": []},
            {"id": "c", "question": "Q?", "context": 5, "answers": []},
            {
                "id": "d",
                "question": "Q?",
                "context": WARSAW,
                "answers": {"text": ["Warsaw", "It"], "answer_start": [0]},
            },
            {
                "id": "e",
                "question": "Q?",
                "context": WARSAW,
                "answers": [{"text": "", "answer_start": 0}, "Warsaw"],
            },
            {"id": "f", "question": "Q?", "context": WARSAW, "answers": "Poland", "answer_start": "25"},
            {"id": "g", "question": "Q?", "context": WARSAW, "answers": 3},
            {"id": ["h"], "question": "Q?", "context": WARSAW, "answers": []},
        ],
    )
    assert problems_of(read_qa_table, path, "jsonl") == [
        f"{path}:2 (question a): id: duplicated question id 'a', expected unique ids, first seen at "
        f"{path}:1 (question a)",
        f"{path}:2 (question a): question: empty, expected a non-empty text, found ''",
        f"{path}:3 (question c): context: expected a text (string), found int 5",
        f"{path}:4 (question d): answers.answer_start: expected a list of 2 offsets (one per text), found 1",
        f"{path}:5 (question e): answers[0].text: empty answer text, expected the answer, found ''",
        f"{path}:5 (question e): answers[1]: expected an object "
        '{"text", "answer_start"}, found str \'Warsaw\'',
        f"{path}:6 (question f): answer_start: expected an integer character offset, found str '25'",
        f"{path}:7 (question g): answers: expected the answers as "
        '{"text": [...], "answer_start": [...]}, a '
        'list of {"text", "answer_start"} objects, or a text with its start in column \'answer_start\', '
        "found int 3",
        f"{path}:8: id: expected a string or an integer, found list ['h']",
    ]


def test_csv_offsets_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text(
        f'question,context,answers,answer_start\nA?,"{WARSAW}",Warsaw,x1\nB?,"{WARSAW}",Poland,0\n'
        f'C?,"{WARSAW}",Poland,\n',
        encoding="utf-8",
    )
    assert problems_of(read_qa_table, path, "csv") == [
        f"{path}:2: answer_start: expected an integer character offset, found str 'x1'",
        f"{path}:3: answers: answer_start 0 points at 'Warsaw' in the context, expected 'Poland'; "
        "the text occurs at offset 25",
        f"{path}:4: answer_start: missing, expected an integer character offset into the context",
    ]
    no_start = tmp_path / "n.csv"
    no_start.write_text(f'question,context,answer\nA?,"{WARSAW}",Warsaw\n', encoding="utf-8")
    assert problems_of(read_qa_table, no_start, "csv", columns={"answers": "answer"}) == [
        f"{no_start}: column 'answer_start' not found (columns: question, context, answer); "
        "did you mean 'answer'? set data.columns.answer_start to the column that holds it"
    ]
    assert problems_of(read_qa_table, no_start, "csv") == [
        f"{no_start}: column 'answers' not found (columns: question, context, answer); "
        "did you mean 'answer'? "
        "set data.columns.answers to the column that holds it"
    ]


def test_unknown_column_key_and_squad_json_given_as_a_table(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "Q?", "context": WARSAW, "answers": []}])
    with pytest.raises(
        ConfigError,
        match=r"columns: unknown key 'answer', expected one of id, question, "
        r"context, answers, answer_start; did you mean 'answers'\?",
    ):
        read_qa_table(path, "jsonl", columns={"answer": "a"})
    squad_file = write_json(tmp_path / "dev.json", V1)
    assert problems_of(read_qa_table, squad_file, "auto") == [
        f'{squad_file}: SQuAD JSON (an object with a "data" list of articles), expected one record per line '
        "for JSON Lines; read it with read_squad(path)"
    ]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert problems_of(read_qa_table, empty, "jsonl") == [f"{empty}: no records, expected at least one"]
