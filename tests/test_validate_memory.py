"""Validation streams: the file is read a block at a time and classification keeps its examples column by
column, so validating a CSV takes a small multiple of the file's size (issue 15; benchmarks/README.md)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

from taskhead.data.examples import ColumnExamples, values
from taskhead.data.readers import read_table, stream_table, text_lines
from taskhead.errors import DataError

WORDS = ["the", "market", "team", "game", "season", "price", "shares", "company", "research", "city"]

# peak RSS of one command, in a process of its own (RUSAGE_CHILDREN keeps the largest child ever waited for)
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
)


def write_csv(path: Path, megabytes: float) -> int:
    """A classification CSV of about ``megabytes`` MB: texts of 2-40 words with commas and quotes."""
    rng = random.Random(0)
    texts = []
    for _ in range(3000):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 40))]
        words[0] += ","
        if rng.random() < 0.2:
            words[-1] = f'"{words[-1]}"'
        text = " ".join(words)
        texts.append('"' + text.replace('"', '""') + '"')
    lines = ["text,label\n"]
    size = 0
    while size < megabytes * 1_000_000:
        lines.append(f"{rng.choice(texts)},{rng.choice(('world', 'sports', 'business'))}\n")
        size += len(lines[-1])
    path.write_text("".join(lines), encoding="utf-8")
    return len(lines) - 1


def peak_rss(config: Path) -> int:
    command = [sys.executable, "-m", "taskhead", "validate", str(config)]
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True, check=True, env=os.environ
    ).stdout.split()
    assert out[0] == "0", f"taskhead validate {config} exited with {out[0]}"
    return int(out[1])


def test_validate_adds_at_most_three_times_the_file_size(tmp_path: Path) -> None:
    """``taskhead validate`` of a 16 MB CSV: peak RSS over that of a two-row file <= 3x the file size.

    Before streaming this was about 6x (the whole text, every row as a dict, then every example as a dict
    with its own ``file:line`` string); now about 1.6x (the texts themselves and a few pointers a row).
    """
    big, small = tmp_path / "big.csv", tmp_path / "small.csv"
    rows = write_csv(big, 16)
    small.write_text("text,label\na first text,world\na second text,sports\n", encoding="utf-8")
    configs = []
    for data in (small, big):
        config = tmp_path / f"{data.stem}.yaml"
        config.write_text(f"task: classification\ndata:\n  train: {data}\n", encoding="utf-8")
        configs.append(config)
    baseline, full = peak_rss(configs[0]), peak_rss(configs[1])
    size = big.stat().st_size
    assert rows > 50_000
    assert (full - baseline) / size <= 3.0, (
        f"validating {size / 1e6:.1f} MB added {(full - baseline) / 1e6:.1f} MB of peak RSS "
        f"({(full - baseline) / size:.2f}x the file; baseline {baseline / 1e6:.1f} MB)"
    )


def test_column_examples_read_as_the_dicts_they_replace() -> None:
    examples = ColumnExamples("f.csv", ["id", "text", "labels"], shared=["labels"])
    examples.append(2, {"id": 7, "text": "a", "labels": ["x", "y"]})
    examples.append(3, {"id": None, "text": "b", "labels": []})
    assert examples == [
        {"_where": "f.csv:2", "id": 7, "text": "a", "labels": ["x", "y"]},
        {"_where": "f.csv:3", "text": "b", "labels": []},
    ]
    assert examples[-1] == {"_where": "f.csv:3", "text": "b", "labels": []}
    assert examples[1:] == [examples[1]] and len(examples) == 2 and "id" not in examples[1]
    assert list(values(examples, "labels")) == [("x", "y"), ()]
    assert list(values(examples, "label")) == [None, None]
    assert examples.stored("labels")[0][0] is examples.stored("labels")[0][0]
    with pytest.raises(TypeError):
        examples[0]["text"] = "changed"  # type: ignore[index]
    assert isinstance(examples[0], MappingProxyType)
    with pytest.raises(IndexError):
        examples[2]
    records = ColumnExamples("f.parquet", ["text"])
    records.append("record 4", {"text": "c"})
    assert records[0]["_where"] == "f.parquet (record 4)"


def test_labels_are_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + "".join(f"text {i},pos\n" for i in range(50)), encoding="utf-8")
    from taskhead.config import DataConfig
    from taskhead.tasks.classification import ClassificationOptions, ClassificationTask

    examples = ClassificationTask(ClassificationOptions()).read(path, DataConfig(train=str(path)))
    assert isinstance(examples, ColumnExamples)
    assert len({id(label) for label in examples.stored("label")}) == 1


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_lines_across_read_blocks_split_and_number_as_before(tmp_path: Path, newline: str) -> None:
    """Lines are decoded a block at a time (8 KiB): a ``\\r\\n`` split between two blocks is one break, a
    lone ``\\r`` at a block's end is a break, U+2028 is none; line numbers stay those of the file."""
    header = "text,label"
    filler = "x" * (8191 - len(header + newline) - 2) + ",a"  # its line break starts at byte 8191
    varied = [f"{'x' * (i % 97)} \u2028 {i},{'ab'[i % 2]}" for i in range(1, 600)]
    lines = [header, filler, *varied]
    text = newline.join(lines) + newline
    assert text.index(newline, len(header) + 1) == 8191
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode("utf-8"))
    assert list(text_lines(path)) == [line + newline for line in lines]
    table = read_table(path)
    assert [row.where for row in table.rows] == list(range(2, 602))
    assert table.rows[-1].values == {"text": f"{'x' * (599 % 97)} \u2028 599", "label": "b"}


def test_a_bad_byte_past_the_first_block_is_located_as_before(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"text,label\n" + b"some text,a\n" * 3000 + b"caf\xe9,b\n")
    with pytest.raises(DataError, match=r"t\.csv:3002: not valid utf-8 \(byte 0xe9 at column 4\)"):
        list(stream_table(path))


def test_a_malformed_line_after_good_rows_fails_the_read_not_the_rows_before(tmp_path: Path) -> None:
    """The rows before a bad line are given; the located error comes after the last row, as one list."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": \n{"text": "b", "label": "y"}\nnull\n', "utf-8")
    stream = stream_table(path)
    seen = []
    with pytest.raises(DataError) as err:
        for row in stream:
            seen.append(row.where)
    assert seen == [1, 3]
    assert err.value.problems == [
        f"{path}:2: malformed JSON line: Expecting value (column 10)",
        f"{path}:4: expected a JSON object per line, found NoneType",
    ]
