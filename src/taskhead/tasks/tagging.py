"""Tag schemes of token classification: IOB1, IOB2, BIOES and plain (POS) tags.

Entity tags are ``O`` or ``P-TYPE`` where the prefix ``P`` is ``B``/``I`` (IOB1, IOB2) or
``B``/``I``/``E``/``S`` (BIOES). A prefix alone (``B``, ``I``, ``E``, ``S``: untyped chunk tags, as in
keyphrase data) is a chunk of one type, the empty type ``""`` here, reported as ``UNTYPED`` (``CHUNK``) in
metrics and predicted entities (``type_name``). ``plain`` tags (UPOS, PTB POS such as ``NN|SYM``, ``$``,
``(``) carry no prefix and form no spans.

Entities are decoded leniently, the way conlleval and seqeval's default mode do, so the same decoder serves
IOB1, IOB2 and BIOES; ``repair`` and ``convert`` decode and re-encode. BILOU (``L-``/``U-``) is not
supported: ``detect_scheme`` rejects it with the renaming that turns it into BIOES. Pure Python, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from taskhead.errors import DataError

SCHEMES = ("iob1", "iob2", "bioes", "plain")
ENTITY_SCHEMES = ("iob1", "iob2", "bioes")

_PREFIXES = {"iob1": ("B", "I"), "iob2": ("B", "I"), "bioes": ("B", "I", "E", "S")}
_OUTSIDE: tuple[str, str | None] = ("O", None)
UNTYPED = "CHUNK"  # the reported type of untyped chunk tags (B, I, E, S)


def split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-PER"`` -> ``("B", "PER")``; untyped ``"B"`` -> ``("B", "")``; ``"O"`` -> ``("O", None)``; any
    other tag (no ``B-``/``I-``/``E-``/``S-`` prefix) -> ``(tag, None)``."""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return tag[0], tag[2:]
    if tag in ("B", "I", "E", "S"):
        return tag, ""
    return tag, None


def join_tag(prefix: str, type_: str) -> str:
    """Tag of ``prefix`` and entity ``type_``: ``("B", "PER")`` -> ``"B-PER"``; ``("B", "")`` -> ``"B"``."""
    return f"{prefix}-{type_}" if type_ else prefix


def type_name(type_: str) -> str:
    """The reported name of an entity type: ``UNTYPED`` (``CHUNK``) for untyped chunks, else ``type_``."""
    return type_ or UNTYPED


def _check_scheme(scheme: str, *, entity: bool = False) -> None:
    allowed = ENTITY_SCHEMES if entity else SCHEMES
    if scheme not in allowed:
        hint = " (plain tags have no entity spans)" if scheme == "plain" else ""
        raise ValueError(f"tag scheme: expected one of {', '.join(allowed)}{hint}, found {scheme!r}")


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The scheme of the tag sequences of a data set.

    ``plain`` when some non-``O`` tag lacks a ``B-``/``I-``/``E-``/``S-`` prefix and is not a bare ``B``,
    ``I``, ``E`` or ``S`` (untyped chunk tags, which count as prefixed); ``bioes`` when an ``E``/``E-`` or
    ``S``/``S-`` tag occurs; ``iob1`` when more entities start with ``I-`` (after ``O``, another type or the
    start of a sentence) than with ``B-``; otherwise ``iob2`` (also when there are no entities at all).

    Raises:
        DataError: BILOU tags (``L-``/``U-`` prefixes, or bare ``L``/``U``), with the renaming to BIOES.
    """
    b_starts = i_starts = 0
    has_e_or_s = False
    bilou: str | None = None
    for sequence in sequences:
        prev_type: str | None = None
        for tag in sequence:
            if tag == "O":
                prev_type = None
                continue
            prefix, type_ = split_tag(tag)
            if type_ is None:
                if (len(tag) > 2 and tag[0] in "LU" and tag[1] == "-") or tag in ("L", "U"):
                    bilou = bilou or tag
                    prev_type = tag[2:]
                    continue
                return "plain"
            if prefix == "B":
                b_starts += 1
            elif prefix == "I" and prev_type != type_:
                i_starts += 1
            else:
                has_e_or_s = has_e_or_s or prefix in ("E", "S")
            prev_type = type_
    if bilou is not None:
        dash_l, dash_e, dash_u, dash_s = ("L-", "E-", "U-", "S-") if len(bilou) > 1 else ("L", "E", "U", "S")
        raise DataError(
            [
                f"tags: BILOU tags are not supported, expected O or B-/I-/E-/S- tags, found {bilou!r}; "
                f"rename {dash_l} to {dash_e} and {dash_u} to {dash_s} (BIOES)"
            ]
        )
    if has_e_or_s:
        return "bioes"
    return "iob1" if i_starts > b_starts else "iob2"


def _parse(tags: Sequence[str]) -> list[tuple[str, str | None]]:
    parsed = []
    for i, tag in enumerate(tags):
        prefix, type_ = split_tag(tag)
        if type_ is None and tag != "O":
            raise ValueError(f"tag at position {i}: expected O or a B-/I-/E-/S- tag, found {tag!r}")
        parsed.append((prefix, type_))
    return parsed


def entities(tags: Sequence[str], scheme: str) -> list[tuple[str, int, int]]:
    """Entity spans ``(type, start, end_exclusive)``, decoded leniently like conlleval; ``type`` is ``""``
    for untyped chunk tags (``type_name`` gives the reported name).

    An ``I-X`` after ``O`` or another type starts a new entity; a ``B-X`` or ``S-X`` always starts one; an
    entity ends before ``O``, ``B-``, ``S-``, another type, or after ``E-``/``S-``. A BIOES entity not
    closed by ``E-`` thus ends where the next tag does not continue it. The same rules decode all three
    schemes, so a tag outside its scheme (``E-X`` in IOB2) is still read the conlleval way.

    Raises:
        ValueError: for ``plain``, or for a tag that is neither ``O`` nor prefixed.
    """
    _check_scheme(scheme, entity=True)
    spans: list[tuple[str, int, int]] = []
    open_type: str | None = None  # type of the entity still open before position i
    start = 0
    prev_prefix = "O"
    for i, (prefix, type_) in enumerate(_parse(tags)):
        if open_type is not None and (
            prev_prefix in ("E", "S") or prefix in ("O", "B", "S") or type_ != open_type
        ):
            spans.append((open_type, start, i))
            open_type = None
        if type_ is not None and open_type is None:
            open_type, start = type_, i
        prev_prefix = prefix
    if open_type is not None:
        spans.append((open_type, start, len(tags)))
    return spans


def _encode(spans: Sequence[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Tags of ``length`` positions holding the sorted, non-overlapping ``spans`` in ``scheme``."""
    out = ["O"] * length
    prev_end, prev_type = -1, ""
    for type_, start, end in spans:
        if scheme == "bioes":
            if end - start == 1:
                out[start] = join_tag("S", type_)
            else:
                inside = [join_tag("I", type_)] * (end - start - 2)
                out[start:end] = [join_tag("B", type_), *inside, join_tag("E", type_)]
        else:
            out[start:end] = [join_tag("I", type_)] * (end - start)
            # IOB1 writes B- only where an entity directly follows one of the same type.
            if scheme == "iob2" or (start == prev_end and type_ == prev_type):
                out[start] = join_tag("B", type_)
        prev_end, prev_type = end, type_
    return out


def invalid_positions(tags: Sequence[str], scheme: str) -> list[int]:
    """Positions whose tag is not allowed there in ``scheme`` (none for ``plain``).

    Every scheme: a tag that is neither ``O`` nor prefixed, or a prefix outside the scheme (``E-``/``S-`` in
    IOB). IOB2: ``I-X`` not preceded by ``B-X``/``I-X``. IOB1: ``B-X`` not preceded by ``I-X``/``B-X``.
    BIOES: ``I-X``/``E-X`` not preceded by ``B-X``/``I-X``, and ``B-X``/``I-X`` not followed by
    ``I-X``/``E-X`` -- an unfinished entity is blamed on its last tag, not on the ``O``, ``B-`` or ``S-``
    after it, so each broken transition is counted once.
    """
    _check_scheme(scheme)
    if scheme == "plain":
        return []
    allowed = _PREFIXES[scheme]
    parsed = [split_tag(tag) for tag in tags]
    bad: list[int] = []
    for i, (prefix, type_) in enumerate(parsed):
        if type_ is None:
            if prefix != "O":
                bad.append(i)
            continue
        if prefix not in allowed:
            bad.append(i)
            continue
        prev = parsed[i - 1] if i else _OUTSIDE
        after_same = prev[1] == type_ and prev[0] in ("B", "I")
        if scheme == "iob2":
            wrong = prefix == "I" and not after_same
        elif scheme == "iob1":
            wrong = prefix == "B" and not after_same
        else:
            nxt = parsed[i + 1] if i + 1 < len(parsed) else _OUTSIDE
            wrong = (prefix in ("I", "E") and not after_same) or (
                prefix in ("B", "I") and not (nxt[1] == type_ and nxt[0] in ("I", "E"))
            )
        if wrong:
            bad.append(i)
    return bad


def repair(tags: Sequence[str], scheme: str) -> list[str]:
    """The standard minimal fix: decode the entities leniently and re-encode them in ``scheme``.

    IOB2 ``O I-PER`` -> ``O B-PER``; BIOES ``B-PER O`` -> ``S-PER O``. ``plain`` tags come back unchanged.
    """
    _check_scheme(scheme)
    if scheme == "plain":
        return list(tags)
    return _encode(entities(tags, scheme), len(tags), scheme)


def convert(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Tags re-encoded from ``source`` to ``target`` (IOB1, IOB2, BIOES) via their entity spans.

    Invalid input is decoded leniently, so ``convert(tags, s, s) == repair(tags, s)``.
    """
    if source == target == "plain":
        return list(tags)
    _check_scheme(source, entity=True)
    _check_scheme(target, entity=True)
    return _encode(entities(tags, source), len(tags), target)


def continuation(tag: str, scheme: str) -> str:
    """Label of a word's later sub-tokens when every sub-token is labelled: ``B-X`` -> ``I-X``.

    As transformers' ``run_ner`` does with ``label_all_tokens``; every other tag is repeated. In BIOES a
    word tagged ``S-X`` or ``E-X`` thus repeats ``S-X``/``E-X`` on its sub-tokens: only the first sub-token of
    a word is scored, so metrics are unaffected.
    """
    _check_scheme(scheme)
    if scheme != "plain":
        prefix, type_ = split_tag(tag)
        if prefix == "B" and type_ is not None:
            return join_tag("I", type_)
    return tag


def seqeval_scheme(scheme: str) -> type | None:
    """The ``seqeval.scheme`` class for seqeval's strict mode; ``None`` for ``plain``.

    ``iob1`` gets ``IOB2``: seqeval 1.2.2's strict ``IOB1`` decodes valid IOB1 correctly but invents
    entities in invalid sequences (``["B-PER", "I-PER"]`` yields PER over position 1 alone), which credits
    wrong predictions. Metrics for IOB1 data are therefore computed after conversion to IOB2 (pass gold and
    predicted tags through ``seqeval_tags``); that conversion decodes leniently, so for IOB1 data strict and
    default mode give the same scores.
    """
    _check_scheme(scheme)
    if scheme == "plain":
        return None
    from seqeval.scheme import IOB2, IOBES

    return IOBES if scheme == "bioes" else IOB2


def seqeval_tags(tags: Sequence[str], scheme: str) -> list[str]:
    """Tags ready for seqeval with ``seqeval_scheme(scheme)``: IOB1 converted to IOB2, untyped chunk tags
    given the type ``UNTYPED`` (``B`` -> ``B-CHUNK``, so that seqeval reports that name), others as they are.
    """
    _check_scheme(scheme)
    out = convert(tags, "iob1", "iob2") if scheme == "iob1" else list(tags)
    if scheme == "plain":
        return out
    return [join_tag(tag, UNTYPED) if split_tag(tag)[1] == "" else tag for tag in out]


def tagging_metrics(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str
) -> dict[str, Any]:
    """Token accuracy over words; for entity schemes also seqeval's entity-level P/R/F1 (micro, macro and
    per type) in strict mode for the scheme. ``gold`` and ``predicted`` hold one tag per word."""
    total = sum(len(g) for g in gold)
    correct = sum(a == b for g, p in zip(gold, predicted, strict=True) for a, b in zip(g, p, strict=True))
    metrics: dict[str, Any] = {"accuracy": correct / total if total else 0.0, "words": total}
    if scheme == "plain":
        return metrics
    from seqeval.metrics import classification_report

    gold_l = [seqeval_tags(g, scheme) for g in gold]  # IOB1 is scored after conversion to IOB2
    pred_l = [seqeval_tags(p, scheme) for p in predicted]
    report = classification_report(
        gold_l, pred_l, mode="strict", scheme=seqeval_scheme(scheme), output_dict=True, zero_division=0
    )
    micro, macro = report.pop("micro avg"), report.pop("macro avg")
    report.pop("weighted avg", None)
    metrics.update(
        precision=float(micro["precision"]),
        recall=float(micro["recall"]),
        f1=float(micro["f1-score"]),
        macro_f1=float(macro["f1-score"]),
        entities=int(micro["support"]),
        per_type={
            name: {
                "precision": float(v["precision"]),
                "recall": float(v["recall"]),
                "f1": float(v["f1-score"]),
                "support": int(v["support"]),
            }
            for name, v in sorted(report.items())
        },
    )
    return metrics
