"""The setup steps of ``train()`` (torchtune recipe style): data (tokenizer, encoded splits, their summary),
model (head on the backbone, frozen embeddings, packing), trainer (arguments, callbacks, collator). Each
takes the validated config and task and returns what the next step needs; ``workflows/train.py`` runs them
in order, trains, scores and writes the run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskhead.config import RunConfig, selection_metric
from taskhead.console import info, print_table, schedule_text, summary_table, warn
from taskhead.errors import ConfigError
from taskhead.tasks.base import Example, Features, TaskBase
from taskhead.workflows.rundir import CHECKPOINTS


@dataclass
class TrainerSetup:
    """What ``setup_trainer`` made: the Trainer, its time-budget callback (None without
    ``train.max_minutes``), the selection metric (without the ``eval_`` prefix) and the batching in words
    (``packed``, ``length-grouped`` or ``random``)."""

    trainer: Any
    budget: Any
    metric: str
    batching: str


def setup_data(
    cfg: RunConfig, task: TaskBase, splits: dict[str, list[Example]], backbone: str
) -> tuple[Any, dict[str, Features]]:
    """The backbone's tokenizer and every split encoded (one ``Features`` per split name, in input order).
    Prints the splits' summary table and warns, per split, of truncated examples and of examples whose
    target no feature holds (each task words its own warning; the counts come from its ``encode``)."""
    tokenizer = _load_tokenizer(backbone, cfg, task)
    features = {name: encode_split(task, ex, tokenizer, cfg, name) for name, ex in splits.items()}
    print_table(summary_table([task.summarize(n, splits[n], features[n]) for n in splits]))
    for name, f in features.items():
        for count, text in ((f.truncated, task.traits.truncated_message), (f.lost, task.traits.lost_message)):
            if count:
                warn(
                    f"{name}: "
                    + text.format(n=count, total=len(splits[name]), max_length=cfg.model.max_length)
                )
    return tokenizer, features


def setup_model(cfg: RunConfig, task: TaskBase, backbone: str, tokenizer: Any) -> tuple[Any, bool]:
    """The task's model on ``backbone`` (seeded first, so that a rerun starts from the same head weights)
    and whether it trains on packed rows.

    Raises:
        ConfigError: ``model.max_length`` over the backbone's positions, ``model.freeze_embeddings`` on
            tied embeddings, ``train.packing`` where it cannot run.
    """
    from transformers import set_seed

    from taskhead.engine.backbones import quiet_loading

    set_seed(cfg.train.seed)  # before the head is created, so that a rerun starts from the same weights
    with quiet_loading():
        model = task.build_model(backbone, cfg.model, tokenizer)
    _check_max_length(model, cfg)
    if cfg.model.freeze_embeddings:
        freeze_input_embeddings(model)
    return model, use_packing(cfg, task, model)


def setup_trainer(
    cfg: RunConfig,
    task: TaskBase,
    splits: dict[str, list[Example]],
    features: dict[str, Features],
    model: Any,
    tokenizer: Any,
    *,
    work_dir: Path,
    device: Any,
    precision: str,
    packing: bool,
    quiet: bool,
) -> TrainerSetup:
    """The Trainer (the task's own class where it brings one) over the encoded splits, checkpointing into
    ``work_dir/checkpoints``, with early stopping and the time budget where configured; logs go to stderr.
    Prints one line saying what it will train (device, precision, examples, schedule, batching).

    Raises:
        ConfigError: ``train.metric`` not reported by the task (checked again now the model is known).
    """
    from taskhead.engine.trainer import ListDataset, route_logs_to_stderr

    has_eval = "eval" in splits
    args, metric = _arguments(cfg, task, splits, work_dir, device=device, precision=precision, quiet=quiet)
    callbacks, budget = _callbacks(cfg, load_best=args.load_best_model_at_end)
    trainer = task.make_trainer(  # TaskheadTrainer, or the task's own subclass
        model=model,
        args=args,
        train_dataset=ListDataset(features["train"].inputs),
        eval_dataset=ListDataset(features["eval"].inputs) if has_eval else None,
        data_collator=task.make_collator(tokenizer, pad_to_multiple_of=8 if device.type == "cuda" else None),
        processing_class=tokenizer,
        compute_loss_func=None if task.traits.model_computes_loss else task.loss,
        callbacks=callbacks,
        task=task,
        train_features=features["train"],
        eval_split=(splits["eval"], features["eval"]) if has_eval else None,
        precision=precision,
        group_by_length=group_by_length(cfg, task),
        packing=packing,
    )
    route_logs_to_stderr(trainer, quiet=quiet)
    batching = "packed" if packing else "length-grouped" if trainer.group_by_length else "random"
    info(
        f"training on {device.type} ({precision}), {len(splits['train'])} examples, "
        f"{schedule_text(cfg)}, {batching} batches, backbone {cfg.model.backbone}"
    )
    return TrainerSetup(trainer, budget, metric, batching)


def _arguments(
    cfg: RunConfig,
    task: TaskBase,
    splits: dict[str, list[Example]],
    work_dir: Path,
    *,
    device: Any,
    precision: str,
    quiet: bool,
) -> tuple[Any, str]:
    """The Trainer's arguments and the selection metric, checked again now that the model is known
    (language modeling's objective ``auto``), before any step.

    Raises:
        ConfigError: ``train.metric`` not reported by the task.
    """
    from taskhead.engine.trainer import training_arguments

    metric, greater_is_better = selection_metric(cfg, task, splits.get("eval") or splits["train"])
    args = training_arguments(
        cfg,
        output_dir=work_dir / CHECKPOINTS,
        has_eval="eval" in splits,
        device=device,
        precision=precision,
        metric=metric,
        greater_is_better=greater_is_better,
        quiet=quiet,
    )
    return args, metric


def _callbacks(cfg: RunConfig, *, load_best: bool) -> tuple[list[Any], Any]:
    """Early stopping (where the best checkpoint is loaded at the end) and the ``train.max_minutes``
    budget; the budget callback is also returned (None without one) to tell whether it stopped training."""
    from taskhead.engine.trainer import TimeBudgetCallback

    callbacks: list[Any] = []
    if cfg.train.early_stopping_patience and load_best:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    elif cfg.train.early_stopping_patience:
        warn(
            "train.early_stopping_patience needs eval data and save_strategy equal to eval_strategy; ignored"
        )
    budget = TimeBudgetCallback(cfg.train.max_minutes * 60) if cfg.train.max_minutes else None
    if budget is not None:
        callbacks.append(budget)
    return callbacks, budget


def encode_split(
    task: TaskBase, examples: list[Example], tokenizer: Any, config: RunConfig, desc: str
) -> Features:
    """Tokenize in chunks under a progress bar; the result is one Features in input order."""
    from tqdm.auto import tqdm

    chunk = 4096
    merged = Features([], [])
    with tqdm(total=len(examples), desc=f"tokenizing {desc}", unit="ex", leave=False, disable=None) as bar:
        for start in range(0, len(examples), chunk):
            part = task.encode(examples[start : start + chunk], tokenizer, config.model)
            merged.inputs += part.inputs
            merged.example_index += [start + i for i in part.example_index]
            merged.truncated += part.truncated
            merged.windowed += part.windowed
            merged.lost += part.lost
            merged.meta += part.meta
            bar.update(len(examples[start : start + chunk]))
    return merged


def _load_tokenizer(backbone: str, config: RunConfig, task: TaskBase) -> Any:
    from transformers import AutoTokenizer

    remote = config.model.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(backbone, trust_remote_code=remote)
    if task.traits.pretokenized and getattr(tokenizer, "add_prefix_space", None) is False:
        # byte-level BPE (RoBERTa, GPT-2): words given one by one need their leading space, as in pretraining
        tokenizer = AutoTokenizer.from_pretrained(backbone, trust_remote_code=remote, add_prefix_space=True)
    if config.model.special_tokens:
        tokenizer.add_special_tokens(
            {"extra_special_tokens": list(config.model.special_tokens)}, replace_extra_special_tokens=False
        )
    if tokenizer.pad_token is None:  # decoder tokenizers often have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def freeze_input_embeddings(model: Any) -> None:
    """``model.freeze_embeddings``: no gradient for the backbone's input word embeddings (the outermost
    transformers model inside ``model``); refused where they are also the output layer (tied weights)."""
    from transformers import PreTrainedModel

    owner = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    embeddings = owner.get_input_embeddings() if owner is not None else None
    if owner is None or embeddings is None:
        raise ConfigError("model.freeze_embeddings: this model has no input embeddings to freeze")
    output = owner.get_output_embeddings()
    if output is not None and getattr(output, "weight", None) is embeddings.weight:
        raise ConfigError(
            "model.freeze_embeddings: this backbone ties its input embeddings to its output layer, which "
            "must train; set it to false"
        )
    embeddings.weight.requires_grad_(False)


def backbone_dir(cfg: RunConfig, splits: dict[str, list[Example]], run_dir: Path, resolve: Any) -> str:
    """The backbone directory: resolved from ``model.backbone``, or built from the training data."""
    if cfg.model.backbone.lower() != "scratch":
        return str(resolve(cfg.model.backbone))
    from taskhead.config import ScratchConfig
    from taskhead.workflows import scratch

    return scratch.build(
        cfg.model.scratch or ScratchConfig(),
        cfg.model,
        splits["train"],
        run_dir / scratch.SCRATCH_DIR,
        seed=cfg.train.seed,
    )


def group_by_length(cfg: RunConfig, task: TaskBase) -> bool:
    """``train.group_by_length`` as set, or the task's own default (on unless the task says otherwise)."""
    if cfg.train.group_by_length is not None:
        return cfg.train.group_by_length
    return task.traits.group_by_length


def use_packing(cfg: RunConfig, task: TaskBase, model: Any) -> bool:
    """``train.packing`` as set (refused where it cannot run), or by default on where the task trains on
    packed rows (classification), the model supports it, the run is one process and ``group_by_length`` is
    not explicitly on."""
    from taskhead.console import process_count
    from taskhead.engine.packing import unsupported_reason

    distributed = process_count() > 1
    if cfg.train.packing is None:
        return (
            task.traits.packing
            and cfg.train.group_by_length is not True
            and not distributed
            and unsupported_reason(model) is None
        )
    if cfg.train.packing:
        if not task.traits.packing:
            raise ConfigError(f"train.packing: the {task.name} task does not train on packed rows")
        if distributed:
            raise ConfigError("train.packing: not available in multi-process runs; set it to false")
        reason = unsupported_reason(model)
        if reason:
            raise ConfigError(f"train.packing: {reason}")
    return cfg.train.packing


def _check_max_length(model: Any, config: RunConfig) -> None:
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit and config.model.max_length > limit:
        raise ConfigError(
            f"model.max_length: {config.model.max_length} exceeds the backbone's "
            f"{limit} positions; use at most {limit} (with sliding windows for long texts)"
        )
