"""What taskhead tells a person: to standard error, so standard output stays clean for results."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from rich.console import Console
from rich.table import Table

from taskhead.data.types import SplitSummary


def process_rank() -> int:
    """This process's rank in a multi-process run (torchrun sets RANK); 0 when alone."""
    return int(os.environ.get("RANK", "0"))


def process_count() -> int:
    """How many processes the run has (torchrun and ``--nproc`` set WORLD_SIZE); 1 when alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@cache
def err_console() -> Console:
    # in a multi-process run only rank 0 talks: the other ranks would repeat every line
    return Console(stderr=True, highlight=False, soft_wrap=True, quiet=process_rank() > 0)


def info(message: str) -> None:
    err_console().print(message, markup=False)


def warn(message: str) -> None:
    err_console().print(f"warning: {message}", style="yellow", markup=False)


def summary_table(summaries: list[SplitSummary], max_labels: int = 12, *, encoded: bool = True) -> Table:
    """The one-screen data summary: rows, truncation (once tokenized) and label distribution per split."""
    table = Table(title="Data", title_justify="left")
    columns = (
        ("split", "rows", "truncated", "windowed", "labels (count)")
        if encoded
        else ("split", "rows", "labels (count)")
    )
    for col in columns:
        table.add_column(col, justify="left" if col in ("split", "labels (count)") else "right")
    for s in summaries:
        items = list(s.distribution.items())
        shown = ", ".join(f"{k} {v}" for k, v in items[:max_labels])
        if len(items) > max_labels:
            shown += f", ... ({len(items) - max_labels} more)"
        counts = (str(s.truncated), str(s.windowed)) if encoded else ()
        table.add_row(s.name, str(s.rows), *counts, shown)
    return table


def print_table(table: Any, *, stdout: bool = False) -> None:
    (Console(highlight=False, quiet=process_rank() > 0) if stdout else err_console()).print(table)


# ---------------------------------------------------------------- what training did


def schedule_text(cfg: Any) -> str:
    """The planned length of training, as the console states it before training."""
    if cfg.train.max_steps is not None:
        return f"at most {cfg.train.max_steps} optimizer steps (train.max_steps; train.epochs is not used)"
    return f"{cfg.train.epochs:g} epoch(s)"


def trained_text(trained: dict[str, Any], cfg: Any) -> str:
    """What training did: optimizer steps and the epochs they amount to (0.6 with a short max_steps)."""
    text = f"trained {trained['steps']} optimizer steps = {trained['epochs_trained']:.4g} epoch(s)"
    if cfg.train.max_steps is not None:
        text += f" (train.max_steps={cfg.train.max_steps})"
    return text


def weights_text(weights: dict[str, Any]) -> str:
    """Which weights became ``model/``: the best checkpoint by the metric, or the last step's and why."""
    if weights["chosen"] == "best":
        direction = "higher" if weights["greater_is_better"] else "lower"
        return (
            f"model/: the best checkpoint by {weights['metric']} ({direction} is better): "
            f"{weights['value']:.4f} at step {weights['step']}"
        )
    return (
        f"model/: the weights after the last step ({weights['step']}); no best-checkpoint pick: "
        f"{weights['why']}"
    )


def tuned_text(metrics: dict[str, Any]) -> str:
    """That values tuned on the eval split (thresholds) make its metrics optimistic; where they are tested."""
    tuned = ", ".join(k for k in metrics["tuned_on_eval"] if k != "note")
    text = (
        f"{tuned} tuned on the eval split: the eval metrics above are on that same split (optimistic; "
        f"metrics.json keeps eval_before_tuning)"
    )
    if "test" in metrics:
        return text + "; the test metrics use the tuned values on held-out data"
    return text + "; there is no test split to measure the tuned values on held-out data (data.test)"
