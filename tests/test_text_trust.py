"""Text and lines: line breaks only at \\n / \\r\\n / \\r in every reader, one prediction output per input
line, Unicode-safe word splitting, format sniffing that does not depend on luck, and TSV quoting."""

from __future__ import annotations

import itertools
import json
import random
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli, shared_dataset, write_jsonl

import taskhead
from taskhead.config import DataConfig
from taskhead.data.conll import read_conll, sniff_conll
from taskhead.data.readers import read_table, split_lines
from taskhead.data.seq2seq import read_parallel
from taskhead.data.words import pretokenize
from taskhead.errors import DataError
from taskhead.retrieval.corpus import read_corpus
from taskhead.tasks.language_modeling import LanguageModelingOptions, LanguageModelingTask
from taskhead.tasks.token_classification import TokenClassificationOptions, TokenClassificationTask

ODD_BREAKS = "\u2028\u2029\x85\x0c\x0b\x1c\x1d\x1e"  # str.splitlines() breaks at all of these

# ---------------------------------------------------------------- lines


def test_split_lines_breaks_only_at_newlines() -> None:
    text = f"a{ODD_BREAKS}b\r\nc\rd\n\ne\n"
    assert split_lines(text) == [f"a{ODD_BREAKS}b", "c", "d", "", "e"]
    assert len(text.splitlines()) > len(split_lines(text))  # the trap this helper avoids
    assert split_lines("") == [] and split_lines("x") == ["x"] and split_lines("\n") == [""]


def test_jsonl_with_raw_u2028_loads_and_errors_keep_real_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    record = json.dumps({"text": "one\u2028two\x85three", "label": "a"}, ensure_ascii=False)
    assert "\u2028" in record  # written raw, as ensure_ascii=False does
    path.write_text(f"{record}\n{record}\n", encoding="utf-8")
    table = read_table(path)
    assert [row.where for row in table.rows] == [1, 2]
    assert table.rows[0].values["text"] == "one\u2028two\x85three"
    path.write_text(f"{record}\n{{broken\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value).startswith(f"{path}:2: malformed JSON line")


def test_text_tsv_and_stdin_sniff_keep_odd_breaks_inside_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("first\u2028still first\nsecond\n", encoding="utf-8")
    assert [(r.where, r.values["text"]) for r in read_table(path).rows] == [
        (1, "first\u2028still first"),
        (2, "second"),
    ]
    tsv = tmp_path / "d.tsv"
    tsv.write_text("text\tlabel\na\x85b\t1\nc\t0\n", encoding="utf-8")
    assert [(r.where, r.values["text"]) for r in read_table(tsv).rows] == [(2, "a\x85b"), (3, "c")]


def test_conll_parallel_corpus_and_lm_readers_keep_odd_breaks(tmp_path: Path) -> None:
    conll = tmp_path / "d.conll"
    conll.write_text("a\u2028b O\nParis B-LOC\n\nbad\n", encoding="utf-8")
    with pytest.raises(DataError) as err:  # the error is on line 4 of the file, as editors number it
        read_conll(conll)
    assert str(err.value).startswith(f"{conll}:4: expected 2 columns (as on line 1), found 1")
    conll.write_text("a\u2028b O\nParis B-LOC\r\n\r\nx O\n", encoding="utf-8")
    sentences = read_conll(conll)
    assert [s.tokens for s in sentences] == [["a\u2028b", "Paris"], ["x"]]
    assert [s.lines for s in sentences] == [[1, 2], [4]]

    (tmp_path / "p.en").write_text("one\u2028more\ntwo\n", encoding="utf-8")
    (tmp_path / "p.de").write_text("eins\ncwei\x85drei\n", encoding="utf-8")
    pairs = read_parallel(tmp_path / "p.en", tmp_path / "p.de")
    assert [(p.source, p.targets) for p in pairs] == [("one\u2028more", ["eins"]), ("two", ["cwei\x85drei"])]

    corpus = tmp_path / "c.txt"
    corpus.write_text("doc one\u2029same doc\n\ndoc three\n", encoding="utf-8")
    docs = read_corpus(corpus)  # ids of a text corpus are line numbers
    assert [(d.id, d.text) for d in docs] == [("1", "doc one\u2029same doc"), ("3", "doc three")]

    lm = LanguageModelingTask(LanguageModelingOptions())
    docs = lm.read(corpus, DataConfig(), labelled=False)
    assert [(d["_where"], d["text"]) for d in docs] == [
        (f"{corpus}:1", "doc one\u2029same doc"),
        (f"{corpus}:3", "doc three"),
    ]


# ---------------------------------------------------------------- words

SCRIPTS = [
    "abcxyzABC",
    "áéñöü",  # precomposed Latin
    "कखगहनमरस",  # Devanagari consonants
    "กขคงจฉ",  # Thai consonants
    "абвгд",
    "مرحبا",
    "日本語中文",
    "0123456789",
]
MARKS = ["\u0301", "\u0308", "\u093f", "\u094d", "\u0902", "\u0e34", "\u0e48", "\u0651", "\u20dd"]
SEPARATORS = [" ", "  ", "\t", "\u00a0", "\u200b", "\ufeff", "\u2062"]  # U+2062: a Cf, not a joiner
SYMBOLS = [*".,;:!?()-'\u2019\"%$€@#/", "👍", "👍🏽", "\u200d"]


def random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        if kind < 0.5:
            word = ""
            for _ in range(rng.randint(1, 6)):
                word += rng.choice(rng.choice(SCRIPTS))
                if rng.random() < 0.4:
                    word += "".join(rng.choices(MARKS, k=rng.randint(1, 2)))
            parts.append(word)
        elif kind < 0.8:
            parts.append(rng.choice(SEPARATORS))
        elif kind < 0.95:
            parts.append(rng.choice(SYMBOLS))
        else:
            parts.append(rng.choice(MARKS))  # a mark after a space or at the start: no base to attach to
    return "".join(parts)


@pytest.mark.parametrize("pretokenizer", ["punctuation", "whitespace"])
def test_offsets_slice_back_to_words_and_marks_stay_attached(pretokenizer: str) -> None:
    rng = random.Random(14)
    for _ in range(400):
        text = rng.choice([random_text(rng), unicodedata.normalize("NFD", random_text(rng))])
        words, offsets = pretokenize(text, pretokenizer)
        assert [text[s:e] for s, e in offsets] == words, text
        assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(offsets)), text
        for word, (start, end) in zip(words, offsets, strict=True):
            assert end == len(text) or not unicodedata.category(text[end]).startswith("M"), (text, word)
            if unicodedata.category(text[start]).startswith("M"):  # only a mark with no base before it
                assert (
                    start == 0
                    or text[start - 1].isspace()
                    or unicodedata.category(text[start - 1])
                    in (
                        "Cf",
                        "Zs",
                    )
                ), (text, word)
            assert "\u200b" not in word and "\ufeff" not in word, (text, word)
            assert any(unicodedata.category(c) != "Cf" for c in word), (text, word)
        covered = {i for s, e in offsets for i in range(s, e)}
        lost = [c for i, c in enumerate(text) if i not in covered]
        assert all(c.isspace() or unicodedata.category(c) == "Cf" for c in lost), (text, lost)


def test_words_of_marked_scripts_and_format_characters() -> None:
    nfd = unicodedata.normalize("NFD", "José Gonçalves")
    assert len(nfd) == 16 and pretokenize(nfd, "punctuation")[0] == nfd.split(" ")
    assert pretokenize("हिन्दी में बात", "punctuation")[0] == ["हिन्दी", "में", "बात"]
    assert pretokenize("ภาษาไทย ง่าย", "punctuation")[0] == ["ภาษาไทย", "ง่าย"]
    text = "\ufeffAlice\u200bParis \u200b می\u200cخواهم"
    words, offsets = pretokenize(text, "punctuation")
    assert words == ["Alice", "Paris", "می\u200cخواهم"]  # ZWNJ stays inside the Persian word
    assert [text[s:e] for s, e in offsets] == words and offsets[0] == (1, 6)  # offsets index the original


def test_format_characters_alone_are_not_words(tmp_path: Path) -> None:
    task = TokenClassificationTask(TokenClassificationOptions(), labels=["O", "B-PER", "I-PER"])
    path = tmp_path / "in.jsonl"
    write_jsonl(path, [{"text": "Alice"}, {"text": "\u200b\ufeff"}])
    with pytest.raises(DataError) as err:
        task.read(path, DataConfig(), labelled=False)
    assert str(err.value) == f"{path}:2: text: no words, only format characters in '\\u200b\\ufeff'"


# ---------------------------------------------------------------- sniffing


def test_txt_with_equal_word_counts_is_raw_text_for_file_and_stdin(tmp_path: Path) -> None:
    task = TokenClassificationTask(TokenClassificationOptions(), labels=["O", "B-PER", "I-PER"])
    text = "Alice met Bob\nCarol saw Dave\n"
    path = tmp_path / "in.txt"
    path.write_text(text, encoding="utf-8")
    examples = task.read(path, DataConfig(), labelled=False)
    assert [ex["tokens"] for ex in examples] == [["Alice", "met", "Bob"], ["Carol", "saw", "Dave"]]
    assert sniff_conll(text, {"O", "B-PER"}) is None and sniff_conll(text) is None
    tagged = "Alice B-PER\nmet O\n\nBob B-PER\n"
    assert sniff_conll(tagged, {"O", "B-PER", "I-PER"}) == "conll" and sniff_conll(tagged) == "conll"
    assert sniff_conll("a b\n-DOCSTART- O\n") == "conll"
    assert sniff_conll("The DT\ncat NN\n", {"DT", "NN"}) == "conll"  # POS tags of the model
    assert sniff_conll("The DT\ncat NN\n") is None and sniff_conll("Hello O\n") is None  # not clear
    conllu = "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n2\t!\t!\tPUNCT\t.\t_\t1\tpunct\t_\t_\n"
    assert sniff_conll(conllu) == "conllu"
    assert sniff_conll("word\nword\n\nword\n") is None  # one column: name --format conll
    raw = "alice went O\nbob saw O\n"  # raw lines that happen to end in the word "O"
    assert sniff_conll(raw, {"O", "B-PER"}) is None
    assert sniff_conll("alice O\nwent O\n\nbob O\n") == "conll"  # sentence breaks: a column file


@pytest.fixture(scope="module")
def ner_run(tiny_runs) -> Path:
    return tiny_runs["token-classification"]


def test_token_classification_predict_file_equals_stdin(ner_run: Path, tmp_path: Path) -> None:
    text = "alice met bob\n\ncarol saw dave\n"
    path = tmp_path / "in.txt"
    path.write_text(text, encoding="utf-8")
    from_file = run_cli("predict", str(ner_run), str(path))
    from_stdin = run_cli("predict", str(ner_run), "-", stdin=text)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == from_stdin.stdout
    outputs = [json.loads(line) for line in from_file.stdout.splitlines()]
    assert [o["line"] for o in outputs] == [1, 2, 3]
    assert outputs[1] == {"line": 2, "error": "empty text"}
    assert [outputs[0]["tokens"], outputs[2]["tokens"]] == [["alice", "met", "bob"], ["carol", "saw", "dave"]]

    conll = tmp_path / "test.txt"
    conll.write_text("alice B-PER\nwon O\n\nbob B-PER\n", encoding="utf-8")
    outputs = [json.loads(line) for line in run_cli("predict", str(ner_run), str(conll)).stdout.splitlines()]
    assert [(o["line"], o["tokens"]) for o in outputs] == [(1, ["alice", "won"]), (4, ["bob"])]


# ---------------------------------------------------------------- predict: lines, blanks, ids


@pytest.fixture(scope="module")
def cls_run(tiny_runs) -> Path:
    return tiny_runs["classification"]


def test_text_predict_gives_one_output_per_line_in_order(cls_run: Path, tmp_path: Path) -> None:
    import taskhead

    path = tmp_path / "in.txt"
    path.write_bytes("good movie\n\n  \nbad\u2028film\r\nawful plot".encode())
    predictions = taskhead.load(cls_run).predict_file(path)
    assert [p["line"] for p in predictions] == [1, 2, 3, 4, 5]
    assert predictions[1] == {"line": 2, "error": "empty text"} == {**predictions[2], "line": 2}
    assert all(p["label"] in ("pos", "neg") for p in predictions if "error" not in p)
    result = run_cli("predict", str(cls_run), "-", stdin="good movie\n\nawful\n")
    assert [json.loads(x).get("error") for x in result.stdout.splitlines()] == [None, "empty text", None]


def test_id_column_names_outputs_and_every_output_has_its_line(cls_run: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"doc_id": "a", "text": "good"}, {"doc_id": 7, "text": "bad"}])
    result = run_cli("predict", str(cls_run), str(path), "--id-column", "doc_id")
    assert result.returncode == 0, result.stderr
    assert [(o["line"], o["id"]) for o in map(json.loads, result.stdout.splitlines())] == [(1, "a"), (2, 7)]
    result = run_cli("predict", str(cls_run), str(path))  # no id column named: the line still matches back
    assert [list(o)[:2] for o in map(json.loads, result.stdout.splitlines())] == [["line", "label"]] * 2

    csv = tmp_path / "in.csv"
    csv.write_text("doc_id,text\nx1,good\n,bad\n", encoding="utf-8")
    result = run_cli("predict", str(cls_run), str(csv), "--id-column", "doc_id")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {csv}:3: doc_id: missing id (--id-column doc_id)"
    result = run_cli("predict", str(cls_run), "-", "--id-column", "doc_id", stdin="good\n")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --id-column doc_id: text input has no columns")


# ---------------------------------------------------------------- quoting and extra columns


def test_tsv_row_starting_with_a_quote_stops_with_a_fix_that_works(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text('sentence\tlabel\n" a quoted start\t1\nnext row\t0\nlast" row\t1\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_table(path)
    message = str(err.value)
    assert message.startswith(f"{path}:2: a quoted field runs over lines 2-4")
    assert message.endswith("set data.quoting=none")
    rows = read_table(path, quoting="none").rows
    assert [(r.where, r.values["sentence"]) for r in rows] == [
        (2, '" a quoted start'),
        (3, "next row"),
        (4, 'last" row'),
    ]
    csv = tmp_path / "d.csv"  # a legitimate multi-line quoted CSV value still reads
    csv.write_text('text,label\n"one, two\nthree",a\n', encoding="utf-8")
    assert read_table(csv).rows[0].values["text"] == "one, two\nthree"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("one.tsv", 'text\n"good movie\nbad film\nsad story\n'),  # one column: no delimiters to count
        ("closed.tsv", 'text\n"good movie\nbad film\nsad story"\nmore\n'),
        ("never-closed.csv", 'text\n"never closed\nplain\nmore\n'),  # a quote that runs to the end
    ],
)
def test_a_stray_quote_never_swallows_rows_silently(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r":2: a quoted field runs over lines 2-4, swallowing them"):
        read_table(path)
    rows = read_table(path, quoting="none").rows  # the fix the message names
    assert len(rows) == content.count("\n") - 1


def test_headerless_rows_may_have_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "sts.tsv"
    path.write_text("g\tf\t1.5\ta b\tc d\ng\tf\t4.0\te f\tg h\tsrc\tlicence\n", encoding="utf-8")
    rows = read_table(path, header=False, quoting="none").rows
    assert [r.values["3"] for r in rows] == ["a b", "e f"] and rows[1].values["6"] == "licence"


def test_official_stsb_files_read_by_following_the_hints(tmp_path: Path) -> None:
    folder = shared_dataset("stsb")
    config = {
        "task": "embedding",
        "data": {
            "train": str(folder / "sts-train.csv"),
            "eval": str(folder / "sts-dev.csv"),
            "columns": {"anchor": 5, "positive": 6, "score": 4},
        },
    }
    path = tmp_path / "stsb.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    overrides: list[str] = []
    for fix in ("data.format=tsv", "data.quoting=none", "data.header=false"):  # each error names the next
        result = run_cli("validate", str(path), *overrides)
        assert result.returncode == 2 and f"set {fix}" in result.stderr.splitlines()[0], result.stderr
        overrides.append(fix)
    result = run_cli("validate", str(path), *overrides)
    assert result.returncode == 0, result.stderr
    assert "OK (task embedding, 7249 records)" in result.stderr  # 5,749 + 1,500 pairs (README of the data)


def test_undecodable_byte_is_located_on_the_line_editors_show(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_bytes("a\u2028\rb\r\nc \xff".encode() + b"\xff\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value).startswith(f"{path}:3: not valid utf-8 (byte 0xff at column 5)")


def test_lone_surrogates_are_located_errors(tiny_runs: Any, tmp_path: Path) -> None:
    # JSON's "\ud800" escape and Python strings can hold a lone surrogate, which no tokenizer encodes: a
    # located error, never a tokenizer TypeError
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "fine"}\n{"text": "bad \\ud800 text"}\n', encoding="utf-8")
    result = run_cli("predict", str(tiny_runs["classification"]), str(data))
    assert result.returncode == 2
    assert f"error: {data}:2: text: U+D800: a lone surrogate" in result.stderr
    predictor = taskhead.load(tiny_runs["classification"])
    with pytest.raises(DataError, match=r"input 2: text: U\+DC00: a lone surrogate"):
        predictor.predict(["fine", {"text": "bad \udc00"}])
