"""CoNLL column and CoNLL-U readers: layout rules and located error messages (pinned text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskhead.data.conll import Sentence, read_conll, read_conllu
from taskhead.errors import ConfigError, DataError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def problems_of(call, *args, **kwargs) -> list[str]:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return info.value.problems


# ---------------------------------------------------------------- CoNLL column files

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC


Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
"""


def test_conll2003_docstart_blank_lines_and_last_sentence_without_blank_line(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", CONLL2003)
    sentences = read_conll(path)
    assert [s.tokens for s in sentences] == [
        ["EU", "rejects", "German"],
        ["Peter", "Blackburn"],
        ["BRUSSELS"],
    ]
    assert [s.tags for s in sentences] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert [s.lines for s in sentences] == [[3, 4, 5], [8, 9], [11]]
    assert sentences[1].where == f"{path}:8"
    assert sentences[0].text is None


def test_other_columns_and_negative_indices(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", CONLL2003)
    assert read_conll(path, tag_column=1)[0].tags == ["NNP", "VBZ", "JJ"]
    assert read_conll(path, tag_column=-2)[0].tags == ["B-NP", "B-VP", "B-NP"]
    by_negative = read_conll(path, token_column=-4, tag_column=-1)
    assert by_negative == read_conll(path, token_column=0, tag_column=3)


def test_comments_only_before_the_first_token_of_a_sentence(tmp_path: Path) -> None:
    path = write(tmp_path, "c.txt", "# id = 1\n# note\nI O\n# O\nhashtag O\n\n# id = 2\nyou O\n")
    sentences = read_conll(path)
    assert [s.tokens for s in sentences] == [["I", "#", "hashtag"], ["you"]]
    assert sentences[0].lines == [3, 4, 5]
    hashtag_first = write(tmp_path, "h.txt", "# O\nrocks O\n")
    assert read_conll(hashtag_first)[0].tokens == ["rocks"]
    assert read_conll(hashtag_first, comment_prefix=None)[0].tokens == ["#", "rocks"]
    assert read_conll(hashtag_first, comment_prefix="//")[0].tokens == ["#", "rocks"]


def test_tab_separated_keeps_spaces_inside_tokens(tmp_path: Path) -> None:
    path = write(tmp_path, "t.tsv", "New York\tB-LOC \ncity\tO\n\n")
    assert read_conll(path)[0] == Sentence(["New York", "city"], ["B-LOC", "O"], f"{path}:1", [1, 2])


def test_space_separated_runs_of_spaces_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_bytes("\ufeffEU   B-ORG\r\nrejects  O\r\n\r\n".encode())
    [sentence] = read_conll(path)
    assert sentence.tokens == ["EU", "rejects"]
    assert sentence.tags == ["B-ORG", "O"]


def test_wrong_column_counts_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.txt",
        "\n\nEU NNP B-NP B-ORG\nrejects O\n\nGerman JJ B-NP B-MISC\nNew York NNP I-NP B-LOC\n",
    )
    with pytest.raises(DataError, match=r"bad\.txt:4: expected 4 columns \(as on line 3\), found 2"):
        read_conll(path)
    assert problems_of(read_conll, path) == [
        f"{path}:4: expected 4 columns (as on line 3), found 2",
        f"{path}:7: expected 4 columns (as on line 3), found 5",
    ]


def test_problems_are_capped_with_the_total(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.txt", "a O\n" + "b\n" * 5)
    with pytest.raises(DataError) as info:
        read_conll(path, max_errors=2)
    assert info.value.total == 5
    assert len(info.value.problems) == 2
    assert str(info.value).endswith("... and 3 more problem(s) not shown")


def test_column_index_out_of_range_and_tag_column_equal_to_token_column(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", "EU B-ORG\nrejects O\n")
    assert problems_of(read_conll, path, tag_column=2) == [
        f"{path}:1: tag_column: out of range, expected an index from -2 to 1 "
        "(this first token line has 2 columns), found 2"
    ]
    assert problems_of(read_conll, path, tag_column=-2) == [
        f"{path}:1: tag_column: selects the token column too (this first token line has 2 columns), "
        "expected another column, found -2"
    ]


def test_empty_token_and_empty_tag(tmp_path: Path) -> None:
    path = write(tmp_path, "e.tsv", "EU\tB-ORG\n\tO\nrejects\t\n \t \n")
    assert problems_of(read_conll, path) == [
        f"{path}:2: token: empty field, expected a token (token_column=0)",
        f"{path}:3: tag: empty field, expected a tag (tag_column=-1)",
    ]


def test_unlabelled_reads_only_the_token_column(tmp_path: Path) -> None:
    single = write(tmp_path, "p.txt", "EU\nrejects\n\nPeter\n")
    sentences = read_conll(single, labelled=False)
    assert [(s.tokens, s.tags) for s in sentences] == [(["EU", "rejects"], None), (["Peter"], None)]
    with pytest.raises(DataError, match="tag_column: selects the token column too"):
        read_conll(single)
    labelled_file = write(tmp_path, "l.tsv", "EU\t\nrejects\tO\n")
    assert read_conll(labelled_file, labelled=False)[0].tokens == ["EU", "rejects"]


def test_no_sentences_and_missing_file(tmp_path: Path) -> None:
    empty = write(tmp_path, "empty.txt", "")
    only_docstart = write(tmp_path, "doc.txt", "-DOCSTART- -X- -X- O\n\n# x\n")
    assert problems_of(read_conll, empty) == [
        f"{empty}: no sentences; expected token lines (one token per line, sentences separated by blank "
        "lines), found an empty file"
    ]
    assert problems_of(read_conll, only_docstart)[0].endswith(
        "found only blank, comment and -DOCSTART- lines"
    )
    assert problems_of(read_conll, tmp_path / "missing.txt") == [
        f"{tmp_path / 'missing.txt'}: file not found"
    ]


def test_latin1_file_needs_its_encoding(tmp_path: Path) -> None:
    path = tmp_path / "l1.txt"
    path.write_bytes(b"Caf\xe9 O\nna\x85ve O\n\nM\xfcller B-PER\n")  # \x85 is NEL, a line break to splitlines
    with pytest.raises(DataError, match=r"l1\.txt:1: not valid utf-8 \(byte 0xe9 at column 4\)"):
        read_conll(path)
    sentences = read_conll(path, encoding="latin-1")
    assert [s.tokens for s in sentences] == [["Café", "na\x85ve"], ["Müller"]]
    assert sentences[1].lines == [4]


# ---------------------------------------------------------------- CoNLL-U

CONLLU = "\n".join(
    [
        "# newdoc id = d1",
        "# sent_id = s1",
        "# text = I don't know.",
        "1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_",
        "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_",
        "2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_",
        "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_",
        "4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_",
        "4.1\tit\tit\tPRON\tPRP\t_\t_\t_\t4:obj\t_",
        "5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_",
        "",
        "",
        "# sent_id = s2",
        "1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_",
        "",
    ]
)


def test_conllu_skips_multiword_tokens_and_empty_nodes_and_keeps_text(tmp_path: Path) -> None:
    path = write(tmp_path, "d.conllu", CONLLU)
    first, second = read_conllu(path)
    assert first.tokens == ["I", "do", "n't", "know", "."]
    assert first.tags == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert first.lines == [4, 6, 7, 8, 10]
    assert first.where == f"{path}:4"
    assert first.text == "I don't know."
    assert (second.tokens, second.text, second.where) == (["Yes"], None, f"{path}:14")


def test_conllu_xpos_and_unlabelled(tmp_path: Path) -> None:
    path = write(tmp_path, "d.conllu", CONLLU)
    assert read_conllu(path, tag_field="xpos")[0].tags == ["PRP", "VBP", "RB", "VB", "."]
    assert read_conllu(path, labelled=False)[0].tags is None
    with pytest.raises(ConfigError, match=r"tag_field: expected one of upos, xpos, found 'feats'"):
        read_conllu(path, tag_field="feats")


def test_conllu_underscore_tag_is_an_error_only_when_labelled(tmp_path: Path) -> None:
    path = write(tmp_path, "u.conllu", "1\tHi\thi\t_\t_\t_\t0\troot\t_\t_\n")
    assert problems_of(read_conllu, path) == [f"{path}:1: UPOS: expected a UPOS tag, found '_'"]
    assert problems_of(read_conllu, path, tag_field="xpos") == [
        f"{path}:1: XPOS: expected an XPOS tag, found '_'; "
        "if the treebank has no XPOS tags, set tag_field='upos'"
    ]
    assert read_conllu(path, labelled=False)[0].tokens == ["Hi"]


def test_conllu_reports_every_problem_of_the_file(tmp_path: Path) -> None:
    lines = [
        "1\tA\ta\tDET\tDT\t_\t2\tdet\t_\t_",
        "2 B b NOUN NN _ 0 root _ _",  # spaces instead of tabs
        "x\tC\tc\tNOUN\tNN\t_\t0\troot\t_\t_",
        "3\t\tc\tNOUN\tNN\t_\t0\troot\t_\t_",
        "1\tD\td\tNOUN\tNN\t_\t0\troot\t_\t_",  # a blank line is missing before it
    ]
    path = write(tmp_path, "bad.conllu", "\n".join(lines) + "\n")
    assert problems_of(read_conllu, path) == [
        f"{path}:2: expected 10 tab-separated columns (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC), "
        "found 1",
        f"{path}:3: ID: not a word ID, expected an integer "
        "(or a range like 3-4, or a decimal like 5.1 for an empty node), found 'x'",
        f"{path}:4: ID: out of sequence, expected 2, found 3",
        f"{path}:4: FORM: empty, expected a word form",
        f"{path}:5: ID: out of sequence, expected 4, found 1 (is a blank line missing before this sentence?)",
    ]


def test_conllu_with_only_comments(tmp_path: Path) -> None:
    path = write(tmp_path, "c.conllu", "# sent_id = 1\n\n")
    assert problems_of(read_conllu, path)[0].endswith("found only blank and comment lines")
