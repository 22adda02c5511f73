"""The run directory: the contract between training and everything after it.

```
RUN/model/  RUN/taskhead.json  RUN/config.yaml  RUN/metrics.json  RUN/README.md  RUN/checkpoints/
```
Every file is written to a temporary name and renamed. ``taskhead.json`` is written last, so a directory
without it is an unfinished run and is never loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from taskhead.errors import RunDirError

META_FILE = "taskhead.json"
FORMAT_VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def replace_dir(target: Path, fill: Any) -> None:
    """Build a directory under a temporary name with ``fill(tmp_dir)`` and swap it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_meta(run_dir: Path) -> dict[str, Any]:
    meta_path = run_dir / META_FILE
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    if not meta_path.is_file():
        hint = (
            " (training did not finish; resume it with taskhead train CONFIG --resume)"
            if (run_dir / "checkpoints").is_dir()
            else ""
        )
        raise RunDirError(f"{run_dir}: not a finished taskhead run: {META_FILE} is missing{hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{meta_path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise RunDirError(f"{meta_path}: malformed: JSON nested too deeply") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise RunDirError(
            f"{meta_path}: written by a newer taskhead (format {meta['format_version']}); upgrade"
        )
    return meta


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("taskhead", "torch", "transformers", "accelerate", "tokenizers", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _trained_lines(meta: dict[str, Any], train: dict[str, Any]) -> list[str]:
    """The model card's lines on what was trained and which weights ``model/`` holds."""
    planned = f"max_steps {train['max_steps']}" if train.get("max_steps") else f"{train['epochs']} epochs"
    trained = meta.get("trained")
    if not trained:  # a run written before these were recorded
        return [f"- planned: {planned}"]
    lines = [
        f"- trained {trained['steps']} optimizer steps = {trained['epochs_trained']:.4g} epochs "
        f"(planned: {planned})"
    ]
    weights = meta.get("model_weights") or {}
    if weights.get("chosen") == "best":
        direction = "higher" if weights["greater_is_better"] else "lower"
        lines.append(
            f"- model/: the best checkpoint by {weights['metric']} ({direction} is better), "
            f"{weights['value']:.4f} at step {weights['step']}"
        )
    elif weights:
        lines.append(f"- model/: the weights after the last step ({weights['step']}): {weights['why']}")
    return lines


DEFAULT_EXAMPLE_INPUT = '["some text"]'


def model_card(
    meta: dict[str, Any], metrics: dict[str, Any], task_lines: str, example_input: str | None = None
) -> str:
    """A short Markdown model card: what, how, how well, with which versions, and how to use it.

    ``RUN_DIR`` in ``task_lines`` (the task's snippets) becomes the run directory; ``example_input`` is the
    Python literal the "Use" snippet predicts for (default ``["some text"]``)."""
    from taskhead.evaluation import scalar_metrics

    cfg = meta["config"]
    train = cfg["train"]
    lines = [
        f"# {Path(meta['run_dir']).name}",
        "",
        f"Fine-tuned with taskhead {meta['versions'].get('taskhead', '?')} from the backbone "
        f"`{cfg['model']['backbone']}`.",
        "",
        "## Task",
        task_lines.replace("RUN_DIR", str(meta["run_dir"])),
        "",
        "## Data",
        *[
            f"- {split}: `{path}` ({meta['rows'].get(split, '?')} rows)"
            for split, path in (
                ("train", cfg["data"]["train"]),
                ("eval", cfg["data"]["eval"]),
                ("test", cfg["data"]["test"]),
            )
            if path
        ],
        "",
        "## Training",
        *_trained_lines(meta, train),
        f"- batch size {train['batch_size']} x gradient accumulation {train['gradient_accumulation_steps']}, "
        f"learning rate {train['learning_rate']}, "
        f"warm-up {train['warmup_ratio']}, weight decay {train['weight_decay']}, seed {train['seed']}",
        f"- max_length {cfg['model']['max_length']}, pooling {cfg['model']['pooling']}, "
        f"precision {meta.get('precision', 'fp32')}, device {meta.get('device', '?')}",
        "",
        "## Metrics",
    ]
    tuned = metrics.get("tuned_on_eval")
    for split in ("eval", "test"):
        if split in metrics:
            flat = scalar_metrics(metrics[split])
            where = (
                " (on the split the tuned values below were tuned on)" if tuned and split == "eval" else ""
            )
            lines.append(f"- {split}{where}: " + ", ".join(f"{k} {v:.4f}" for k, v in flat.items()))
    if tuned:
        values = ", ".join(f"{k} {v}" for k, v in tuned.items() if k != "note")
        test = (
            "the test metrics use them" if "test" in metrics else "there was no test split to score them on"
        )
        lines.append(f"- tuned on the eval split: {values}; {test}")
    lines += [
        "",
        "## Use",
        "```python",
        "import taskhead",
        "",
        f"predictor = taskhead.load({str(meta['run_dir'])!r})",
        f"print(predictor.predict({example_input or DEFAULT_EXAMPLE_INPUT}))",
        "```",
        "",
    ]
    lines += ["## Versions", *[f"- {k} {v}" for k, v in meta["versions"].items()], ""]
    return "\n".join(lines)
