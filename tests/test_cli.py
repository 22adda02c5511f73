"""The installed ``taskhead`` command, run in a subprocess as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import run_cli, sentiment_records, tiny_config, write_jsonl


def test_help_and_validate_do_not_import_torch(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "classification",
                "data": {"train": str(write_jsonl(tmp_path / "t.jsonl", sentiment_records(1)))},
            }
        )
    )
    code = (
        "import sys; from taskhead.cli import main\n"
        "for argv in (['--help'], ['validate', sys.argv[1]], ['config', 'keys']):\n"
        "    try: main(argv)\n"
        "    except SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "import taskhead; assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_train_evaluate_predict_round_trip(tiny_backbone: Path, tmp_path: Path) -> None:
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", sentiment_records(2)),
        "eval": write_jsonl(tmp_path / "eval.jsonl", sentiment_records(1)),
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_backbone, data, tmp_path / "run")))

    result = run_cli("validate", str(config))
    assert result.returncode == 0, result.stderr
    assert "OK (task classification, 60 records)" in result.stderr

    result = run_cli("train", str(config), "--quiet", "train.epochs=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"run directory: {tmp_path / 'run'}"  # logs go to stderr
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text())["eval"]["accuracy"] >= 0.0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2.0

    result = run_cli("evaluate", str(run), str(data["eval"]))
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    assert json.loads((run / "evaluate-eval.json").read_text())["metrics"]["accuracy"] >= 0.0

    inputs = tmp_path / "in.jsonl"
    write_jsonl(inputs, [{"id": "b", "text": "bad movie"}, {"text": "good film"}, {"id": 7, "text": "sad"}])
    result = run_cli("predict", str(run), str(inputs), "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr
    preds = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [p.get("id") for p in preds] == ["b", None, 7]
    assert all(p["label"] in {"pos", "neg"} and set(p["scores"]) == {"pos", "neg"} for p in preds)

    result = run_cli("predict", str(run), "-", stdin="good movie\nawful plot\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2

    (tmp_path / "in.csv").write_text('id,text\nc1,good\nc2,"bad, awful"\n')
    result = run_cli("predict", str(run), str(tmp_path / "in.csv"))
    assert [json.loads(x)["id"] for x in result.stdout.splitlines()] == ["c1", "c2"]

    result = run_cli("train", str(config), "--quiet")
    assert result.returncode == 2
    assert "already holds a finished run; pass --overwrite" in result.stderr


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "ok", "label": "a"}, {"text": "", "label": "b"}])
    config = tmp_path / "config.yaml"
    config.write_text(f"task: classification\ndata:\n  train: {train}\ntrain:\n  epohcs: 1\n")
    result = run_cli("validate", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {config}:5: train.epohcs: unknown key (did you mean epochs?)"

    config.write_text(f"task: classification\ndata:\n  train: {train}\n")
    for command in ("validate", "train"):
        result = run_cli(command, str(config))
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"error: {train}:2: text: empty text; expected a non-empty string"
        assert "Traceback" not in result.stderr

    result = run_cli("--debug", "validate", str(config))
    assert result.returncode != 0 and "Traceback" in result.stderr

    result = run_cli("predict", str(tmp_path / "no-run"), "-", stdin="x\n")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'no-run'}: run directory not found"


def test_unreachable_hub_id_says_to_pass_a_local_path(tmp_path: Path) -> None:
    from taskhead.engine.backbones import resolve_backbone
    from taskhead.errors import BackboneError

    try:
        resolve_backbone("nobody-here/not-a-model-xyz")
    except BackboneError as exc:
        assert "pass a local path (model.backbone=/path/to/model)" in str(exc)
    else:  # pragma: no cover - only where the hub is reachable and the repo exists
        raise AssertionError("expected a BackboneError")
