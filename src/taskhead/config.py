"""Typed run configuration: pydantic models, ``load_config`` (YAML with line numbers in every error,
dotted CLI overrides; the YAML and override parsing is in ``config_yaml.py``), did-you-mean, ``train.metric``.

Paths of data files written in a YAML file are relative to that file's folder; paths given as overrides
(``data.train=...``) and ``output_dir`` are relative to the working directory.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskhead.config_yaml import apply_override, line_map, parse_override, read_config_text, yaml_load
from taskhead.errors import ConfigError

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ScratchConfig(_Section):
    """``model.backbone: scratch``: a new model of this architecture with a tokenizer trained on the data."""

    architecture: str = Field(
        "bert", description="transformers model_type: bert, roberta (encoders), gpt2, llama, t5, bart, ..."
    )
    tokenizer: Literal["wordpiece", "bpe", "unigram"] = Field(
        "wordpiece", description="Tokenizer model trained on the training texts (byte-level for `bpe`)."
    )
    vocab_size: int = Field(8000, ge=100, description="Tokenizer vocabulary size (an upper bound).")
    min_frequency: int = Field(2, ge=1, description="WordPiece/BPE: least count of a merged token.")
    lowercase: bool = Field(False, description="Lower-case the text before tokenizing (metrics are cased).")
    hidden_size: int = Field(256, ge=8, description="Width of the hidden states (a multiple of num_heads).")
    num_layers: int = Field(4, ge=1, description="Layers (each of encoder and decoder for seq2seq).")
    num_heads: int = Field(4, ge=1, description="Attention heads per layer.")
    config: dict[str, Any] = Field(
        default_factory=dict, description="Further settings of the architecture's config (overrides)."
    )


class ModelConfig(_Section):
    backbone: str = Field(
        "minilm",
        description="`minilm` (bundled), a local model directory, a run directory, a hub id, or `scratch`.",
    )
    scratch: ScratchConfig | None = Field(
        None, description="The new model when backbone is `scratch` (null: the ScratchConfig defaults)."
    )
    pooling: Literal["cls", "mean", "max"] = Field("cls", description="How token vectors become one vector.")
    max_length: int = Field(128, ge=8, le=16384, description="Maximum tokens per input (pair included).")
    special_tokens: list[str] = Field(
        default_factory=list, description="Extra special tokens added to the tokenizer (embeddings resized)."
    )
    head_hidden_size: int | None = Field(
        None,
        ge=1,
        description="Hidden size of a feed-forward layer before the output; null: the standard head.",
    )
    head_dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Dropout before the head; null: the backbone's own setting."
    )
    reuse_head: Literal["by_name", "fresh"] = Field(
        "by_name",
        description="A backbone with a fine-tuned classification or tagging head (a run directory, a "
        "transformers classifier): `by_name` reuses it with its rows matched to the data's labels by name "
        "(a different label set is an error naming both sets); `fresh` trains a new head (with a warning).",
    )
    freeze_embeddings: bool = Field(
        False,
        description="Keep the backbone's input word embeddings fixed: faster training and less optimizer "
        "memory (MiniLM: 11.7M of its 22.7M weights); not with special_tokens, a scratch model or tied "
        "input/output embeddings.",
    )
    trust_remote_code: bool = Field(False, description="Allow a backbone's own Python code (hub models).")

    @model_validator(mode="after")
    def _frozen_embeddings_must_be_trained(self) -> ModelConfig:
        if self.freeze_embeddings and self.special_tokens:
            raise ValueError(
                "freeze_embeddings: the embeddings of special_tokens are new and must train; drop one of them"
            )
        if self.freeze_embeddings and self.backbone == "scratch":
            raise ValueError("freeze_embeddings: a scratch model's embeddings start random and must train")
        return self


class ColumnsConfig(_Section):
    id: str | int | None = Field("id", description="Optional id column, copied to predictions when present.")
    text: str | int = Field("text", description="Column of the (first) text.")
    text_pair: str | int | None = Field(None, description="Column of the second text, for text pairs.")
    label: str | int | None = Field("label", description="Column of the single label.")
    labels: str | int | None = Field(
        None, description="Column of the multi-label labels: a list (JSON) or a delimited string (CSV/TSV)."
    )
    tokens: str | int | None = Field(
        None,
        description="Token classification: the words (JSON Lines: a list; default `tokens`; CoNLL: column "
        "index, default 0).",
    )
    source: str | int | None = Field(
        None, description="Generation: the source text column (default `source`)."
    )
    target: str | int | None = Field(
        None, description="Generation: the target column (default `target`; a list for several references)."
    )
    question: str | None = Field(
        None, description="Question answering: the question column (default `question`)."
    )
    context: str | None = Field(
        None, description="Question answering: the context column (default `context`)."
    )
    answers: str | None = Field(
        None,
        description="Question answering: the answers column (default `answers`: a list, a {text, "
        "answer_start} mapping, or the answer text with an `answer_start` column).",
    )
    answer_start: str | None = Field(None, description="Question answering: the answer's character start.")
    tags: str | int | None = Field(
        None,
        description="Token classification: the tags (JSON Lines: a list, default `tags`; CoNLL: column "
        "index, default -1 = last; CoNLL-U: `upos` (default) or `xpos`).",
    )
    anchor: str | int | None = Field(
        None, description="Embedding: the first text (default `anchor` when present, else `text`)."
    )
    positive: str | int | None = Field(
        None,
        description="Embedding: the second text, a positive or the other text of a scored/labelled pair "
        "(default `positive` when present, else `text_pair`).",
    )
    negative: str | int | list[str | int] | None = Field(
        None,
        description="Embedding: hard-negative column(s) (default: `negative`, `negative_2`, ... if present).",
    )
    score: str | int | None = Field(
        None, description="Embedding: the similarity score of a pair (default `score` when present)."
    )


class DataConfig(_Section):
    train: Path | None = Field(None, description="Training data file.")
    eval: Path | None = Field(None, description="Evaluation data file (each epoch; best-model selection).")
    test: Path | None = Field(None, description="Test data file, scored once after training.")
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "text", "conll", "conllu"] = Field(
        "auto", description="File format; `auto` goes by the file extension."
    )
    columns: ColumnsConfig = Field(
        default_factory=ColumnsConfig, description="Column names (or CSV/TSV/CoNLL indexes) of the fields."
    )
    labels: list[str] | None = Field(None, description="Fixed label list (order kept); default: from train.")
    label_delimiter: str = Field(",", min_length=1, description="Separator of multi-label labels in CSV/TSV.")
    header: bool = Field(True, description="CSV/TSV files start with a header line.")
    encoding: str = Field("utf-8", description="Text encoding (a UTF-8 BOM is always accepted).")
    quoting: Literal["minimal", "none"] = Field(
        "minimal", description="CSV quoting: `minimal` (standard) or `none` (quotes are plain characters)."
    )
    max_errors: int = Field(20, ge=1, description="Problems reported per file before stopping.")
    comment_prefix: str | None = Field(
        "#", description="CoNLL column files: lines starting with this before a sentence are comments."
    )


class TrainConfig(_Section):
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (a fraction is allowed).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Stop training after this many minutes (then score and save as usual); the learning-rate "
        "schedule still spans epochs/max_steps.",
    )
    batch_size: int = Field(32, ge=1, description="Training examples per batch and device (process).")
    eval_batch_size: int = Field(64, ge=1, description="Batch size of evaluation during training.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate of the linear schedule (AdamW).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps with a linear warm-up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Batches whose gradients add up to one optimizer step."
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients are clipped to this global norm.")
    seed: int = Field(42, description="Seed of new weights (head, scratch model), data order and dropout.")
    bf16: bool | Literal["auto"] = Field(
        "auto", description="bf16 mixed precision; `auto`: on where the GPU or CPU has native bf16."
    )
    fp16: bool = Field(False, description="fp16 mixed precision (CUDA only).")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where to train; `auto`: CUDA, else MPS, else the CPU."
    )
    eval_strategy: Literal["epoch", "steps", "no"] = Field(
        "epoch", description="When to evaluate on the eval split during training (`steps`: every eval_steps)."
    )
    eval_steps: int | None = Field(None, ge=1, description="Optimizer steps between evaluations (`steps`).")
    save_strategy: Literal["epoch", "steps", "no"] = Field(
        "epoch",
        description="When to save a checkpoint (for --resume); the best checkpoint becomes model/ only when "
        "this equals eval_strategy.",
    )
    save_steps: int | None = Field(None, ge=1, description="Optimizer steps between checkpoints (`steps`).")
    save_total_limit: int | None = Field(
        2,
        ge=1,
        description="Checkpoints kept in checkpoints/ (null: all). After each save the oldest are deleted, "
        "but the newest (what --resume needs) and the best one (when evaluation picks model/) are always "
        "kept (1 keeps best + last while training, and only the best once training ends). A checkpoint "
        "holds the weights and the optimizer state, about 3x the size of model/.",
    )
    early_stopping_patience: int | None = Field(None, ge=1, description="Evaluations without improvement.")
    metric: str | None = Field(
        None,
        description="Metric that picks the best checkpoint (the one that becomes model/): one the task "
        "reports during evaluation, e.g. accuracy, f1, rougeL, loss, perplexity; its direction is known "
        "(loss, perplexity, hamming_loss: lower is better). Default: the task's.",
    )
    group_by_length: bool | None = Field(
        None,
        description="Length-grouped batches in shuffled order; default (null): the task's choice "
        "(on, except generation: random order trained to a clearly higher ROUGE there).",
    )
    packing: bool | None = Field(
        None,
        description="Random batches computed on packed rows (several texts per row, block-diagonal "
        "attention): the accuracy of random batches with little padding; default (null): on for "
        "classification with BERT/RoBERTa-family models unless group_by_length is true.",
    )
    logging_steps: int = Field(50, ge=1, description="Optimizer steps between logged training losses.")
    num_workers: int = Field(
        0, ge=0, description="Data loader worker processes (0: load in the main process)."
    )

    @model_validator(mode="after")
    def _steps_need_a_number(self) -> TrainConfig:
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("eval_strategy 'steps' needs eval_steps")
        if self.save_strategy == "steps" and self.save_steps is None:
            raise ValueError("save_strategy 'steps' needs save_steps")
        return self


class RunConfig(_Section):
    task: Any = Field(..., description="Task name or a mapping with `name` and the task's options.")
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="The backbone, its tokenizer and the head."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Data files, their format and columns.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training, evaluation and saving.")
    output_dir: Path = Field(Path("runs/run"), description="Where the run directory is written.")

    @field_validator("task", mode="before")
    @classmethod
    def _task_options(cls, value: Any) -> BaseModel:
        from taskhead.tasks import task_options_model

        if isinstance(value, BaseModel):
            return value
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError("expected a task name or a mapping with `name`")
        return task_options_model(value["name"]).model_validate(value)

    @property
    def task_name(self) -> str:
        return str(self.task.name)

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)


# ---------------------------------------------------------------- loading with line numbers


def _fields_at(loc: tuple[Any, ...], raw: dict[str, Any]) -> list[str]:
    """Names of the fields that are valid at the parent of ``loc`` (for did-you-mean)."""
    model: type[BaseModel] | None = RunConfig
    for part in loc[:-1]:
        if model is None:
            return []
        if part == "task" and model is RunConfig:
            from taskhead.tasks import task_options_model

            name = raw.get("task", {}).get("name") if isinstance(raw.get("task"), dict) else raw.get("task")
            try:
                model = task_options_model(str(name))
            except ConfigError:
                return []
            continue
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return list(model.model_fields) if model is not None else []


def _describe(err: ErrorDetails, raw: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc, raw), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{key}: unknown key{hint}"
    got = err.get("input")
    got_text = "" if isinstance(got, dict) or err["type"] == "value_error" else f", got {got!r}"
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:]
    return f"{key}: {msg}{got_text}"


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    path = tuple(str(p) for p in loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


_PATH_KEYS = ("train", "eval", "test")


def load_config(
    source: str | Path | dict[str, Any] | RunConfig,
    overrides: list[str] | dict[str, Any] | None = None,
) -> RunConfig:
    """Load and validate a configuration from a YAML path, a dict or a RunConfig, applying overrides.

    Raises:
        ConfigError: one line per problem, ``config.yaml:LINE: key: problem``.
    """
    if isinstance(source, RunConfig):
        source = source.to_yaml_dict()
    origin = "config"
    lines: dict[tuple[str, ...], int] = {}
    base_dir = Path.cwd()
    if isinstance(source, (str, Path)):
        path = Path(source)
        text = read_config_text(path)
        origin, base_dir = str(path), path.resolve().parent
        try:
            lines = line_map(text)
            raw = yaml_load(text) or {}
        except ConfigError as exc:
            raise ConfigError(f"{path}:{str(exc).removeprefix('line ')}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}:1: expected a mapping of sections (task, model, data, train)")
    else:
        raw = yaml.safe_load(yaml.safe_dump(source))  # deep copy, JSON-like types only
    data = raw.get("data")
    if isinstance(data, dict):
        for key in _PATH_KEYS:
            if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                data[key] = str(base_dir / data[key])
    items = list(overrides.items()) if isinstance(overrides, dict) else []
    parsed = [parse_override(o) for o in overrides] if isinstance(overrides, list) else []
    parsed += [(k.split("."), v) for k, v in items]
    override_keys = set()
    for parts, value in parsed:
        apply_override(raw, parts, value)
        override_keys.add(tuple(parts))
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            text = _describe(err, raw)
            if any(loc[: len(k)] == k for k in override_keys):
                messages.append(f"override {text}")
            else:
                line = _line_for(loc, lines)
                messages.append(f"{origin}{f':{line}' if line else ''}: {text}")
        raise ConfigError("\n".join(messages)) from None


# ---------------------------------------------------------------- train.metric


def selection_metric(config: RunConfig, task: Any, eval_examples: list[dict[str, Any]]) -> tuple[str, bool]:
    """``train.metric`` (or the task's default) checked against what the task reports during evaluation.

    Args:
        config: the run configuration.
        task: the task, prepared on the data (its options and what the data showed decide its metrics).
        eval_examples: the eval split's examples (the training split's where there is no eval split).

    Returns:
        ``(metric, greater_is_better)``: the name the Trainer logs as ``eval_<metric>``, and its direction.

    Raises:
        ConfigError: the metric is not one the task reports; the message lists the valid ones.
    """
    reported: dict[str, bool] = {"loss": False}  # every labelled evaluation logs its mean loss
    if task.traits.reports_perplexity:
        reported["perplexity"] = False
    reported.update(task.eval_metrics(eval_examples))
    metric = config.train.metric or task.default_metric
    if metric not in reported:
        close = difflib.get_close_matches(metric.removeprefix("eval_"), list(reported), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"train.metric: {metric!r} is not a metric the {task.name} task reports during evaluation with "
            f"these options and data; expected one of: {', '.join(reported)}{hint}"
        )
    return metric, reported[metric]
