"""Tag schemes: detection, validity, repair, conversion, entity decoding (checked against seqeval)."""

from __future__ import annotations

import itertools

import pytest

from taskhead.errors import DataError
from taskhead.tasks.tagging import (
    continuation,
    convert,
    detect_scheme,
    entities,
    invalid_positions,
    repair,
    seqeval_scheme,
    seqeval_tags,
    split_tag,
)

# The same entities (LOC, PER PER adjacent, single-token MISC, ORG at the end) in the three schemes.
IOB2 = ["B-LOC", "I-LOC", "O", "B-PER", "B-PER", "I-PER", "O", "B-MISC", "B-ORG", "I-ORG"]
IOB1 = ["I-LOC", "I-LOC", "O", "I-PER", "B-PER", "I-PER", "O", "I-MISC", "I-ORG", "I-ORG"]
BIOES = ["B-LOC", "E-LOC", "O", "S-PER", "B-PER", "E-PER", "O", "S-MISC", "B-ORG", "E-ORG"]
SPANS = [("LOC", 0, 2), ("PER", 3, 4), ("PER", 4, 6), ("MISC", 7, 8), ("ORG", 8, 10)]

VALID = {
    "iob2": [
        IOB2,
        [],
        ["O"],
        ["B-X"],
        ["B-X", "B-X"],
        ["B-X", "I-X", "I-X", "B-Y", "I-Y"],
        ["O", "B-X", "O"],
    ],
    "iob1": [IOB1, [], ["I-X"], ["I-X", "B-X"], ["I-X", "I-Y", "B-Y", "O"], ["O", "I-X", "I-X", "I-X"]],
    "bioes": [
        BIOES,
        [],
        ["S-X", "S-X"],
        ["B-X", "I-X", "I-X", "E-X", "S-Y"],
        ["O", "B-X", "E-X", "B-X", "E-X"],
    ],
}


def test_split_tag() -> None:
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("S-B-X") == ("S", "B-X")
    assert split_tag("O") == ("O", None)
    assert split_tag("NOUN") == ("NOUN", None)
    assert split_tag("NN|SYM") == ("NN|SYM", None)
    assert split_tag("B-") == ("B-", None)


def test_detect_scheme() -> None:
    assert detect_scheme([IOB2, ["O"]]) == "iob2"
    assert detect_scheme([IOB1]) == "iob1"
    assert detect_scheme([BIOES]) == "bioes"
    assert detect_scheme([["O", "O"], []]) == "iob2"  # no entities at all
    assert detect_scheme([["NOUN", "VERB", "PUNCT"]]) == "plain"
    assert detect_scheme([["NN", "NN|SYM", "$", "(", "O"]]) == "plain"
    assert detect_scheme([["B-NP", "I-NP"], ["NN"]]) == "plain"  # one unprefixed tag is enough
    # IOB2 data with one I- start: still more B- starts
    assert detect_scheme([["B-X", "O", "I-X"], ["B-Y"]]) == "iob2"
    # I- after another type starts an entity too
    assert detect_scheme([["I-X", "I-Y", "O", "B-X"], ["I-Z", "B-Z"]]) == "iob1"


def test_detect_scheme_rejects_bilou() -> None:
    with pytest.raises(
        DataError, match=r"BILOU tags are not supported.*found 'U-PER'; rename L- to E- and U- to S-"
    ):
        detect_scheme([["U-PER", "B-LOC", "L-LOC"]])


@pytest.mark.parametrize("scheme", ["iob1", "iob2", "bioes"])
def test_valid_sequences_have_no_invalid_positions_and_are_not_repaired(scheme: str) -> None:
    for tags in VALID[scheme]:
        assert invalid_positions(tags, scheme) == [], tags
        assert repair(tags, scheme) == tags


def test_invalid_positions() -> None:
    assert invalid_positions(["O", "I-X", "I-X", "B-Y", "I-Z", "E-Y", "X"], "iob2") == [1, 4, 5, 6]
    assert invalid_positions(["B-X", "I-X", "B-X", "O", "B-Y", "I-X", "B-Y"], "iob1") == [0, 4, 6]
    bioes = ["B-X", "O", "I-X", "E-X", "S-Y", "B-Y", "I-Y", "S-Y", "E-Z"]
    assert invalid_positions(bioes, "bioes") == [0, 2, 6, 8]
    assert invalid_positions(["NOUN", "B-X"], "plain") == []


def test_repair() -> None:
    assert repair(["O", "I-PER", "I-PER", "B-LOC", "I-ORG"], "iob2") == [
        "O",
        "B-PER",
        "I-PER",
        "B-LOC",
        "B-ORG",
    ]
    assert repair(["O", "B-PER", "I-PER", "B-PER"], "iob1") == ["O", "I-PER", "I-PER", "B-PER"]
    assert repair(["B-X", "O", "I-X", "E-X", "B-Y"], "bioes") == ["S-X", "O", "B-X", "E-X", "S-Y"]
    assert repair(["NOUN", "VERB"], "plain") == ["NOUN", "VERB"]


def test_convert_between_schemes() -> None:
    for source, tags in (("iob1", IOB1), ("iob2", IOB2), ("bioes", BIOES)):
        assert entities(tags, source) == SPANS
        assert convert(tags, source, "iob1") == IOB1
        assert convert(tags, source, "iob2") == IOB2
        assert convert(tags, source, "bioes") == BIOES
    assert convert(["NOUN"], "plain", "plain") == ["NOUN"]
    with pytest.raises(ValueError, match="plain tags have no entity spans"):
        convert(["NOUN"], "plain", "iob2")


@pytest.mark.parametrize("source", ["iob1", "iob2", "bioes"])
@pytest.mark.parametrize("target", ["iob1", "iob2", "bioes"])
def test_round_trip_conversion(source: str, target: str) -> None:
    for tags in VALID[source]:
        converted = convert(tags, source, target)
        assert invalid_positions(converted, target) == []
        assert entities(converted, target) == entities(tags, source)
        assert convert(converted, target, source) == tags


def all_sequences(tags: list[str], max_length: int):
    for length in range(max_length + 1):
        yield from (list(seq) for seq in itertools.product(tags, repeat=length))


def test_entities_agree_with_seqeval_default_mode() -> None:
    pytest.importorskip("seqeval")
    from seqeval.metrics.sequence_labeling import get_entities

    def seqeval_spans(tags: list[str]) -> list[tuple[str, int, int]]:
        return [(type_, start, end + 1) for type_, start, end in get_entities(tags)]

    assert entities(["O", "I-PER", "I-PER", "B-PER", "I-LOC", "O"], "iob2") == [
        ("PER", 1, 3),
        ("PER", 3, 4),
        ("LOC", 4, 5),
    ]
    # every IOB2 sequence up to length 4 over two types, valid and invalid
    for tags in all_sequences(["O", "B-X", "I-X", "B-Y", "I-Y"], 4):
        assert entities(tags, "iob2") == seqeval_spans(tags), tags
    for tags in all_sequences(["O", "B-X", "I-X", "E-X", "S-X", "S-Y"], 4):
        assert entities(tags, "bioes") == seqeval_spans(tags), tags


def test_bioes_entity_not_closed_by_e_ends_where_it_is_not_continued() -> None:
    assert entities(["B-X", "I-X", "O", "B-X", "S-X", "I-X", "I-Y"], "bioes") == [
        ("X", 0, 2),
        ("X", 3, 4),
        ("X", 4, 5),
        ("X", 5, 6),
        ("Y", 6, 7),
    ]


def test_entities_errors() -> None:
    with pytest.raises(ValueError, match="found 'plain'"):
        entities(["NOUN"], "plain")
    with pytest.raises(ValueError, match=r"tag at position 1: expected O or a B-/I-/E-/S- tag, found 'PER'"):
        entities(["O", "PER"], "iob2")
    with pytest.raises(
        ValueError, match=r"tag scheme: expected one of iob1, iob2, bioes, plain, found 'bilou'"
    ):
        repair(["O"], "bilou")


def test_continuation() -> None:
    assert continuation("B-PER", "iob2") == "I-PER"
    assert continuation("B-PER", "iob1") == "I-PER"
    assert continuation("B-PER", "bioes") == "I-PER"
    assert continuation("I-PER", "iob2") == "I-PER"
    assert continuation("S-PER", "bioes") == "S-PER"
    assert continuation("O", "iob2") == "O"
    assert continuation("B-X", "plain") == "B-X"  # a POS tag that happens to look prefixed


def test_seqeval_scheme() -> None:
    scheme = pytest.importorskip("seqeval.scheme")
    assert seqeval_scheme("iob2") is scheme.IOB2
    assert seqeval_scheme("bioes") is scheme.IOBES
    assert seqeval_scheme("iob1") is scheme.IOB2  # IOB1 is scored after conversion to IOB2
    assert seqeval_scheme("plain") is None


def test_why_iob1_is_scored_as_iob2() -> None:
    scheme = pytest.importorskip("seqeval.scheme")
    from seqeval.metrics import f1_score

    # seqeval's strict IOB1 decodes valid IOB1 right ...
    for tags in VALID["iob1"]:
        strict = [(e.tag, e.start, e.end) for e in scheme.Tokens(tags, scheme.IOB1).entities]
        assert strict == entities(tags, "iob1")
    # ... but invents an entity after an invalid B- and credits this wrong prediction
    assert [(e.tag, e.start, e.end) for e in scheme.Tokens(["B-PER", "I-PER"], scheme.IOB1).entities] == [
        ("PER", 1, 2)
    ]
    y_true, y_pred = ["O", "O", "I-PER"], ["O", "B-PER", "I-PER"]
    assert f1_score([y_true], [y_pred], mode="strict", scheme=scheme.IOB1) == 1.0
    as_iob2 = [seqeval_tags(y_true, "iob1")], [seqeval_tags(y_pred, "iob1")]
    assert as_iob2 == ([["O", "O", "B-PER"]], [["O", "B-PER", "I-PER"]])
    assert f1_score(*as_iob2, mode="strict", scheme=seqeval_scheme("iob1")) == 0.0
    # IOB1 tags must not reach seqeval's IOB2 unconverted: entities starting with I- would be dropped
    assert len(scheme.Tokens(IOB1, scheme.IOB2).entities) == 1
    assert len(scheme.Tokens(seqeval_tags(IOB1, "iob1"), scheme.IOB2).entities) == len(SPANS)
    assert seqeval_tags(IOB2, "iob2") == IOB2
    assert seqeval_tags(BIOES, "bioes") == BIOES
