"""No code or pickle without consent; YAML/JSON that cannot exhaust memory; files that are not files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, tiny_config, write_jsonl

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
