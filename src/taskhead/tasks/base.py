"""The Task protocol: everything task-specific that training, evaluation, prediction and the CLI call.

A task family is one module implementing this protocol plus one line in ``taskhead.tasks.REGISTRY``.
Nothing outside ``tasks/`` branches on the task name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch
    from pydantic import BaseModel

    from taskhead.config import DataConfig, ModelConfig

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
        return [len(f["input_ids"]) for f in self.inputs]


@dataclass
class SplitSummary:
    """What the one-screen data summary shows for one split."""

    name: str
    rows: int
    truncated: int = 0
    windowed: int = 0
    distribution: dict[str, int] = field(default_factory=dict)


LOWER_IS_BETTER = frozenset({"loss", "perplexity", "hamming_loss"})


def directions(*names: str) -> dict[str, bool]:
    """Metric name -> whether a higher value is better (losses, perplexity, Hamming loss: lower)."""
    return {name: name not in LOWER_IS_BETTER for name in names}


class Task(Protocol):
    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    options: Any

    def __init__(self, options: Any, **state: Any) -> None: ...

    @property
    def default_metric(self) -> str:
        """Metric used for best-model selection when the config names none (higher is better)."""
        ...

    def eval_metrics(self, examples: list[Example]) -> dict[str, bool]:
        """The scalar metrics ``score`` reports on these (eval) examples with the task's options, each
        mapped to whether higher is better (``directions``); the loss is added by the caller. Counts
        (tokens, questions) and tuned thresholds are not metrics."""
        ...

    def read(self, path: str | Path, data: DataConfig, *, labelled: bool = True) -> list[Example]:
        """Read and validate one data file. Raises DataError listing every located problem.

        A list of dicts, or a read-only sequence of read-only mappings equal to them
        (``data.examples.ColumnExamples``: classification keeps a large file's examples compact). Callers
        only iterate, index and take ``len``; annotated ``list`` until the callers' annotations follow.
        """
        ...

    def prepare(self, splits: dict[str, list[Example]], data: DataConfig) -> list[str]:
        """Fix the label set from the training data (or the config); check the other splits against it.

        Returns warnings; raises DataError for errors.
        """
        ...

    def to_example(self, record: Any, where: str) -> Example:
        """Turn a Python input (a string, a tuple, a dict) into an unlabelled example."""
        ...

    def encode(self, examples: list[Example], tokenizer: Any, model: ModelConfig) -> Features: ...

    def build_model(self, backbone: str, model: ModelConfig, tokenizer: Any) -> torch.nn.Module: ...

    def save_model(self, model: torch.nn.Module, directory: Path) -> None: ...

    def load_model(self, directory: Path, model: ModelConfig) -> torch.nn.Module: ...

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor: ...

    def decode(
        self, outputs: np.ndarray | list[np.ndarray], features: Features, examples: list[Example]
    ) -> list[dict[str, Any]]:
        """Turn per-feature model outputs (input order) into one prediction per example.

        ``outputs`` is one array ``[features, ...]`` for per-sequence logits, or a list with one
        ``[tokens, ...]`` array per feature (trimmed to the feature's length) for per-token logits.
        """
        ...

    def score(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict[str, Any]:
        """Metrics of predictions against the examples' gold labels (flat floats plus nested reports)."""
        ...

    def fit_on_eval(self, outputs: np.ndarray, features: Features, examples: list[Example]) -> dict[str, Any]:
        """Tune post-processing on the eval set after training (e.g. thresholds); returns what was tuned."""
        ...

    def summarize(self, name: str, examples: list[Example], features: Features | None) -> SplitSummary: ...

    def state(self) -> dict[str, Any]:
        """What taskhead.json stores to rebuild this task: labels, thresholds, ..."""
        ...

    def model_card(self) -> str:
        """Task-specific lines of the model card (Markdown)."""
        ...
