"""Nothing the user wrote is lost: resuming a finished-but-unsaved run, a full disk while saving, what
checkpoints/ costs against model/, and `evaluate --backend onnx` beside the PyTorch result."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import sentiment_records, tiny_config, write_jsonl
from safetensors import SafetensorError

import taskhead
import taskhead.workflows.train
from taskhead.engine import checkpoints as ck
from taskhead.errors import SaveError, TaskheadError

# 60 training examples in batches of 8: 8 optimizer steps per epoch
STEPS = {"max_steps": 6, "save_strategy": "steps", "save_steps": 3, "eval_strategy": "no"}
EPOCHS = {"epochs": 3, "save_strategy": "epoch", "eval_strategy": "epoch", "save_total_limit": 2}


def state_step(checkpoint: Path) -> int:
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]


def staged(run_dir: Path) -> Path:
    """The one staging folder beside ``run_dir`` a killed or failed training kept for --resume."""
    (folder,) = run_dir.parent.glob(f".{run_dir.name}.taskhead-tmp-*")
    return folder


def temp_entries(run_dir: Path) -> list[str]:
    """Names of hidden (temporary) entries anywhere under the run directory."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*"))


class Killed(Exception):
    """Stands for the process dying after training, before the run directory was written."""


@pytest.mark.parametrize(("train", "steps"), [(STEPS, 6), (EPOCHS, 24)], ids=["max_steps", "epochs"])
def test_resume_of_a_finished_unsaved_run_takes_no_extra_step(
    train: dict, steps: int, tiny_backbone: Path, sentiment_data: dict, tmp_path: Path, monkeypatch: Any
) -> None:
    config = tiny_config(tiny_backbone, sentiment_data, tmp_path / "run", train=train)

    def killed(*args: Any, **kwargs: Any) -> None:
        raise Killed

    monkeypatch.setattr(taskhead.workflows.train, "_write_run", killed)
    with pytest.raises(Killed):
        taskhead.train(config, quiet=True)
    monkeypatch.undo()
    last = ck.newest_complete(staged(tmp_path / "run") / "checkpoints")  # trained beside the path, kept
    assert last is not None and last.name == f"checkpoint-{steps}" and state_step(last) == steps
    assert not (tmp_path / "run").exists()  # nothing at the path until a run is complete

    run = taskhead.train(config, resume=True, quiet=True)
    folder = tmp_path / "run" / "checkpoints"
    last = folder / last.name  # swapped in with the run
    assert run.metrics["train"]["steps"] == steps  # max_steps mid-epoch: the Trainer used to run step 7
    assert run.metrics["train"]["resumed_from"] == f"checkpoint-{steps}"
    assert "train_loss" not in run.metrics["train"]  # no step ran in this call: no loss of its own
    assert ck.newest_complete(folder) == last and state_step(last) == steps
    meta = json.loads((run.run_dir / "taskhead.json").read_text())
    assert meta["trained"]["steps"] == steps
    assert temp_entries(run.run_dir) == []
    saved = json.loads((run.run_dir / "metrics.json").read_text())["train"]
    assert saved["steps"] == steps and saved["disk"] == ck.disk_usage(run.run_dir)
    if "epochs" in train:  # save_total_limit 2 with the best checkpoint picked: best and last are kept
        kept = {p.name for p in ck.checkpoints(folder)}
        assert len(kept) == 2 and {meta["model_weights"]["checkpoint"], last.name} <= kept
        assert meta["model_weights"]["chosen"] == "best"


def fail_on(match: str, error: BaseException, partial: bytes = b"\0" * 100) -> Any:
    """A torch.save that writes part of the file and raises ``error`` for paths containing ``match``."""
    real = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, str | Path) and match in str(f):
            Path(f).write_bytes(partial)
            raise error
        real(obj, f, *args, **kwargs)

    return save


def test_full_disk_during_a_checkpoint_removes_it_and_says_how_to_resume(
    tiny_backbone: Path, sentiment_data: dict, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    config = tiny_config(tiny_backbone, sentiment_data, tmp_path / "run", train=STEPS)
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", fail_on("checkpoint-6/optimizer.pt", full))
    with pytest.raises(SaveError) as raised:
        taskhead.train(config, quiet=True)
    folder = staged(tmp_path / "run") / "checkpoints"
    held = ck.human_bytes(ck.folder_bytes(folder))
    assert str(raised.value) == (
        f"{folder / 'checkpoint-6'}: no space left on device while saving a checkpoint; removed the partial "
        f"write; free space (checkpoints/ holds {held}) or lower train.save_total_limit, then resume with "
        "taskhead train CONFIG --resume"
    )
    assert isinstance(raised.value, TaskheadError) and isinstance(raised.value, OSError)
    assert [p.name for p in folder.iterdir()] == ["checkpoint-3"] and ck.is_complete(folder / "checkpoint-3")

    monkeypatch.undo()
    run = taskhead.train(config, resume=True, quiet=True)  # the next step the message names works
    assert run.metrics["train"]["steps"] == 6 and run.metrics["train"]["resumed_from"] == "checkpoint-3"
    assert "train_loss" in run.metrics["train"]  # steps 4-6 ran in this call
    assert temp_entries(run.run_dir) == [] and not folder.exists()
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("checkpoints/ "))
    usage = run.metrics["train"]["disk"]
    assert usage["checkpoints"] == 2 and usage["model_bytes"] == ck.folder_bytes(run.run_dir / "model")
    assert line == (
        f"checkpoints/ {ck.human_bytes(usage['checkpoints_bytes'])} (2 checkpoints) vs model/ "
        f"{ck.human_bytes(usage['model_bytes'])}; delete checkpoints/ when you no longer need --resume"
    )
    assert usage["checkpoints_bytes"] > 2 * usage["model_bytes"]  # weights + optimizer state, twice


def test_unwritable_checkpoint_folder_is_one_cli_line_naming_the_folder(
    tiny_backbone: Path, sentiment_data: dict, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    from taskhead.cli import main

    config = tiny_config(tiny_backbone, sentiment_data, tmp_path / "run", train=STEPS)
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    denied = PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(torch, "save", fail_on("checkpoint-3/rng_state", denied))
    run_dir = tmp_path / "run"
    assert main(["train", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "Traceback" not in err and line.startswith(
        f"error: {run_dir}: permission denied while training it "
    )
    assert line.endswith(  # no checkpoint to resume from yet
        f"removed the partial run; make {tmp_path} writable (or another output_dir), then train again with "
        f"taskhead train {path}"
    )
    assert not run_dir.exists() and not list(tmp_path.glob(".run.taskhead-*"))
    monkeypatch.undo()
    assert taskhead.train(str(path), overwrite=True, quiet=True).metrics["train"]["steps"] == 6  # as advised


def test_full_disk_while_writing_the_run_directory_removes_the_partial_model(
    tiny_backbone: Path, sentiment_data: dict, tmp_path: Path, monkeypatch: Any
) -> None:
    import transformers.modeling_utils as modeling_utils

    real = modeling_utils.safe_save_file

    def save_file(tensors: Any, filename: str, *args: Any, **kwargs: Any) -> None:
        if "checkpoints" in str(filename):
            return real(tensors, filename, *args, **kwargs)
        Path(filename).write_bytes(b"\0" * 100)  # what safetensors raises when the disk fills up
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(modeling_utils, "safe_save_file", save_file)
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(tiny_config(tiny_backbone, sentiment_data, tmp_path / "run", train=STEPS)))
    run_dir = tmp_path / "run"
    with pytest.raises(SaveError) as raised:
        taskhead.train(str(path), quiet=True)
    work = staged(run_dir)  # the run is written beside the path, then swapped in: kept for --resume
    held = ck.human_bytes(ck.folder_bytes(work / "checkpoints"))
    assert str(raised.value) == (
        f"{work}: no space left on device while saving the run directory; removed the partial write; "
        f"free space (checkpoints/ holds {held}), then resume with taskhead train {path} --resume"
    )
    assert temp_entries(work) == [] and not (work / "model").exists()
    assert not run_dir.exists()

    monkeypatch.undo()
    run = taskhead.train(str(path), resume=True, quiet=True)
    assert run.metrics["train"]["steps"] == 6 and temp_entries(run_dir) == []
    assert taskhead.load(run_dir).predict(["good movie"])[0]["label"] in {"pos", "neg"}


def test_write_failure_reads_each_serializers_error(tmp_path: Path, monkeypatch: Any) -> None:
    full = (ck.CAUSES[errno.ENOSPC], errno.ENOSPC)
    assert ck.write_failure(OSError(errno.ENOSPC, "No space left on device"), tmp_path) == full
    assert ck.write_failure(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path) == (
        "disk quota exceeded",
        errno.EDQUOT,
    )
    assert ck.write_failure(OSError(errno.EROFS, "Read-only file system"), tmp_path)[1] == errno.EROFS
    message = "Error while serializing: I/O error: No space left on device (os error 28)"
    assert ck.write_failure(SafetensorError(message), tmp_path) == full
    try:  # an OSError wrapped by another exception is found through the chain
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("save failed") from inner
    except RuntimeError as outer:
        assert ck.write_failure(outer, tmp_path) == full
    # torch.save's stream writer says neither the errno nor the cause: the free space decides
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(ck, "free_bytes", lambda folder: 4096)
    assert ck.write_failure(torch_error, tmp_path) == full
    monkeypatch.setattr(ck, "free_bytes", lambda folder: 10**12)
    cause, code = ck.write_failure(torch_error, tmp_path)
    assert code is None and cause.startswith("write failed ([enforce fail")
    # errors that are not the file system's pass through
    assert ck.write_failure(ValueError("bad value"), tmp_path) is None
    assert ck.write_failure(FileNotFoundError(errno.ENOENT, "gone"), tmp_path) is None


def test_human_bytes_and_the_summary_without_checkpoints(tmp_path: Path) -> None:
    assert [ck.human_bytes(n) for n in (0, 999, 1000, 12_345, 123_456_789, 1_300_000_000)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "12.3 kB",
        "123 MB",
        "1.3 GB",
    ]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\0" * 90_000)
    usage = ck.disk_usage(tmp_path)
    assert usage == {"model_bytes": 90_000, "checkpoints_bytes": 0, "checkpoints": 0}
    assert ck.disk_usage_text(usage) == "model/ 90.0 kB; no checkpoints kept"


def test_onnx_evaluation_keeps_the_pytorch_result(tiny_runs: Any, tmp_path: Path, capsys: Any) -> None:
    from taskhead.cli import main
    from taskhead.workflows.export import export_onnx

    run = shutil.copytree(tiny_runs["classification"], tmp_path / "run")
    export_onnx(run)
    data = write_jsonl(tmp_path / "held-out.jsonl", sentiment_records(1))
    assert main(["evaluate", str(run), str(data)]) == 0
    assert main(["evaluate", str(run), str(data), "--backend", "onnx"]) == 0
    torch_file, onnx_file = run / "evaluate-held-out.json", run / "evaluate-held-out.onnx-fp32.json"
    assert f"metrics written to {onnx_file}" in capsys.readouterr().out
    by_torch, by_onnx = (json.loads(p.read_text()) for p in (torch_file, onnx_file))
    assert by_torch["backend"] == "torch" and "onnx_variant" not in by_torch
    assert by_onnx["backend"] == "onnx" and by_onnx["onnx_variant"] == "fp32"
    assert by_onnx["metrics"]["accuracy"] == by_torch["metrics"]["accuracy"]
    assert by_onnx["data"] == by_torch["data"] == str(data)
