"""The model card of a run directory (``README.md``): what was trained, on which data, how, how well, how to
use it and with which library versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
        *_metric_lines(metrics),
        "",
        "## Use",
        "```python",
        "import taskhead",
        "",
        f"predictor = taskhead.load({str(meta['run_dir'])!r})",
        f"print(predictor.predict({example_input or DEFAULT_EXAMPLE_INPUT}))",
        "```",
        "",
        "## Versions",
        *[f"- {k} {v}" for k, v in meta["versions"].items()],
        "",
    ]
    return "\n".join(lines)


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    """The scalar metrics of the eval and test splits, and what was tuned on the eval split."""
    from taskhead.evaluation import scalar_metrics

    lines = []
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
    return lines
