"""Nothing the user wrote is lost (issue 15): taskhead replaces only its own folders, an --overwrite is
atomic (the old run, index or export stays complete and loadable until the new one is complete), what a
killed command leaves is cleaned by the next writer, and outputs respect the umask."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BIN, run_cli, tiny_config, write_jsonl

import taskhead
from taskhead.errors import ExportError, RetrievalError, RunDirError, SaveError
from taskhead.workflows import files, outputs, rundir
from taskhead.workflows import train as training

SRC = Path(taskhead.__file__).resolve().parents[1]


def _siblings(path: Path) -> list[str]:
    """What taskhead left beside ``path``: its temporary, staging and lock names."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.taskhead-"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_folder(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("# my own config\n")
    (folder / "README.md").write_text("# my project\n")
    (folder / "notes").mkdir()
    (folder / "notes" / "ideas.txt").write_text("keep me\n")
    return _snapshot(folder)


# ---------------------------------------------------------------------------- folders taskhead did not write


@pytest.mark.parametrize("overwrite", [False, True])
def test_train_refuses_a_folder_taskhead_did_not_write(
    tiny_backbone: Path, sentiment_data: dict[str, Path], tmp_path: Path, overwrite: bool
) -> None:
    project = tmp_path / "project"
    before = _user_folder(project)
    cfg = tiny_config(tiny_backbone, sentiment_data, project)
    with pytest.raises(RunDirError, match=r"is not a taskhead run \(it holds README.md, config.yaml, notes"):
        taskhead.train(cfg, quiet=True, overwrite=overwrite)
    assert _snapshot(project) == before
    assert _siblings(project) == []


def test_cli_output_dir_dot_never_touches_the_project(
    tiny_backbone: Path, sentiment_data: dict[str, Path], tmp_path: Path
) -> None:
    """The issue's example: `output_dir: .` beside the user's own config and README."""
    project = tmp_path / "project"
    project.mkdir()
    cfg = tiny_config(tiny_backbone, sentiment_data, Path("."))
    cfg["output_dir"] = "."
    (project / "config.yaml").write_text(json.dumps(cfg))
    (project / "README.md").write_text("# mine\n")
    before = _snapshot(project)
    result = run_cli("train", "config.yaml", "--overwrite", cwd=project)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a taskhead run" in lines[0] and "Traceback" not in result.stderr
    assert _snapshot(project) == before


def test_a_finished_run_with_a_file_of_the_user_is_not_replaced(
    tiny_backbone: Path, sentiment_data: dict[str, Path], tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_backbone, sentiment_data, tmp_path / "run")
    taskhead.train(cfg, quiet=True)
    (tmp_path / "run" / "my-analysis.ipynb").write_text("{}")
    with pytest.raises(RunDirError, match=r"it holds my-analysis\.ipynb"):
        taskhead.train(cfg, quiet=True, overwrite=True)
    assert (tmp_path / "run" / "my-analysis.ipynb").read_text() == "{}"
    taskhead.load(tmp_path / "run")  # still the complete old run


def test_a_run_folder_left_with_an_empty_checkpoints_folder_may_be_replaced(tmp_path: Path) -> None:
    """A first checkpoint that failed leaves ``checkpoints/`` empty: taskhead's own, replaceable; the same
    folder beside a file of the user's is not."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    outputs.check_replaceable(tmp_path / "run", rundir.RUN, "output_dir")
    (tmp_path / "run" / "config.yaml").write_text("mine")
    with pytest.raises(RunDirError, match=r"it holds config\.yaml, which"):
        outputs.check_replaceable(tmp_path / "run", rundir.RUN, "output_dir")


def test_index_and_export_refuse_a_folder_they_did_not_write(
    tiny_sentence_model: Path, tiny_runs: object, tmp_path: Path
) -> None:
    from taskhead.retrieval.index import Index
    from taskhead.workflows.export import export_onnx

    folder = tmp_path / "documents"
    before = _user_folder(folder)
    index = Index.build(
        tiny_sentence_model, [{"id": "a", "text": "good movie"}, {"id": "b", "text": "bad film"}]
    )
    with pytest.raises(RetrievalError, match=r"is not a taskhead index \(it holds README.md"):
        index.save(folder)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": "a", "text": "good movie"}])
    result = run_cli(
        "index", "build", str(tiny_sentence_model), str(corpus), "--out", str(folder), "--overwrite"
    )
    assert result.returncode == 2 and "is not a taskhead index" in result.stderr, result.stderr
    with pytest.raises(ExportError, match="is not a taskhead export"):
        export_onnx(tiny_runs["classification"], out=folder)  # type: ignore[index]
    assert _snapshot(folder) == before
    assert _siblings(folder) == []


# ------------------------------------------------------------------------------------------- atomic overwrite


def test_overwrite_keeps_the_old_run_loadable_until_the_new_one_is_complete(
    tiny_backbone: Path, sentiment_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_config(
        tiny_backbone, sentiment_data, run_dir, train={"save_strategy": "epoch", "eval_strategy": "epoch"}
    )
    taskhead.train(cfg, quiet=True)
    old = _snapshot(run_dir)
    old_predictions = taskhead.load(run_dir).predict(["good movie", "bad film"])
    real_write_run = training._write_run
    seen: dict[str, object] = {}

    def write_then_fail(work_dir: Path, *args: object, **kwargs: object) -> None:
        assert work_dir != run_dir  # the new run is written beside the old one
        seen["during"] = taskhead.load(run_dir).predict(["good movie", "bad film"])
        real_write_run(work_dir, *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training, "_write_run", write_then_fail)
    with pytest.raises(SaveError, match=r"no space left on device while saving the run directory"):
        taskhead.train(cfg, quiet=True, overwrite=True, train={"seed": 7})
    assert seen["during"] == old_predictions
    assert _snapshot(run_dir) == old  # a failed overwrite leaves the old run as it was
    lock, kept = _siblings(run_dir)  # the new one's checkpoints beside it, for --resume (its lock unheld)
    assert lock == kept.replace("-tmp-", "-lock-") and (tmp_path / kept / "checkpoints").is_dir()
    monkeypatch.setattr(training, "_write_run", real_write_run)

    taskhead.train(cfg, quiet=True, overwrite=True, train={"seed": 7})
    meta = json.loads((run_dir / "taskhead.json").read_text())
    assert meta["config"]["train"]["seed"] == 7 and meta["run_dir"] == str(run_dir)
    assert (
        meta["best_checkpoint"].startswith(str(run_dir / "checkpoints"))
        and Path(meta["best_checkpoint"]).is_dir()
    )
    assert str(run_dir) in (run_dir / "README.md").read_text()
    assert _siblings(run_dir) == []


KILL_LOOP = """
import sys
from pathlib import Path
from taskhead.workflows import outputs
if sys.argv[2] == "fallback":
    outputs._exchange = lambda a, b: False
target, i = Path(sys.argv[1]), 0
while True:
    i += 1
    def fill(d, i=i):
        for k in range(30):
            (d / f"part{k}").write_text(str(i) * 2000)
        (d / "complete").write_text(str(i))
    outputs.replace_dir(target, fill)
"""


@pytest.mark.parametrize("swap", ["exchange", "fallback"])
def test_replace_dir_killed_at_random_instants_leaves_the_old_or_the_new_folder(
    tmp_path: Path, swap: str
) -> None:
    """kill -9 at 12 random instants of a loop that replaces a folder: the path always holds one complete
    version (after the reader's ``recover``), and the next writer removes every leftover."""
    target = tmp_path / "index"
    target.mkdir()
    for k in range(30):
        (target / f"part{k}").write_text("0" * 2000)
    (target / "complete").write_text("0")
    rng = random.Random(15)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", KILL_LOOP, str(target), swap], env=env)
        time.sleep(0.6 + rng.random() * 0.4)  # past the interpreter's start, inside the loop
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outputs.recover(target)  # what every reader does first
        version = (target / "complete").read_text()
        assert {(target / f"part{k}").read_text() for k in range(30)} == {version * 2000}
        outputs.clean_leftovers(target)
        assert _siblings(target) == []


def test_fallback_swap_killed_between_its_renames_is_put_back_by_the_next_reader(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    new = tmp_path / ".run.taskhead-new-999999999"  # complete, about to be moved in; its process is gone
    old = tmp_path / ".run.taskhead-old-999999999"
    for folder, label in ((new, "new"), (old, "old")):
        folder.mkdir()
        (folder / "taskhead.json").write_text(json.dumps({"format_version": 1, "label": label}))
    assert rundir.read_meta(run_dir)["label"] == "new"
    assert (tmp_path / ".run.taskhead-old-999999999").is_dir()  # readers report, writers remove
    assert [p.name for p in outputs.clean_leftovers(run_dir)] == [".run.taskhead-old-999999999"]
    assert _siblings(run_dir) == []


def test_a_live_writers_staging_folder_is_never_removed(tmp_path: Path) -> None:
    target = tmp_path / "run"
    staging = outputs.Staging(target)  # this process holds its lock
    (staging.path / "weights").write_text("being written")
    assert outputs.clean_leftovers(target) == []
    assert (staging.path / "weights").is_file()
    staging.discard()
    assert _siblings(target) == []


def _cli_killed_when(args: list[str], base: Path, appears: str, delay: float) -> None:
    """Run the CLI; kill -9 it ``delay`` seconds after a path matching the glob ``appears`` is in ``base``."""
    proc = subprocess.Popen(
        [str(BIN / "taskhead"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if any(base.glob(appears)):
            time.sleep(delay)
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_train_and_index_overwrite_killed_at_random_points(
    tiny_backbone: Path, tiny_sentence_model: Path, sentiment_data: dict[str, Path], tmp_path: Path
) -> None:
    """`taskhead train --overwrite` and `taskhead index build --overwrite` killed while the new result is
    trained or written (a random instant after the staging folder appears, and right as its model lands): the
    path holds the old or the new result, loadable, and the next writer removes the leftovers."""
    from taskhead.retrieval.index import Index

    rng = random.Random(42)
    run_dir = tmp_path / "run"
    cfg = tiny_config(tiny_backbone, sentiment_data, run_dir)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "train": {**cfg["train"], "seed": 7}}))
    taskhead.train(cfg, quiet=True)  # the old run: seed 42
    overwrite = ["train", str(tmp_path / "config.json"), "--overwrite", "--quiet"]
    for appears, delay in ((".run.taskhead-tmp-*", rng.random()), (".run.taskhead-tmp-*/model/*", 0.0)):
        _cli_killed_when(overwrite, tmp_path, appears, delay)
        seed = json.loads((run_dir / "taskhead.json").read_text())["config"]["train"]["seed"]
        assert seed in (42, 7)  # the old run or the new one, complete:
        assert len(taskhead.load(run_dir).predict(["good movie"])) == 1
    taskhead.train(cfg, quiet=True, overwrite=True)  # the next writer removes what the kills left
    assert _siblings(run_dir) == []

    docs = [{"id": str(i), "text": f"doc {i} good movie"} for i in range(300)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "index"
    Index.build(tiny_sentence_model, docs[:10]).save(out)
    build = [
        "index",
        "build",
        str(tiny_sentence_model),
        str(corpus),
        "--out",
        str(out),
        "--quiet",
        "--overwrite",
    ]
    _cli_killed_when(build, tmp_path, ".index.taskhead-tmp-*", rng.random() * 0.05)
    assert len(Index.load(out)) in (10, 300)
    Index.build(tiny_sentence_model, docs).save(out)
    assert len(Index.load(out)) == 300 and _siblings(out) == []


def test_export_killed_while_writing_leaves_the_old_export(tiny_runs: object, tmp_path: Path) -> None:
    from taskhead.engine.onnx import load_onnx_model
    from taskhead.workflows.export import export_onnx

    run = tiny_runs["classification"]  # type: ignore[index]
    out = tmp_path / "onnx"
    export_onnx(run, out=out)
    command = ["export", str(run), "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    _cli_killed_when(command, tmp_path, ".onnx.taskhead-tmp-*/model.onnx", random.Random(3).random() * 0.5)
    assert json.loads((out / "export.json").read_text())["variants"].keys() in ({"fp32"}, {"fp32", "int8"})
    load_onnx_model(run, onnx_dir=out)
    export_onnx(run, out=out)
    assert _siblings(out) == []


# ------------------------------------------------------------------------------------------------------ umask


def test_outputs_respect_the_umask(tmp_path: Path) -> None:
    before = os.umask(0o027)
    try:
        files.atomic_write_text(tmp_path / "predictions.jsonl", "{}\n")
        outputs.replace_dir(tmp_path / "index", lambda d: (d / "vectors.npy").write_bytes(b"x"))
        staging = outputs.Staging(tmp_path / "run")
        staging.commit()
    finally:
        os.umask(before)
    assert (tmp_path / "predictions.jsonl").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "index").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o750
    (tmp_path / "predictions.jsonl").chmod(0o604)  # a mode the user chose survives a rewrite
    files.atomic_write_text(tmp_path / "predictions.jsonl", "[]\n")
    assert (tmp_path / "predictions.jsonl").stat().st_mode & 0o777 == 0o604


def test_a_trained_run_is_readable_by_the_group_under_umask_022(
    tiny_backbone: Path, sentiment_data: dict[str, Path], tmp_path: Path
) -> None:
    before = os.umask(0o022)
    try:
        taskhead.train(tiny_config(tiny_backbone, sentiment_data, tmp_path / "run"), quiet=True)
    finally:
        os.umask(before)
    for path in [tmp_path / "run", *(tmp_path / "run").rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o044 == 0o044, f"{path}: {oct(mode)}"


# ------------------------------------------------------------------ paths as users write them (adversary)


def test_output_dir_with_dots_or_through_a_symlink_is_the_folder_it_names(
    tiny_backbone: Path, sentiment_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "runs" / "a"
    cfg = tiny_config(tiny_backbone, sentiment_data, run_dir)
    taskhead.train(cfg, quiet=True)
    # `runs/a/model/..` is runs/a: an ordinary --overwrite, nothing left inside model/
    taskhead.train(cfg, quiet=True, overwrite=True, output_dir=str(run_dir / "model" / ".."))
    assert not [p for p in (run_dir / "model").iterdir() if "taskhead-" in p.name]
    assert _siblings(run_dir) == []
    # a symlink to an empty folder on "another disk" is that folder; a symlink to a run is that run
    (tmp_path / "big" / "empty").mkdir(parents=True)
    (tmp_path / "runs" / "elink").symlink_to(tmp_path / "big" / "empty")
    taskhead.train(cfg, quiet=True, output_dir=str(tmp_path / "runs" / "elink"))
    assert (tmp_path / "big" / "empty" / "taskhead.json").is_file()
    (tmp_path / "runs" / "link").symlink_to(run_dir)
    taskhead.train(
        cfg, quiet=True, overwrite=True, output_dir=str(tmp_path / "runs" / "link"), train={"seed": 3}
    )
    assert (tmp_path / "runs" / "link").is_symlink()
    assert json.loads((run_dir / "taskhead.json").read_text())["config"]["train"]["seed"] == 3
    # `output_dir: .` from inside the run: refused before training (the swap would move the folder away)
    monkeypatch.chdir(run_dir)
    with pytest.raises(RunDirError, match=r"output_dir \.: holds your current folder"):
        taskhead.train(cfg, quiet=True, overwrite=True, output_dir=".")
    # an empty current folder is a fine place for an index
    (tmp_path / "ix").mkdir()
    monkeypatch.chdir(tmp_path / "ix")
    outputs.replace_dir(Path("."), lambda d: (d / "index.json").write_text("{}"))
    assert (tmp_path / "ix" / "index.json").is_file()


def test_overwrite_refuses_files_the_user_added_inside_model_and_checkpoints(
    tiny_backbone: Path, sentiment_data: dict[str, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_config(tiny_backbone, sentiment_data, run_dir)
    taskhead.train(cfg, quiet=True)
    assert "model/model.safetensors" in json.loads((run_dir / "taskhead.json").read_text())["files"]
    outputs.check_replaceable(run_dir, rundir.RUN, "output_dir")  # as written: replaceable
    (run_dir / "model" / "NOTES.md").write_text("my edits")
    with pytest.raises(RunDirError, match=r"it holds model/NOTES\.md, which"):
        taskhead.train(cfg, quiet=True, overwrite=True)
    (run_dir / "model" / "NOTES.md").unlink()
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "loss.png").write_text("plot")
    with pytest.raises(RunDirError, match=r"it holds checkpoints/loss\.png, which"):
        taskhead.train(cfg, quiet=True, overwrite=True)
    assert (run_dir / "checkpoints" / "loss.png").read_text() == "plot"


def test_an_output_file_is_never_an_input_nor_a_folder(
    tiny_runs: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskhead.cli import main

    run = str(tiny_runs["classification"])  # type: ignore[index]
    texts = tmp_path / "in.txt"
    texts.write_text("good movie\nbad film\n")
    (tmp_path / "alias.txt").symlink_to(texts)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": "a", "text": "good movie"}])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": "good movie", "positive": "great film"}])
    cases = [
        (["predict", run, str(texts), "-o", str(texts)], "is the input file"),
        (["predict", run, str(texts), "-o", str(tmp_path / "alias.txt")], "is the input file"),
        (["predict", run, str(texts), "-o", str(tmp_path / "sub" / ".." / "in.txt")], "is the input file"),
        (["evaluate", run, str(corpus), "--output", str(corpus)], "is the input file"),
        (["mine", str(pairs), str(corpus), "--model", run, "--out", str(corpus)], "is the input file"),
        (["search", run, "--queries", str(texts), "--output", str(texts)], "is the input file"),
        (["predict", run, str(texts), "-o", str(tmp_path)], "is a folder; give a file name"),
    ]
    capsys.readouterr()  # what building the fixture printed
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (argv, err)
    assert texts.read_text() == "good movie\nbad film\n"
    assert json.loads(corpus.read_text()) == {"id": "a", "text": "good movie"}
    assert main(["predict", run, str(texts), "-o", str(tmp_path / "alias.txt")]) == 2
    target = tmp_path / "out.jsonl"
    (tmp_path / "out-link.jsonl").symlink_to(target)
    assert main(["predict", run, str(texts), "-o", str(tmp_path / "out-link.jsonl")]) == 0
    assert (tmp_path / "out-link.jsonl").is_symlink() and len(target.read_text().splitlines()) == 2


def test_a_run_swapped_while_it_loads_is_loaded_again_whole(
    tiny_runs: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`predict` racing an --overwrite: taskhead.json and model/ always come from one folder."""
    import shutil

    from taskhead.engine import backbones

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["classification"], run)  # type: ignore[index]
    new = tmp_path / ".run.taskhead-tmp-1"
    shutil.copytree(run, new)
    for path in (new / "taskhead.json", new / "model" / "config.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "marker": "new"}))
    real_check = backbones.check_safetensors
    swaps = []

    def swap_once(model_dir: Path, **kwargs: object) -> None:  # between taskhead.json and model/
        if not swaps:
            swaps.append(
                outputs._exchange(new, run) or os.replace(run, tmp_path / "gone") or os.replace(new, run)
            )
        real_check(model_dir, **kwargs)

    monkeypatch.setattr(backbones, "check_safetensors", swap_once)
    predictor = taskhead.load(run)
    assert swaps and predictor.meta.get("marker") == "new"
    assert getattr(predictor.model.config, "marker", None) == "new"


def test_a_second_training_into_the_same_folder_stops_at_once(
    tiny_backbone: Path, sentiment_data: dict[str, Path], tmp_path: Path
) -> None:
    """Two `train` into one output_dir: the second stops before any work (it would replace the first run)."""
    run_dir = tmp_path / "run"
    first = outputs.WriterLock(run_dir)  # what the first training holds from its checks to its swap
    try:
        with pytest.raises(RunDirError, match=r"another taskhead command is writing it"):
            taskhead.train(tiny_config(tiny_backbone, sentiment_data, run_dir), quiet=True)
        assert not run_dir.exists()
    finally:
        first.release()
    assert _siblings(run_dir) == []
