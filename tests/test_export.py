"""``taskhead export --format onnx`` and ``Predictor(backend="onnx")``: the same predictions as PyTorch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_close, qa_records, run_cli, sentiment_records, write_jsonl

import taskhead
from taskhead.errors import ConfigError, ExportError
from taskhead.workflows.export import ATOL, export_onnx

INPUTS: dict[str, list[Any]] = {
    "classification": ["good movie", "bad movie", {"id": "x", "text": "superb story"}],  # single-text model
    "token-classification": [
        "Alice won the match in New York.",
        ["bob", "was", "in", "rome"],
        {"tokens": ["x"]},
    ],
    "question-answering": [
        ("who won", "the team won the match"),
        {"question": "what fell", "context": "it fell"},
    ],
    "embedding": ["good movie", ("good movie", "bad film"), {"id": "x", "text": "awful plot"}],
}
OUTPUTS = {"question-answering": ["start_logits", "end_logits"], "embedding": ["embeddings"]}


@pytest.mark.parametrize("task", list(INPUTS))
def test_onnx_predictions_match_pytorch(task: str, tiny_runs: Any, tmp_path: Path) -> None:
    run = tiny_runs[task]
    out = tmp_path / "onnx"
    report = export_onnx(run, out=out, quantize="int8")
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.int8.onnx", "model.onnx"]
    saved = json.loads((out / "export.json").read_text())
    assert saved["task"] == task and saved["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert saved["outputs"] == OUTPUTS.get(task, ["logits"])
    fp32 = saved["variants"]["fp32"]
    assert fp32["within_tolerance"] and fp32["max_abs_diff"] <= ATOL and fp32["checked_values"] > 0
    assert saved == json.loads(json.dumps(report))

    torch_predictor = taskhead.load(run)
    onnx_predictor = taskhead.load(run, backend="onnx", onnx_dir=out)
    assert onnx_predictor.backend == "onnx" and onnx_predictor.labels == torch_predictor.labels
    expected = torch_predictor.predict(INPUTS[task])
    assert_close(onnx_predictor.predict(INPUTS[task]), expected, tol=2e-4)  # scores rounded to 4 places

    int8 = taskhead.load(run, backend="onnx", onnx_variant="int8", onnx_dir=out)
    predictions = int8.predict(INPUTS[task])
    assert len(predictions) == len(expected)
    assert [set(p) for p in predictions] == [set(p) for p in expected]
    assert saved["variants"]["int8"]["max_abs_diff"] < 1.0  # quantized: close, not equal


def test_onnx_evaluate_matches_pytorch(tiny_runs: Any, tmp_path: Path) -> None:
    run = tiny_runs["question-answering"]
    export_onnx(run, out=tmp_path / "onnx")
    data = write_jsonl(tmp_path / "eval.jsonl", qa_records(4))
    expected = taskhead.load(run).evaluate(data)
    got = taskhead.load(run, backend="onnx", onnx_dir=tmp_path / "onnx").evaluate(data)
    assert_close(got, expected, tol=1e-4)


def test_export_cli_round_trip(tiny_runs: Any, tmp_path: Path) -> None:
    run = shutil.copytree(tiny_runs["classification"], tmp_path / "run")
    result = run_cli("predict", str(run), "-", "--backend", "onnx", stdin="good movie\n")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {run}: no ONNX export ({run / 'onnx' / 'export.json'} is missing); "
        f"run `taskhead export {run} --format onnx` first"
    )
    result = run_cli("export", str(run), "--format", "onnx", "--quantize", "int8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"fp32: {run / 'onnx' / 'model.onnx'} (max |onnx - torch| ")
    assert f"int8: {run / 'onnx' / 'model.int8.onnx'}" in result.stdout

    texts = "good movie\nawful plot\nvery good film\n"
    torch_out = run_cli("predict", str(run), "-", stdin=texts)
    onnx_out = run_cli("predict", str(run), "-", "--backend", "onnx", stdin=texts)
    assert onnx_out.returncode == 0, onnx_out.stderr
    labels = [[json.loads(line)["label"] for line in r.stdout.splitlines()] for r in (torch_out, onnx_out)]
    assert labels[0] == labels[1] and len(labels[0]) == 3
    int8_out = run_cli("predict", str(run), "-", "--backend", "onnx", "--onnx-variant", "int8", stdin=texts)
    assert int8_out.returncode == 0 and len(int8_out.stdout.splitlines()) == 3

    data = write_jsonl(tmp_path / "eval.jsonl", sentiment_records(1))
    result = run_cli(
        "evaluate", str(run), str(data), "--backend", "onnx", "--output", str(tmp_path / "m.json")
    )
    assert result.returncode == 0, result.stderr
    onnx_metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert onnx_metrics["accuracy"] == taskhead.load(run).evaluate(data)["accuracy"]


def test_generation_runs_are_refused(tiny_runs: Any) -> None:
    run = tiny_runs["generation"]
    result = run_cli("export", str(run), "--format", "onnx")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"error: {run}: export supports encoder tasks (classification, token-classification, "
        "question-answering, embedding); this run's task 'generation' generates text token by token"
    )
    assert not (run / "onnx").exists()


def test_missing_int8_and_stale_exports_are_refused(tiny_runs: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    run = shutil.copytree(tiny_runs["classification"], tmp_path / "run")
    export_onnx(run)
    with pytest.raises(
        ExportError, match=r"no int8 model; run `taskhead export .* --format onnx --quantize int8`"
    ):
        taskhead.load(run, backend="onnx", onnx_variant="int8")
    weights = run / "model" / "model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in tensors.items()}, str(weights))
    with pytest.raises(
        ExportError, match=r"exported from other weights than .* \(retrained or replaced since\)"
    ):
        taskhead.load(run, backend="onnx")
    export_onnx(run)  # re-exported: loads again, matching the new weights
    assert_close(
        taskhead.load(run, backend="onnx").predict(["good"]), taskhead.load(run).predict(["good"]), 1e-4
    )


def test_backend_and_precision_options(tiny_runs: Any) -> None:
    import torch

    from taskhead.engine.devices import bf16_supported
    from taskhead.workflows.predict import inference_precision

    cpu = torch.device("cpu")
    assert inference_precision(cpu, "auto") == ("bf16" if bf16_supported(cpu) else "fp32")
    assert inference_precision(cpu, "auto", "onnx") == "fp32"
    with pytest.raises(ConfigError, match="bf16 applies to the torch backend"):
        inference_precision(cpu, "bf16", "onnx")
    run = tiny_runs["classification"]
    with pytest.raises(ConfigError, match="backend: expected 'torch' or 'onnx', got 'tensorrt'"):
        taskhead.load(run, backend="tensorrt")
    with pytest.raises(ConfigError, match="device: the onnx backend runs on the CPU; got 'cuda'"):
        taskhead.load(run, backend="onnx", device="cuda")
    auto = taskhead.load(run, precision="auto")
    assert auto.precision == inference_precision(cpu, "auto")
    assert [set(p) for p in auto.predict(["good movie"])] == [{"label", "scores"}]
