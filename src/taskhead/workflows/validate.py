"""Reading and checking every data file of a config, before any model is loaded (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskhead.config import RunConfig, load_config, selection_metric
from taskhead.data.types import Example, SplitSummary
from taskhead.errors import ConfigError, DataError
from taskhead.tasks import build_task
from taskhead.tasks.base import Task

SPLITS = ("train", "eval", "test")


def read_splits(config: RunConfig, task: Task, *, require_train: bool = True) -> dict[str, list[Example]]:
    """Read every configured split; the problems of all files are reported together."""
    if require_train and config.data.train is None:
        raise ConfigError("data.train: missing; expected the path of the training data file")
    from tqdm.auto import tqdm

    splits: dict[str, list[Example]] = {}
    problems: list[str] = []
    total = 0
    named = [(name, getattr(config.data, name)) for name in SPLITS if getattr(config.data, name) is not None]
    with tqdm(total=len(named), desc="reading", unit="file", leave=False, disable=None) as bar:
        for name, path in named:
            bar.set_postfix_str(Path(path).name)
            try:
                splits[name] = task.read(path, config.data, labelled=True)
            except DataError as exc:
                problems += exc.problems
                total += exc.total
            bar.update(1)
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
    selection_metric(cfg, task, splits.get("eval") or splits["train"])  # train.metric: a reported one
    return ValidationReport(cfg, task, splits, warnings)
