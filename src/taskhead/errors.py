"""Errors a user can act on: each names where the problem is, what was expected and what was found.

All subclass ``ValueError`` (or ``FileNotFoundError``) so ``except ValueError`` keeps working; the CLI turns
them into one line and exit code 2.
"""

from __future__ import annotations


class TaskheadError(ValueError):
    """Base class of taskhead's user-facing errors."""


class ConfigError(TaskheadError):
    """A problem in the configuration (YAML file or override)."""


class DataError(TaskheadError):
    """One or more problems in a data file. ``problems`` holds every located message."""

    def __init__(self, problems: list[str], *, total: int | None = None) -> None:
        self.problems = list(problems)
        self.total = total if total is not None else len(problems)
        shown = "\n".join(self.problems)
        more = self.total - len(self.problems)
        if more > 0:
            shown += f"\n... and {more} more problem(s) not shown"
        super().__init__(shown)


class BackboneError(TaskheadError):
    """A model name that cannot be resolved to weights on this machine."""


class RunDirError(TaskheadError):
    """A run directory that is missing, incomplete or from an incompatible version."""


def located(path: object, where: str | int | None, field: str | None, message: str) -> str:
    """Format ``file:line: field: message``, leaving out the parts that are unknown."""
    parts = [str(path)]
    if where is not None:
        parts[0] += f":{where}"
    if field:
        parts.append(f"{field}")
    parts.append(message)
    return ": ".join(parts)


class UnsafeWeightsError(RunDirError):
    """A model directory whose weights could only be loaded from pickle files (``*.bin``, ``*.pt``)."""


class ExportError(TaskheadError):
    """A run that cannot be exported, or an ONNX export that is missing, stale or does not match PyTorch."""


class RetrievalError(TaskheadError):
    """A problem with an embedding index or a retrieval request: missing or damaged index files, duplicate
    document ids, a model that cannot embed, a search argument out of range."""


class IndexMismatchError(RetrievalError):
    """A model whose embeddings do not fit an index: another dimension or another normalization."""


class SaveError(TaskheadError, OSError):
    """A checkpoint or run directory that could not be written (full disk, quota, permissions, read-only
    file system); the partial write has been removed and the message says what to do next. Also an
    ``OSError``, which is what it is underneath."""
