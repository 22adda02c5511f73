"""The Task protocol: everything task-specific that training, evaluation, prediction and the CLI call.

A task family is one module implementing this protocol plus one line in ``taskhead.tasks.REGISTRY``.
Nothing outside ``tasks/`` branches on the task name. ``Example``, ``Features`` and ``SplitSummary`` live in
``taskhead.data.types`` and are re-exported here for the tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from taskhead.data.types import Example, Features, SplitSummary

if TYPE_CHECKING:
    import numpy as np
    import torch
    from pydantic import BaseModel

    from taskhead.config import DataConfig, ModelConfig

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
