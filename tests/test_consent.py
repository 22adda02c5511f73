"""No code or pickle without consent; YAML/JSON that cannot exhaust memory; files that are not files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, run_cli, tiny_config, write_jsonl

from taskhead.errors import ConfigError, UnsafeWeightsError

# ---------------------------------------------------------------- helpers


def _pickled(run: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` whose model weights are a pickle (pytorch_model.bin) and no safetensors."""
    import torch
    from safetensors.torch import load_file

    copy = shutil.copytree(run, tmp_path / f"{run.parent.name}-{run.name}-pickled")
    weights = copy / "model" / "model.safetensors"
    torch.save(load_file(str(weights)), copy / "model" / "pytorch_model.bin")
    weights.unlink()
    return copy


def _asking(run: Path, tmp_path: Path, *, auto_map: bool = False) -> Path:
    """A copy of ``run`` whose saved files ask for its own Python code (taskhead.json, or config.json)."""
    copy = shutil.copytree(run, tmp_path / f"{run.parent.name}-{run.name}-remote{'-map' if auto_map else ''}")
    if auto_map:
        config = json.loads((copy / "model" / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
        (copy / "model" / "config.json").write_text(json.dumps(config))
    else:
        meta = json.loads((copy / "taskhead.json").read_text())
        meta["config"]["model"]["trust_remote_code"] = True
        (copy / "taskhead.json").write_text(json.dumps(meta))
    return copy


# ---------------------------------------------------------------- trust_remote_code comes from the caller


def test_saved_run_cannot_turn_on_remote_code_python(tiny_runs: Any, tmp_path: Path) -> None:
    import taskhead
    from taskhead.retrieval.rerank import Reranker

    remote = _asking(tiny_runs["classification"], tmp_path)
    with pytest.raises(ConfigError, match=r"model.trust_remote_code=true.*--trust-remote-code"):
        taskhead.load(remote)
    with pytest.raises(ConfigError, match="trust_remote_code=True"):
        Reranker(remote)
    mapped = _asking(tiny_runs["classification"], tmp_path, auto_map=True)
    with pytest.raises(ConfigError, match=r"config.json names its own code \(auto_map\)"):
        taskhead.load(mapped)
    # the caller's consent loads it, and the loaded config carries the caller's value, not the file's
    predictor = taskhead.load(remote, device="cpu", trust_remote_code=True)
    assert predictor.config.model.trust_remote_code is True
    assert taskhead.load(tiny_runs["classification"], device="cpu").config.model.trust_remote_code is False


def test_saved_run_cannot_turn_on_remote_code_cli(tiny_runs: Any, tmp_path: Path) -> None:
    remote = _asking(tiny_runs["classification"], tmp_path)
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": "good"}])
    for args in (
        ("predict", str(remote), str(inputs)),
        ("evaluate", str(remote), str(inputs)),
        ("export", str(remote), "--out", str(tmp_path / "onnx")),
    ):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        expected = f"error: {remote}: the model was trained with model.trust_remote_code=true"
        assert result.stderr.startswith(expected)
        assert "--trust-remote-code" in result.stderr and "Traceback" not in result.stderr
    ok = run_cli("predict", str(remote), str(inputs), "--trust-remote-code", "--device", "cpu")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["label"] in ("neg", "pos")


def test_embedding_run_needs_consent_for_its_code(tiny_runs: Any, tmp_path: Path) -> None:
    from taskhead.retrieval.encoder import Encoder

    remote = _asking(tiny_runs["embedding"], tmp_path)
    with pytest.raises(ConfigError, match="--trust-remote-code"):
        Encoder(remote, device="cpu")
    corpus = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "good film"}])
    result = run_cli("index", "build", str(remote), str(corpus), "--out", str(tmp_path / "idx"), "--quiet")
    assert result.returncode == 2 and "--trust-remote-code" in result.stderr, result.stderr
    assert Encoder(remote, device="cpu", trust_remote_code=True).dimension > 0


# ---------------------------------------------------------------- safetensors only


def test_pickle_only_run_is_refused_everywhere(tiny_runs: Any, tmp_path: Path) -> None:
    import taskhead
    from taskhead.retrieval.encoder import Encoder
    from taskhead.retrieval.rerank import Reranker

    pickled = _pickled(tiny_runs["classification"], tmp_path)
    message = r"weights only as pickle files \(pytorch_model.bin\) and no \*.safetensors; taskhead loads"
    with pytest.raises(UnsafeWeightsError, match=message):
        taskhead.load(pickled)
    with pytest.raises(UnsafeWeightsError, match=message):
        Reranker(pickled)
    with pytest.raises(UnsafeWeightsError, match=message):
        Encoder(_pickled(tiny_runs["embedding"], tmp_path), device="cpu")
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": "good"}])
    result = run_cli("predict", str(pickled), str(inputs))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {pickled / 'model'}: weights only as pickle files (pytorch_model.bin) and no *.safetensors; "
        "taskhead loads safetensors only (unpickling can run code from the file): re-save the model with "
        "save_pretrained(..., safe_serialization=True) and load it again"
    )


def test_pickle_only_backbone_is_refused_at_training(tiny_backbone: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    import taskhead

    backbone = shutil.copytree(tiny_backbone, tmp_path / "bert-pickled")
    torch.save(load_file(str(backbone / "model.safetensors")), backbone / "pytorch_model.bin")
    (backbone / "model.safetensors").unlink()
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    data = {"train": write_jsonl(tmp_path / "t.jsonl", rows)}
    config = tiny_config(backbone, data, tmp_path / "run")
    with pytest.raises(UnsafeWeightsError, match=r"pytorch_model\.bin"):
        taskhead.train(config, quiet=True)
    assert not (tmp_path / "run" / "taskhead.json").exists()


def test_every_model_load_asks_for_safetensors() -> None:
    """Each from_pretrained of model weights in src/ passes use_safetensors (via SAFE_LOADING)."""
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "taskhead"
    for path in src.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "torch.load(" not in text and "import pickle" not in text, path
        for match in re.finditer(r"(\w+)\.from_pretrained\(([^()]*(?:\([^()]*\)[^()]*)*)\)", text):
            cls, args = match.group(1), match.group(2)
            if cls in ("AutoConfig", "AutoTokenizer") or "RUN_DIR" in args:
                continue
            assert "SAFE_LOADING" in args or "common" in args, f"{path}: {match.group(0)}"


# ---------------------------------------------------------------- YAML and JSON that cannot exhaust memory

BOMB = "task: classification\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_yaml_alias_bomb_fails_fast_and_located(tmp_path: Path) -> None:
    import time

    from taskhead.config import load_config

    assert len(BOMB.encode()) < 500
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    started = time.perf_counter()
    with pytest.raises(
        ConfigError, match=rf"^{path}:3: YAML alias \*a: anchors and aliases are not supported"
    ):
        load_config(path)
    assert time.perf_counter() - started < 0.5
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and result.stderr.startswith(f"error: {path}:3: YAML alias *a"), (
        result.stderr
    )
    with pytest.raises(ConfigError, match=r"^override 'train.epochs=\[&x 1, \*x\]': YAML alias \*x"):
        load_config({"task": "classification"}, ["train.epochs=[&x 1, *x]"])


def test_deeply_nested_config_and_config_that_is_no_file(tmp_path: Path) -> None:
    import os

    from taskhead.config import load_config

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match=rf"^{deep}:1: nested too deeply"):
        load_config(deep)
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)  # opening a FIFO would block until a writer comes
    big = tmp_path / "big.yaml"
    big.write_text("task: classification\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="a config file is at most"):
        load_config(big)


def test_json_nested_too_deeply_is_a_located_data_error(tmp_path: Path) -> None:
    from taskhead.data.readers import read_table
    from taskhead.data.squad import read_qa_table
    from taskhead.errors import DataError

    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"text": "fine", "label": "a"}\n{"text": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    with pytest.raises(DataError, match=rf"^{lines}:2: JSON nested too deeply"):
        read_table(lines)
    array = tmp_path / "deep.json"
    array.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(DataError, match=rf"^{array}: JSON nested too deeply"):
        read_table(array)
    squad = tmp_path / "squad.json"
    squad.write_text('{"data": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(DataError, match=rf"^{squad}(:1)?: JSON nested too deeply"):
        read_qa_table(squad)


# ---------------------------------------------------------------- files that are not files


def _validate_config(tmp_path: Path, train: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"task: classification\nmodel:\n  backbone: minilm\ndata:\n  train: {train}\n")
    return config


def test_fifo_as_data_file_is_refused_at_once(tmp_path: Path) -> None:
    import os
    import subprocess

    from taskhead.data.readers import read_table
    from taskhead.errors import DataError

    fifo = tmp_path / "train.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=rf"^{fifo}: is a FIFO \(named pipe\), expected a regular data file$"):
        read_table(fifo)
    command = [str(BIN / "taskhead"), "validate", str(_validate_config(tmp_path, fifo))]
    try:  # before the fix this hung forever: the timeout keeps the test from hanging
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("taskhead validate hung on a FIFO")
    assert result.returncode == 2
    assert result.stderr == f"error: {fifo}: is a FIFO (named pipe), expected a regular data file\n"
    with pytest.raises(DataError, match="is a character device"):
        read_table("/dev/null", "jsonl")
    import socket

    sock_path = tmp_path / "s.csv"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(DataError, match=rf"^{sock_path}: is a socket, expected a regular data file$"):
            read_table(sock_path)


def test_unreadable_data_file_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from taskhead.data import readers
    from taskhead.errors import DataError

    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}])

    def denied(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied", str(args[0]))

    with monkeypatch.context() as m:  # tests run as root, who can read anything: simulate it
        m.setattr(readers.os, "open", denied)
        with pytest.raises(DataError, match=rf"^{path}: cannot read: permission denied$"):
            readers.read_table(path)
    if os.geteuid() == 0:
        pytest.skip("root reads any file: the chmod check below needs a non-root user")
    path.chmod(0)
    result = run_cli("validate", str(_validate_config(tmp_path, path)))
    assert result.returncode == 2
    assert result.stderr == f"error: {path}: cannot read: permission denied\n"


@pytest.mark.parametrize(
    ("compress", "name"),
    [("gzip", "gzip"), ("bz2", "bzip2"), ("lzma", "xz"), ("zipfile", "zip")],
)
def test_compressed_data_file_says_it_is_compressed(tmp_path: Path, compress: str, name: str) -> None:
    import bz2
    import gzip
    import lzma
    import zipfile

    data = b'{"text": "a", "label": "x"}\n'
    path = tmp_path / "train.jsonl"
    if compress == "zipfile":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("train.jsonl", data)
    else:
        path.write_bytes({"gzip": gzip, "bz2": bz2, "lzma": lzma}[compress].compress(data))
    result = run_cli("validate", str(_validate_config(tmp_path, path)))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}: is {name}-compressed (starts with bytes "), result.stderr
    assert "decompress it first" in result.stderr and result.stderr.count("\n") == 1


def test_reading_a_csv_does_not_copy_it_as_four_byte_characters(tmp_path: Path) -> None:
    """Peak traced memory of reading a CSV: the rows plus the text, not an io.StringIO copy (4 bytes a
    character) on top. Measured on a 20 MB file: 190 MB before, 103 MB after (benchmarks/README.md)."""
    import random
    import tracemalloc

    from taskhead.data.readers import read_table

    rng = random.Random(0)
    words = [
        "the",
        "a",
        "movie",
        "film",
        "good",
        "bad",
        "great",
        "awful",
        "plot",
        "story",
        "acting",
        "was",
        "is",
        "not",
        "very",
    ]
    lines = [
        f"{' '.join(rng.choices(words, k=rng.randint(5, 40)))},{rng.choice(['pos', 'neg'])}\n"
        for _ in range(20_000)
    ]
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "".join(lines))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        table = read_table(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(table.rows) == 20_000 and table.rows[-1].where == 20_001
    assert peak < 6.5 * size, f"peak {peak / size:.1f}x the file's {size} bytes"


def test_every_command_that_loads_a_model_takes_trust_remote_code() -> None:
    from taskhead.cli import _parser

    parser = _parser()
    for argv in (
        ["predict", "RUN", "-"],
        ["evaluate", "RUN", "data.jsonl"],
        ["export", "RUN"],
        ["serve", "RUN"],
        ["search", "IDX", "query"],
        ["index", "build", "MODEL", "corpus.jsonl", "--out", "IDX"],
        ["index", "add", "IDX", "corpus.jsonl"],
        ["index", "evaluate", "IDX", "--beir", "DIR"],
        ["mine", "pairs.jsonl", "corpus.jsonl", "--out", "t.jsonl"],
    ):
        assert parser.parse_args(argv).trust_remote_code is False, argv
        assert parser.parse_args([*argv, "--trust-remote-code"]).trust_remote_code is True, argv


def test_index_query_model_needs_consent_for_its_code(tiny_runs: Any, tmp_path: Path) -> None:
    from taskhead.retrieval.index import Index

    run = shutil.copytree(tiny_runs["embedding"], tmp_path / "emb")
    Index.build(run, ["good film", "bad plot"], device="cpu", quiet=True).save(tmp_path / "idx")
    meta = json.loads((run / "taskhead.json").read_text())
    meta["config"]["model"]["trust_remote_code"] = True  # the run now asks for its own code
    (run / "taskhead.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="--trust-remote-code"):
        Index.load(tmp_path / "idx", device="cpu").search("good", k=1)
    trusted = Index.load(tmp_path / "idx", device="cpu", trust_remote_code=True)
    assert len(trusted.search("good", k=1)[0]) == 1
