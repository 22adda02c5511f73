"""Readers for CoNLL column files (CoNLL-2003 style) and CoNLL-U (Universal Dependencies).

Both return one ``Sentence`` per sentence, with the line number of every token so that later checks can
point at the exact line. Every problem of a file is collected (up to ``max_errors``) before one DataError
is raised. Files are opened with ``readers.read_text_source``: a missing file, an unknown encoding and bytes
that are not valid in the encoding (with their line) are reported there; UTF-8 files may start with a BOM.
Lines are split by ``readers.split_lines`` (at ``\\n``, ``\\r\\n`` and a lone ``\\r`` only), so line numbers
match what editors show even when a token holds U+2028 or a latin-1 ``\\x85``. Pure Python, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from taskhead.data.readers import numbered_lines, read_text_source, split_lines
from taskhead.data.validation import Problems
from taskhead.errors import ConfigError

DOCSTART = "-DOCSTART-"
CONLLU_COLUMNS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
TAG_FIELDS = {"upos": 3, "xpos": 4}

_TEXT_COMMENT = re.compile(r"#\s*text\s*=\s*(.*?)\s*$")
_SKIPPED_ID = re.compile(r"\d+-\d+|\d+\.\d+")  # multi-word token range, empty node
_ENTITY_TAG = re.compile(r"O|[BIESLU]-\S+")  # IOB1/IOB2/BIOES/BILOU tags


@dataclass
class Sentence:
    """One sentence: its tokens, their tags (None when read unlabelled) and where each token was found."""

    tokens: list[str]
    tags: list[str] | None
    where: str  # "PATH:LINE" of the sentence's first token line
    lines: list[int]  # the line number of each token
    text: str | None = None  # CoNLL-U `# text = ...` when present


@dataclass
class _Sentences:
    """Collects token lines into sentences; ``close`` ends the current sentence."""

    path: str
    labelled: bool
    sentences: list[Sentence] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    text: str | None = None

    def add(self, token: str, tag: str | None, line: int) -> None:
        self.tokens.append(token)
        if tag is not None:
            self.tags.append(tag)
        self.lines.append(line)

    def close(self) -> None:
        if self.tokens:
            tags = self.tags if self.labelled else None
            where = f"{self.path}:{self.lines[0]}"
            self.sentences.append(Sentence(self.tokens, tags, where, self.lines, self.text))
            self.tokens, self.tags, self.lines = [], [], []
        self.text = None


@dataclass
class _Columns:
    """The column layout of a CoNLL file, fixed by its first token line."""

    count: int
    line: int
    token: int
    tag: int | None
    ok: bool
    settings: tuple[int, int | None]  # token_column, tag_column as given, for messages


def _no_sentences(path: str, text: str, what: str) -> str:
    found = "an empty file" if not text.strip() else f"only {what} lines"
    return (
        f"{path}: no sentences; expected token lines (one token per line, sentences separated by blank "
        f"lines), found {found}"
    )


def _split_columns(line: str) -> list[str]:
    """Tab-separated when the line holds a tab, else separated by runs of spaces."""
    if "\t" in line:
        return line.split("\t")
    return [part for part in line.split(" ") if part]


def _columns(
    path: str, line: int, count: int, token_column: int, tag_column: int | None, problems: Problems
) -> _Columns:
    """Resolve (possibly negative) column indices against the first token line, reporting bad ones."""
    where = f"{path}:{line}"
    layout = _Columns(count, line, token_column % count, None, True, (token_column, tag_column))
    for setting, index in (("token_column", token_column), ("tag_column", tag_column)):
        if index is not None and not -count <= index < count:
            problems.add(
                f"{where}: {setting}: out of range, expected an index from {-count} to {count - 1} "
                f"(this first token line has {count} column{'s' if count != 1 else ''}), found {index}"
            )
            layout.ok = False
    if layout.ok and tag_column is not None:
        layout.tag = tag_column % count
        if layout.tag == layout.token:
            problems.add(
                f"{where}: tag_column: selects the token column too (this first token line has {count} "
                f"column{'s' if count != 1 else ''}), expected another column, found {tag_column}"
            )
            layout.ok = False
    return layout


def read_conll(
    path: str | Path,
    *,
    token_column: int = 0,
    tag_column: int = -1,
    labelled: bool = True,
    encoding: str = "utf-8",
    comment_prefix: str | None = "#",
    max_errors: int = 20,
) -> list[Sentence]:
    """Read a CoNLL column file: one token per line, a blank line between sentences.

    A line holding a tab is split on tabs, any other on runs of spaces; in tab-separated lines the token
    and tag are stripped of surrounding spaces. Column indices may be negative (-1 is the last column) and
    are resolved against the file's first token line, whose column count every token line must have.
    Lines whose first column is ``-DOCSTART-`` are skipped and end a sentence.

    A line starting with ``comment_prefix`` is a comment only before the first token of a sentence; inside
    a sentence it is a token line (``#`` can be a token). A sentence whose *first* token starts with the
    prefix (a hashtag in tweets) would thus be read as a comment: pass ``comment_prefix=None`` for such
    files, which turns comments off.

    With ``labelled=False`` only the token column is read and lines may have a single column.

    Raises:
        DataError: every located problem of the file (up to ``max_errors``), or a missing/undecodable file.
    """
    name = "<stdin>" if str(path) == "-" else str(path)
    text = read_text_source(path, encoding)
    problems = Problems(max_errors)
    out = _Sentences(name, labelled)
    layout: _Columns | None = None
    for number, line in numbered_lines(text):
        if not line or line.isspace():
            out.close()
            continue
        if comment_prefix and not out.tokens and line.startswith(comment_prefix):
            continue
        fields = _split_columns(line)
        if fields[0].strip(" ") == DOCSTART:
            out.close()
            continue
        if layout is None:
            tag = tag_column if labelled else None
            layout = _columns(name, number, len(fields), token_column, tag, problems)
        if len(fields) != layout.count:
            expected = f"expected {layout.count} columns (as on line {layout.line})"
            problems.add(f"{name}:{number}: {expected}, found {len(fields)}")
            continue
        if layout.ok:
            _add_conll_token(out, fields, layout, number, problems)
    out.close()
    if not problems.total and not out.sentences:
        problems.add(_no_sentences(name, text, "blank, comment and -DOCSTART-"))
    problems.raise_if_any()
    return out.sentences


def _add_conll_token(
    out: _Sentences, fields: list[str], layout: _Columns, line: int, problems: Problems
) -> None:
    """Add the token (and tag) of one token line, or report an empty one."""
    token = fields[layout.token].strip(" ")
    tag = fields[layout.tag].strip(" ") if layout.tag is not None else None
    if not token:
        problems.add(
            f"{out.path}:{line}: token: empty field, expected a token (token_column={layout.settings[0]})"
        )
    if tag == "":
        problems.add(f"{out.path}:{line}: tag: empty field, expected a tag (tag_column={layout.settings[1]})")
    if token and tag != "":
        out.add(token, tag, line)


def read_conllu(
    path: str | Path,
    *,
    tag_field: str = "upos",
    labelled: bool = True,
    encoding: str = "utf-8",
    max_errors: int = 20,
) -> list[Sentence]:
    """Read a CoNLL-U file (10 tab-separated columns ``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC``).

    A sentence is its syntactic words, as UD's POS scoring uses them: multi-word token lines (ID ``3-4``)
    and empty nodes (ID ``5.1``) are skipped. ``#`` lines are comments; ``# text = ...`` becomes
    ``Sentence.text``. The tag is the UPOS (``tag_field="upos"``) or XPOS (``"xpos"``) column. Word IDs
    must count up from 1 in each sentence, which also catches a missing blank line between sentences.

    Raises:
        ConfigError: ``tag_field`` is neither ``upos`` nor ``xpos``.
        DataError: every located problem of the file (up to ``max_errors``), or a missing/undecodable file.
    """
    if tag_field not in TAG_FIELDS:
        raise ConfigError(f"tag_field: expected one of {', '.join(TAG_FIELDS)}, found {tag_field!r}")
    tag_index = TAG_FIELDS[tag_field] if labelled else None
    name = "<stdin>" if str(path) == "-" else str(path)
    text = read_text_source(path, encoding)
    problems = Problems(max_errors)
    out = _Sentences(name, labelled)
    last_id = 0
    for number, line in numbered_lines(text):
        if not line or line.isspace():
            out.close()
            last_id = 0
        elif line[0] == "#":
            match = _TEXT_COMMENT.match(line) if not out.tokens else None
            if match:
                out.text = match.group(1)
        else:
            last_id = _conllu_word(out, line.split("\t"), number, last_id, tag_index, problems)
    out.close()
    if not problems.total and not out.sentences:
        problems.add(_no_sentences(name, text, "blank and comment"))
    problems.raise_if_any()
    return out.sentences


def _conllu_word(
    out: _Sentences, fields: list[str], line: int, last_id: int, tag_index: int | None, problems: Problems
) -> int:
    """Add one word line to the sentence (or report it); returns the ID of the last word line seen."""
    where = f"{out.path}:{line}"
    if len(fields) != len(CONLLU_COLUMNS):
        problems.add(
            f"{where}: expected {len(CONLLU_COLUMNS)} tab-separated columns ({' '.join(CONLLU_COLUMNS)}), "
            f"found {len(fields)}"
        )
        return last_id
    word_id = fields[0]
    if not (word_id.isascii() and word_id.isdigit()):
        if not _SKIPPED_ID.fullmatch(word_id):
            problems.add(
                f"{where}: ID: not a word ID, expected an integer (or a range like 3-4, or a decimal like "
                f"5.1 for an empty node), found {word_id!r}"
            )
        return last_id
    number = int(word_id)
    ok = number == last_id + 1
    if not ok:
        hint = " (is a blank line missing before this sentence?)" if number == 1 else ""
        problems.add(f"{where}: ID: out of sequence, expected {last_id + 1}, found {word_id}{hint}")
    form = fields[1]
    if not form:
        problems.add(f"{where}: FORM: empty, expected a word form")
        ok = False
    tag = fields[tag_index] if tag_index is not None else None
    if tag_index is not None and tag in ("", "_"):
        label = CONLLU_COLUMNS[tag_index]
        hint = "; if the treebank has no XPOS tags, set tag_field='upos'" if label == "XPOS" else ""
        problems.add(
            f"{where}: {label}: expected {'an' if label == 'XPOS' else 'a'} {label} tag, found {tag!r}{hint}"
        )
        ok = False
    if ok:
        out.add(form, tag, line)
    return number


def sniff_conll(text: str, tags: set[str] | None = None) -> str | None:
    """``conll`` or ``conllu`` when a text clearly is a column file, else None (raw text, one input a line).

    The rule, so that the answer never hangs on how many words lines happen to have:

    - ``conll`` when a line starts with ``-DOCSTART-``;
    - ``conllu`` when every token line has 10 tab-separated columns and an integer (or range) ID first;
    - ``conll`` when there are at least two token lines, all with the same number (two or more) of
      columns, the last column of every one is a tag: one of ``tags`` (the model's tag set, e.g.
      POS tags) or an entity tag (``O``, ``B-PER``, ``I-LOC``, ...), and the file shows sentence breaks
      (a blank line between token lines) or a tag other than ``O`` (raw lines may end in the word "O").

    Token lines are the non-blank lines that do not start with ``#``. A one-column token-per-line file,
    or a tagged file whose tags the model does not know, is read as raw text: name the format
    (``--format conll``) for those.
    """
    lines = [line for line in split_lines(text) if line.strip() and not line.startswith("#")]
    if any(line.startswith(DOCSTART) for line in lines):
        return "conll"
    if not lines:
        return None
    rows = [_split_columns(line) for line in lines]
    if all(len(line.split("\t")) == len(CONLLU_COLUMNS) for line in lines) and all(
        r[0].isdigit() or _SKIPPED_ID.fullmatch(r[0]) for r in rows
    ):
        return "conllu"
    widths = {len(r) for r in rows}
    if len(rows) < 2 or len(widths) != 1 or widths.pop() < 2:
        return None
    last = [r[-1].strip(" ") for r in rows]
    known = tags or set()
    if not all(t in known or _ENTITY_TAG.fullmatch(t) for t in last):
        return None
    # Lines of raw text can end in a word that is also a tag ("alice went O"): tags alone are not enough;
    # a column file also shows sentence breaks (blank lines between token lines) or a tag other than O.
    content = [line.strip() for line in split_lines(text) if not line.startswith("#")]
    first = next(i for i, line in enumerate(content) if line)
    end = max(i for i, line in enumerate(content) if line)
    has_break = any(not line for line in content[first:end])
    return "conll" if has_break or any(t != "O" for t in last) else None
