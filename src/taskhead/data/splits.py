"""Reading and checking every data file of a config, before any model is loaded (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskhead.config import RunConfig, load_config
from taskhead.errors import ConfigError, DataError
from taskhead.tasks import build_task
from taskhead.tasks.base import Example, SplitSummary, Task

SPLITS = ("train", "eval", "test")


def read_splits(config: RunConfig, task: Task, *, require_train: bool = True) -> dict[str, list[Example]]:
    """Read every configured split; the problems of all files are reported together."""
    if require_train and config.data.train is None:
        raise ConfigError("data.train: missing; expected the path of the training data file")
    splits: dict[str, list[Example]] = {}
    problems: list[str] = []
    total = 0
    for name in SPLITS:
        path = getattr(config.data, name)
        if path is None:
            continue
        try:
            splits[name] = task.read(path, config.data, labelled=True)
        except DataError as exc:
            problems += exc.problems
            total += exc.total
    if problems:
        raise DataError(problems, total=total)
    return splits


@dataclass
class ValidationReport:
    config: RunConfig
    task: Any
    splits: dict[str, list[Example]]
    warnings: list[str] = field(default_factory=list)

    def summaries(self) -> list[SplitSummary]:
        return [self.task.summarize(name, ex, None) for name, ex in self.splits.items()]


def validate(config: str | Path | dict[str, Any] | RunConfig, overrides: Any = None) -> ValidationReport:
    """Check the config and every data file without loading a model.

    Raises:
        ConfigError / DataError: located, one line per problem.
    """
    cfg = load_config(config, overrides)
    task = build_task(cfg.task)
    splits = read_splits(cfg, task)
    warnings = task.prepare(splits, cfg.data)
    return ValidationReport(cfg, task, splits, warnings)
