"""Robust training runs: 2-process data-parallel training (gloo on CPU) and resuming after a SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, sentiment_records, tiny_config, write_jsonl

from taskhead.engine.checkpoints import is_complete, last_complete


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", sentiment_records(4)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", sentiment_records(1)),
    }


def write_config(tmp: Path, name: str, backbone: Path, data: dict, **train: object) -> Path:
    config = tiny_config(backbone, data, tmp / name, train={"learning_rate": 5e-3, **train})
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def taskhead_cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(BIN / "taskhead"), *args], capture_output=True, text=True, timeout=600, env=env, **kwargs
    )


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_two_processes_match_one(tiny_backbone: Path, data: dict, tmp_path: Path) -> None:
    """Global batch 8 either way: one process x 8, or two processes x 4 (gloo)."""
    single = write_config(
        tmp_path, "single", tiny_backbone, data, batch_size=8, epochs=6, group_by_length=False
    )
    double = write_config(
        tmp_path, "double", tiny_backbone, data, batch_size=4, epochs=6, group_by_length=False
    )
    one = taskhead_cli("train", str(single), "--quiet")
    assert one.returncode == 0, one.stderr
    two = taskhead_cli("train", str(double), "--quiet", "--nproc", "2")
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("run directory:") == 1  # only rank 0 reports and writes
    meta = json.loads((tmp_path / "double" / "taskhead.json").read_text())
    assert meta["world_size"] == 2
    a, b = metrics(tmp_path / "single"), metrics(tmp_path / "double")
    steps = [h["step"] for h in b["history"] if "loss" in h]
    assert max(steps) == max(h["step"] for h in a["history"] if "loss" in h)  # same number of optimizer steps
    assert a["eval"]["accuracy"] == pytest.approx(b["eval"]["accuracy"], abs=0.1)
    assert a["eval"]["loss"] == pytest.approx(b["eval"]["loss"], abs=0.05)
    assert a["eval"]["loss"] < 0.69 and b["eval"]["loss"] < 0.69  # both learned something
    assert not list((tmp_path / "double").glob(".write-test*"))


def test_two_processes_gather_in_batch_negatives(tiny_backbone: Path, tmp_path: Path) -> None:
    """mnrl under --nproc 2 scores each anchor against both processes' candidates (an all-gather over
    gloo); the evaluation loss does not gather, so every process evaluates alone without waiting."""
    from test_embedding import pairs

    path = write_jsonl(tmp_path / "pairs.jsonl", pairs())
    config = tiny_config(
        tiny_backbone,
        {"train": path, "eval": path},
        tmp_path / "run",
        task={"name": "embedding", "loss": "mnrl"},
        train={"learning_rate": 5e-3, "batch_size": 4, "epochs": 2},
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    done = taskhead_cli("train", str(tmp_path / "run.yaml"), "--quiet", "--nproc", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "taskhead.json").read_text())["world_size"] == 2
    card = (tmp_path / "run" / "README.md").read_text()
    assert "gather_across_devices=True" in card, card
    assert "mrr" in metrics(tmp_path / "run")["eval"]


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(
    tiny_backbone: Path, data: dict, tmp_path: Path
) -> None:
    settings = {"max_steps": 40, "save_strategy": "steps", "save_steps": 5, "save_total_limit": 2}
    full = write_config(tmp_path, "full", tiny_backbone, data, **settings)
    crash = write_config(tmp_path, "crash", tiny_backbone, data, **settings)
    done = taskhead_cli("train", str(full), "--quiet")
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(BIN / "taskhead"), "train", str(crash), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    first = ".crash.taskhead-tmp-*/checkpoints/checkpoint-5/trainer_state.json"  # trained beside the path
    deadline = time.monotonic() + 300
    while not any(tmp_path.glob(first)):
        assert proc.poll() is None and time.monotonic() < deadline, "no first checkpoint"
        time.sleep(0.02)
    time.sleep(random.Random(0).uniform(0.0, 0.5))  # somewhere after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "crash").exists()  # nothing at the path until the run is complete
    resumed = taskhead_cli("train", str(crash), "--quiet", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(tmp_path.glob(".crash.taskhead-*"))  # the resumed run was swapped in whole
    a, b = metrics(tmp_path / "full"), metrics(tmp_path / "crash")
    assert b["eval"]["loss"] == pytest.approx(a["eval"]["loss"], abs=1e-5)
    assert b["eval"]["accuracy"] == a["eval"]["accuracy"]
    assert a["eval"]["loss"] < 0.69


def test_resume_skips_an_incomplete_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    for step, complete in ((3, True), (6, True), (9, False)):
        c = folder / f"checkpoint-{step}"
        c.mkdir(parents=True)
        (c / "model.safetensors").write_bytes(b"x")
        (c / "optimizer.pt").write_bytes(b"x")
        (c / "scheduler.pt").write_bytes(b"x")
        if complete:
            (c / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-6" / "model.safetensors").unlink()  # deleted half-way by checkpoint rotation
    assert not is_complete(folder / "checkpoint-9") and not is_complete(folder / "checkpoint-6")
    assert last_complete(folder) == folder / "checkpoint-3"
    assert (folder / "checkpoint-9.incomplete").is_dir() and not (folder / "checkpoint-9").exists()


def test_resume_without_checkpoint_is_a_one_line_error(
    tiny_backbone: Path, data: dict, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "none", tiny_backbone, data)
    done = taskhead_cli("train", str(config), "--resume")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--resume: no complete checkpoint" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_unwritable_output_dir_fails_before_training(tiny_backbone: Path, data: dict, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/proc/taskhead-run")  # even root cannot create directories in /proc
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "run"
    config = tiny_config(tiny_backbone, data, target)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = taskhead_cli("train", str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "output_dir is not writable" in done.stderr or "cannot create" in done.stderr
    assert "training on" not in done.stderr
