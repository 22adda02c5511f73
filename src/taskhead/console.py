"""What taskhead tells a person: to standard error, so standard output stays clean for results."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from rich.console import Console
from rich.table import Table

from taskhead.tasks.base import SplitSummary


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
