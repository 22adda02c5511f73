"""Plain data types shared by the data readers, the tasks, the workflows and the console.

They live in ``data/`` (the lowest layer that knows about examples) so that ``data/`` and ``console`` never
import ``tasks/``; ``taskhead.tasks.base`` re-exports them for the tasks. The rows of data files (``Row``,
``Table``, ``TableStream``) are ``taskhead.data.rows``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Example = dict[str, Any]
"""One validated input record: task fields plus ``id`` (optional) and ``_where`` (``file:line``)."""


@dataclass
class Features:
    """Model inputs for a list of examples. One example may give several features (sliding windows)."""

    inputs: list[dict[str, Any]]  # input_ids, attention_mask, ... and `labels` when labelled
    example_index: list[int]  # for each feature, the index of the example it came from
    truncated: int = 0  # examples whose text did not fit in max_length
    windowed: int = 0  # examples split into several windows
    lost: int = 0  # labelled examples whose target no feature holds (an answer that fits in no window)
    meta: list[Any] = field(default_factory=list)  # per feature, task data the model does not see (or empty)

    def lengths(self) -> list[int]:
        """Tokens per feature (``len(input_ids)``), in feature order."""
        return [len(f["input_ids"]) for f in self.inputs]


@dataclass
class SplitSummary:
    """What the one-screen data summary shows for one split."""

    name: str
    rows: int
    truncated: int = 0
    windowed: int = 0
    distribution: dict[str, int] = field(default_factory=dict)
