"""The Task protocol, the traits a task declares, and the base class every task subclasses.

A task family is one module with a ``TaskBase`` subclass (the ``Task`` pipeline methods, its ``traits``
and the hooks it needs) plus one line in ``taskhead.tasks.REGISTRY``. Nothing outside ``tasks/`` branches
on the task name or probes a task for attributes. ``Example``, ``Features`` and
``SplitSummary`` live in ``taskhead.data.types`` and are re-exported here for the tasks.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


TRUNCATED_MESSAGE = "{n} of {total} examples are longer than model.max_length={max_length} and were truncated"
LOST_MESSAGE = "{n} of {total} examples have a target that no encoded feature holds"


@dataclass(frozen=True)
class TaskTraits:
    """What a task family declares about itself (``traits: ClassVar[TaskTraits]``), read by training,
    prediction and the config checks instead of probing the task for attributes. The defaults fit a
    task that tokenizes whole texts, has its loss computed by ``Task.loss`` and tunes nothing.

    Facts that depend on the run rather than on the task family (whether the loss shifts labels, which
    the model decides) are ``TaskBase`` properties, not traits.
    """

    packing: bool = False
    """Trains on packed rows (``engine.packing``) by default where the model supports it."""
    group_by_length: bool = True
    """Default of ``train.group_by_length`` when the config leaves it unset."""
    pretokenized: bool = False
    """Input is words, not text: byte-level BPE tokenizers are loaded with ``add_prefix_space``."""
    sequence_labels: bool = False
    """Labels are token sequences of their own length (seq2seq targets): the collator pads them."""
    model_computes_loss: bool = False
    """The model's forward returns the training loss; else the Trainer calls ``Task.loss`` on the logits."""
    reports_perplexity: bool = False
    """Labelled evaluation reports ``perplexity`` (exp of the mean loss) next to the loss."""
    fits_on_eval: bool = False
    """The task tunes post-processing on the eval split after training (``TaskBase.fit_on_eval``)."""
    example_input: str | None = None
    """The model card's example input (a Python literal) where it does not depend on the run."""
    truncated_message: str = TRUNCATED_MESSAGE
    """The training warning for ``Features.truncated`` (fields ``{n}``, ``{total}``, ``{max_length}``)."""
    lost_message: str = LOST_MESSAGE
    """The training warning for ``Features.lost`` (same fields)."""


class Task(Protocol):
    """The pipeline every task family writes: input -> features -> model -> predictions -> metrics.

    Everything else the workflows call has a default in ``TaskBase``, which every registered task
    subclasses; what a task is (packing, loss, messages) is declared in ``traits``.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    traits: ClassVar[TaskTraits]

    options: Any

    def __init__(self, options: Any, **state: Any) -> None:
        """Built from validated options (``RunConfig.task``) and what ``state()`` saved (a loaded run)."""

    def read(self, path: str | Path, data: DataConfig, *, labelled: bool = True) -> list[Example]:
        """Read and validate one data file. Raises DataError listing every located problem.

        A list of dicts, or a read-only sequence of read-only mappings equal to them
        (``data.examples.ColumnExamples``: classification keeps a large file's examples compact). Callers
        only iterate, index and take ``len``; annotated ``list`` until the callers' annotations follow.
        """
        ...

    def to_example(self, record: Any, where: str) -> Example:
        """Turn a Python input (a string, a tuple, a dict) into an unlabelled example."""
        ...

    def encode(self, examples: list[Example], tokenizer: Any, model: ModelConfig) -> Features: ...

    def build_model(self, backbone: str, model: ModelConfig, tokenizer: Any) -> torch.nn.Module: ...

    def load_model(self, directory: Path, model: ModelConfig) -> torch.nn.Module: ...

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


class TaskBase(Task):
    """What training, saving and serving need beyond the ``Task`` pipeline: six methods every task
    writes (``loss``, the metrics it reports, its summary, state and model card) and defaults for the
    rest, each a hook a task overrides where it needs to.
    """

    traits: ClassVar[TaskTraits] = TaskTraits()
    labels: Sequence[str] = ()  # the label set, where the task has one (the server lists it)
    run_outputs: ClassVar[Callable[..., Any] | None] = None
    """Optional hook, same arguments and result as ``workflows.predict.forward_outputs``: a task whose
    outputs are not the logits of one forward pass (generation: generated ids; embedding: one vector per
    text of a group) defines a ``run_outputs`` method, which training and prediction run instead of the
    forward loop. A hook rather than a default method: the default loop lives above ``tasks/``."""

    # ------------------------------------------------------------------ what every task writes

    @property
    @abstractmethod
    def default_metric(self) -> str:
        """Metric used for best-model selection when the config names none."""

    @abstractmethod
    def eval_metrics(self, examples: list[Example]) -> dict[str, bool]:
        """The scalar metrics ``score`` reports on these (eval) examples with the task's options, each
        mapped to whether higher is better (``directions``); the loss (and perplexity, see
        ``TaskTraits.reports_perplexity``) is added by the caller. Counts (tokens, questions) and tuned
        thresholds are not metrics."""

    @abstractmethod
    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        """The mean loss of a batch from the model's outputs; the Trainer's loss unless
        ``traits.model_computes_loss``, and the eval loss always."""

    @abstractmethod
    def summarize(self, name: str, examples: list[Example], features: Features | None) -> SplitSummary:
        """What the data summary shows for one split."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """What taskhead.json stores to rebuild this task: labels, thresholds, ..."""

    @abstractmethod
    def model_card(self) -> str:
        """Task-specific lines of the model card (Markdown)."""

    # ------------------------------------------------------------------ hooks with defaults

    def prepare(self, splits: dict[str, list[Example]], data: DataConfig) -> list[str]:
        """Fix what the training data decides (the label set, the loss); check the other splits against it.

        Returns warnings; raises DataError for errors. Default: nothing to fix."""
        return []

    def save_model(self, model: torch.nn.Module, directory: Path) -> None:
        """Write the model into ``directory``. Default: transformers' ``save_pretrained``."""
        model.save_pretrained(directory)  # type: ignore[operator]

    def fit_on_eval(self, outputs: Any, features: Features, examples: list[Example]) -> dict[str, Any]:
        """Tune post-processing on the eval set after training (e.g. thresholds) from the eval split's
        outputs (as ``run_outputs`` gave them); returns what was tuned (empty: nothing). Called only where
        ``traits.fits_on_eval``; such a task defines it.

        Raises:
            NotImplementedError: the task declares ``fits_on_eval`` but does not define this method.
        """
        raise NotImplementedError(f"the {self.name} task declares fits_on_eval but has no fit_on_eval")

    @property
    def example_input(self) -> str | None:
        """The model card's example input (a Python literal). Default: ``traits.example_input``; a task
        whose example depends on the run (text pairs, a mask token) overrides this property."""
        return self.traits.example_input

    @property
    def loss_shifts_labels(self) -> bool | None:
        """Whether ``loss`` predicts ``labels[:, 1:]`` (causal models), so that the Trainer counts targets
        over those; None: the Trainer's own rule. A property: the model (causal or not) decides it."""
        return None

    def input_format(self, path: str | Path, data: DataConfig, *, labelled: bool = False) -> str | None:
        """The format ``read`` reads ``path`` in, by one rule for files and standard input (``-``).

        Default: ``data.format`` when set, else a sniff of standard input, else the extension; None when
        the extension tells nothing (``read`` then decides, e.g. parallel text files)."""
        from taskhead.data.readers import detect_format, read_text_source, sniff_format
        from taskhead.errors import DataError

        if data.format != "auto":
            return str(data.format)
        if str(path) == "-":
            return sniff_format(read_text_source(path, data.encoding))
        try:
            return detect_format(path)
        except DataError:
            return None

    def make_collator(self, tokenizer: Any, *, pad_to_multiple_of: int | None = None) -> Any:
        """The training batches' collator. Default: padding only (``traits.sequence_labels`` says how
        labels pad)."""
        from taskhead.data.collate import PadCollator

        return PadCollator(
            tokenizer.pad_token_id,
            pad_to_multiple_of=pad_to_multiple_of,
            sequence_labels=self.traits.sequence_labels,
        )

    def make_trainer(self, **kwargs: Any) -> Any:
        """The Trainer that trains this task; ``kwargs`` are ``TaskheadTrainer``'s. Default: that class."""
        from taskhead.engine.trainer import TaskheadTrainer

        return TaskheadTrainer(**kwargs)

    def with_decoding(self, settings: dict[str, Any], where: str = "--set") -> TaskBase:
        """A copy of this task that decodes with ``settings`` over the run's own.

        Raises:
            ConfigError: always by default (the task has no decoding settings), starting with ``where``.
        """
        from taskhead.errors import ConfigError

        raise ConfigError(
            f"{where}: {self.name} runs have no decoding settings "
            f"(got {', '.join(sorted(settings))}); decoding settings apply to generation runs"
        )
