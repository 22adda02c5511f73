"""``train()``: config -> validated data -> features -> Trainer -> run directory."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskhead.config import RunConfig, save_config, selection_metric
from taskhead.console import (
    info,
    print_table,
    schedule_text,
    summary_table,
    trained_text,
    tuned_text,
    warn,
    weights_text,
)
from taskhead.errors import ConfigError, RunDirError
from taskhead.tasks.base import Example, Features, TaskBase
from taskhead.workflows.rundir import (
    FORMAT_VERSION,
    META_FILE,
    Staging,
    apply_umask,
    atomic_write_json,
    atomic_write_text,
    replace_dir,
)
from taskhead.workflows.validate import validate

CHECKPOINTS = "checkpoints"


@dataclass
class Run:
    """A finished training run: where it is, how it was configured, and its metrics."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any]
    # the trained model, its tokenizer and task as training left them (rank 0; None on other ranks)
    model: Any = field(default=None, repr=False, compare=False)
    tokenizer: Any = field(default=None, repr=False, compare=False)
    task: Any = field(default=None, repr=False, compare=False)

    def load(self, **kwargs: Any) -> Any:
        """A Predictor over the saved run directory (``Predictor``'s keyword arguments)."""
        from taskhead.workflows.predict import Predictor

        return Predictor(self.run_dir, **kwargs)

    def in_memory(self, **kwargs: Any) -> Any:
        """A Predictor over the trained model still in memory, before any save and reload: what the
        run directory must reproduce. Keyword arguments: ``batch_size``, ``precision``, ``progress``.

        Raises:
            RunDirError: a Run without its model (another rank of a multi-process run).
        """
        from taskhead.workflows.predict import Predictor

        if self.model is None:
            raise RunDirError(f"{self.run_dir}: this Run holds no trained model (not rank 0); load() it")
        return Predictor.from_memory(
            self.run_dir, self.config, self.task, self.model, self.tokenizer, **kwargs
        )


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(f"{prefix}.{key}", item))
        return out
    return {prefix: value}


def _merge_overrides(overrides: list[str] | dict[str, Any] | None, keywords: dict[str, Any]) -> Any:
    if not keywords:
        return overrides
    from taskhead.config import parse_override

    merged: dict[str, Any] = {}
    for item in overrides or []:
        if isinstance(overrides, dict):
            merged[item] = overrides[item]
        else:
            parts, value = parse_override(item)
            merged[".".join(parts)] = value
    for key, value in keywords.items():
        merged.update(_flatten(key.replace("__", "."), value))
    return merged


def _check_output_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> tuple[Path | None, Staging | None]:
    """Check (and prepare) the run directory; returns the checkpoint to resume from and, for
    ``--overwrite`` of a folder that holds a run, the staging folder the new run is trained in (swapped in
    when complete, so the old run stays loadable until then).

    A folder holding files taskhead did not write is refused, even with ``--overwrite`` (``--resume`` writes
    only taskhead's own names into a folder that holds its checkpoints). In a multi-process
    run only rank 0 prepares the directory; the others only find the checkpoint and share the staging folder.

    Raises:
        RunDirError: a folder that is not a taskhead run, a finished run without --overwrite/--resume,
            --resume without a complete checkpoint, a folder that cannot be written.
    """
    from taskhead.console import process_rank
    from taskhead.engine.checkpoints import last_complete
    from taskhead.workflows.rundir import RUN, check_replaceable, clean_leftovers

    rank = process_rank()
    if rank == 0:
        removed = clean_leftovers(run_dir)
        if removed:
            info(
                f"{run_dir}: removed what an interrupted command left beside it: "
                + ", ".join(p.name for p in removed)
            )
    finished = (run_dir / META_FILE).exists()
    checkpoints = run_dir / CHECKPOINTS
    if not resume:
        check_replaceable(run_dir, RUN, "output_dir")
    else:
        last = last_complete(checkpoints) if rank == 0 else _newest_complete(checkpoints)
        if last is None:
            raise RunDirError(
                f"{run_dir}: --resume: no complete checkpoint in {checkpoints}; start without --resume"
            )
        return last, None
    if (finished or checkpoints.exists()) and not overwrite:
        what = "a finished run" if finished else "checkpoints of an unfinished run"
        raise RunDirError(
            f"{run_dir}: already holds {what}; pass --overwrite to replace it, --resume to "
            f"continue it, or choose another output_dir"
        )
    try:
        if run_dir.is_dir() and any(
            run_dir.iterdir()
        ):  # --overwrite: the old run stays until the new is done
            token = None  # this process; the processes of a distributed run share one folder by its run id
            if _world_size() > 1:
                token = os.environ.get("TORCHELASTIC_RUN_ID") or f"port{os.environ.get('MASTER_PORT', '0')}"
            return None, Staging(run_dir, token)
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
    except OSError as exc:
        raise RunDirError(f"{run_dir}: output_dir is not writable ({exc.strerror})") from None
    return None, None


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _newest_complete(folder: Path) -> Path | None:
    from taskhead.engine.checkpoints import checkpoints, is_complete

    return next((c for c in checkpoints(folder) if is_complete(c)), None)


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
    if embeddings is None:
        raise ConfigError("model.freeze_embeddings: this model has no input embeddings to freeze")
    output = owner.get_output_embeddings()
    if output is not None and getattr(output, "weight", None) is embeddings.weight:
        raise ConfigError(
            "model.freeze_embeddings: this backbone ties its input embeddings to its output layer, which "
            "must train; set it to false"
        )
    embeddings.weight.requires_grad_(False)


def _backbone(cfg: RunConfig, splits: dict[str, list[Example]], run_dir: Path, resolve: Any) -> str:
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


def train(
    config: str | Path | dict[str, Any] | RunConfig,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    **keyword_overrides: Any,
) -> Run:
    """Fine-tune the configured backbone on the configured task and write a run directory.

    Args:
        config: a YAML path, a dict or a RunConfig.
        overrides: dotted ``key=value`` strings, or a dict of dotted keys.
        resume: continue from the last checkpoint in ``output_dir/checkpoints``.
        overwrite: replace a finished run (or stale checkpoints) in ``output_dir``.
        quiet: no progress bars.
        **keyword_overrides: more overrides: ``output_dir="runs/x"``, ``train={"epochs": 1}`` (merged into the
            section) or ``train__epochs=1``.
    """
    report = validate(
        config, _merge_overrides(overrides, keyword_overrides)
    )  # config and every data file, before any model is loaded
    cfg, task, splits = report.config, report.task, report.splits
    for w in report.warnings:
        warn(w)
    run_dir = Path(cfg.output_dir)
    resume_from, staging = _check_output_dir(run_dir, resume=resume, overwrite=overwrite)
    command = f"taskhead train {config if isinstance(config, str | Path) else 'CONFIG'}"
    if staging is None:
        return _train(cfg, task, splits, run_dir, run_dir, resume_from, quiet, command)
    from taskhead.console import process_rank
    from taskhead.errors import SaveError

    try:
        run = _train(cfg, task, splits, run_dir, staging.path, resume_from, quiet, command)
    except BaseException as exc:
        if process_rank() == 0:
            staging.discard()  # the old run stays as it was
        else:
            staging.release()
        if isinstance(exc, SaveError):  # its advice (resume the staging folder) no longer applies
            from taskhead.engine.checkpoints import write_failure

            cause = write_failure(exc.__cause__ or exc, staging.path) or ("the file system refused", None)
            raise SaveError(
                f"{run_dir}: {cause[0]} while writing the new run beside it; removed the partial new run, "
                f"the old run is unchanged; free space (or make {run_dir.parent} writable), then run "
                f"{command} --overwrite again"
            ) from exc
        raise
    if process_rank() == 0:
        staging.commit()
    else:
        staging.release()
    return run


def _train(
    cfg: RunConfig,
    task: TaskBase,
    splits: dict[str, list[Example]],
    run_dir: Path,
    work_dir: Path,
    resume_from: Path | None,
    quiet: bool,
    command: str,
) -> Run:
    """Train and write the run in ``work_dir``: ``run_dir`` itself, or the staging folder of an --overwrite
    (its files name ``run_dir``, where they end up)."""

    from transformers import set_seed

    from taskhead.console import process_rank
    from taskhead.engine.backbones import no_hf_progress_bars, quiet_loading, resolve_backbone
    from taskhead.engine.devices import cpu_buffers_kept, resolve_device, resolve_precision
    from taskhead.engine.trainer import (
        ListDataset,
        TimeBudgetCallback,
        route_logs_to_stderr,
        training_arguments,
    )

    if process_rank() > 0:  # the other ranks of a multi-process run show no progress bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        quiet = True
    backbone = _backbone(cfg, splits, work_dir, resolve_backbone)
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(device, cfg.train.bf16, cfg.train.fp16)
    tokenizer = _load_tokenizer(backbone, cfg, task)
    features = {name: encode_split(task, ex, tokenizer, cfg, name) for name, ex in splits.items()}
    print_table(summary_table([task.summarize(n, splits[n], features[n]) for n in splits]))
    for name, f in features.items():
        for count, text in ((f.truncated, task.traits.truncated_message), (f.lost, task.traits.lost_message)):
            if count:  # each task words its own warning; the counts come from its encode()
                warn(
                    f"{name}: "
                    + text.format(n=count, total=len(splits[name]), max_length=cfg.model.max_length)
                )

    set_seed(cfg.train.seed)  # before the head is created, so that a rerun starts from the same weights
    with quiet_loading():
        model = task.build_model(backbone, cfg.model, tokenizer)
    _check_max_length(model, cfg)
    if cfg.model.freeze_embeddings:
        freeze_input_embeddings(model)
    packing = use_packing(cfg, task, model)
    # checked again now that the model is known (language modeling's objective auto), before any step
    metric, greater_is_better = selection_metric(cfg, task, splits.get("eval") or splits["train"])
    has_eval = "eval" in splits
    args = training_arguments(
        cfg,
        output_dir=work_dir / CHECKPOINTS,
        has_eval=has_eval,
        device=device,
        precision=precision,
        metric=metric,
        greater_is_better=greater_is_better,
        quiet=quiet,
    )
    callbacks = []
    if cfg.train.early_stopping_patience and args.load_best_model_at_end:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    elif cfg.train.early_stopping_patience:
        warn(
            "train.early_stopping_patience needs eval data and save_strategy equal to eval_strategy; ignored"
        )
    budget = TimeBudgetCallback(cfg.train.max_minutes * 60) if cfg.train.max_minutes else None
    if budget is not None:
        callbacks.append(budget)
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
    trainer.train_command = command  # what a full disk during a checkpoint save suggests running again
    batching = "packed" if packing else "length-grouped" if trainer.group_by_length else "random"
    info(
        f"training on {device.type} ({precision}), {len(splits['train'])} examples, "
        f"{schedule_text(cfg)}, {batching} batches, backbone {cfg.model.backbone}"
    )
    started = time.perf_counter()
    with no_hf_progress_bars(), cpu_buffers_kept(device):
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    metrics: dict[str, Any] = {
        "train": {
            **result.metrics,
            "wall_seconds": round(time.perf_counter() - started, 2),
            "batching": batching,
        }
    }
    if resume_from is not None:
        _note_resume(metrics["train"], resume_from, trainer.state.global_step)
    if budget is not None and budget.stopped_early:
        metrics["train"]["stopped_by_max_minutes"] = True
        warn(
            f"training stopped after train.max_minutes={cfg.train.max_minutes:g} "
            f"(step {trainer.state.global_step})"
        )
    trained, weights = _what_was_trained(trainer, metric)
    metrics["train"].update(trained)
    if not trainer.is_world_process_zero():  # multi-process run: rank 0 scores and writes the run directory
        return Run(run_dir, cfg, metrics)
    info(trained_text(trained, cfg))
    info(weights_text(weights))
    metrics.update(_score_splits(trainer, task, splits, features))
    metrics["history"] = trainer.state.log_history
    from taskhead.engine.checkpoints import disk_usage, disk_usage_text, explained_save_errors

    with no_hf_progress_bars(), explained_save_errors(work_dir, command=command):
        _write_run(
            work_dir,
            cfg,
            task,
            trainer.model,
            tokenizer,
            metrics,
            meta_extra={
                "rows": {n: len(e) for n, e in splits.items()},
                "precision": precision,
                "device": device.type,
                "best_checkpoint": _moved(trainer.state.best_model_checkpoint, work_dir, run_dir),
                "model_weights": weights,
                "trained": trained,
                "world_size": trainer.args.world_size,
            },
            final_dir=run_dir,
        )
        metrics["train"]["disk"] = disk_usage(work_dir)  # known once model/ is written
        atomic_write_json(work_dir / "metrics.json", metrics)
    info(disk_usage_text(metrics["train"]["disk"]))
    from taskhead.evaluation import metrics_table

    tuned = "tuned_on_eval" in metrics
    for name in ("eval", "test"):
        if name in metrics:
            where = " - the split the thresholds were tuned on" if tuned and name == "eval" else ""
            print_table(metrics_table(metrics[name], f"{name} metrics ({run_dir}){where}"))
    if tuned:
        info(tuned_text(metrics))
    return Run(run_dir, cfg, metrics, model=trainer.model, tokenizer=tokenizer, task=task)


def _moved(path: str | None, work_dir: Path, run_dir: Path) -> str | None:
    """A checkpoint path under the staging folder, as it will be once the folder is swapped in."""
    if path is None or work_dir == run_dir:
        return path
    try:
        return str(run_dir / Path(path).relative_to(work_dir))
    except ValueError:
        return path


def _note_resume(train: dict[str, Any], checkpoint: Path, step: int) -> None:
    """Record the checkpoint a run resumed from; a resume with no step left to run (the last checkpoint of
    a finished run) drops the Trainer's loss and speed of this call, which measured no step at all."""
    train["resumed_from"] = checkpoint.name
    if step == int(checkpoint.name.rpartition("-")[2]):
        for key in ("train_loss", "train_runtime", "train_samples_per_second", "train_steps_per_second"):
            train.pop(key, None)


def _what_was_trained(trainer: Any, metric: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What training did (optimizer steps, and the epochs they make: steps over the steps of one epoch, as
    the Trainer counts them) and which weights became ``model/``: the best checkpoint by the metric, or the
    last step's weights and why."""
    state, args = trainer.state, trainer.args
    trained = {"steps": state.global_step, "epochs_trained": round(float(state.epoch or 0.0), 4)}
    best = state.best_model_checkpoint
    if args.load_best_model_at_end and best is not None:
        weights = {
            "chosen": "best",
            "metric": f"eval_{metric}",
            "value": state.best_metric,
            "greater_is_better": bool(args.greater_is_better),
            "step": int(Path(best).name.rpartition("-")[2]),
            "checkpoint": Path(best).name,
        }
        return trained, weights
    if args.eval_strategy == "no":
        why = "no evaluation during training (no eval split, or train.eval_strategy: no)"
    elif not args.load_best_model_at_end:
        why = "train.save_strategy differs from train.eval_strategy, so no checkpoint can be picked"
    else:
        why = "no checkpoint was evaluated"
    return trained, {"chosen": "last", "step": state.global_step, "why": why}


def _score_splits(
    trainer: Any, task: TaskBase, splits: dict[str, list[Example]], features: dict[str, Features]
) -> dict[str, Any]:
    """Final metrics of the eval and test splits. Where the task tunes post-processing on the eval set
    (multi-label thresholds, the QA null threshold), the eval split is scored with the configured values
    (``eval_before_tuning``), tuned, and scored again: ``eval`` is then on the tuning set itself, and the
    test split is scored with the tuned values (held-out data)."""
    from taskhead.workflows.predict import add_loss

    metrics: dict[str, Any] = {}
    for name in ("eval", "test"):
        if name not in splits:
            continue
        examples, feats = splits[name], features[name]
        outputs, loss = trainer.run_split(examples, feats, progress=f"scoring {name}")
        metrics[name] = add_loss(task.score(task.decode(outputs, feats, examples), examples), loss, task)
        if name != "eval":
            continue
        tuned = task.fit_on_eval(outputs, feats, examples) if task.traits.fits_on_eval else {}
        if tuned:
            metrics["eval_before_tuning"] = metrics["eval"]
            metrics["eval"] = add_loss(
                task.score(task.decode(outputs, feats, examples), examples), loss, task
            )
            metrics["tuned_on_eval"] = {
                **tuned,
                "note": "tuned on the eval split: the eval metrics are measured on the data the values "
                "were tuned on (optimistic; eval_before_tuning has them with the configured values); the "
                "test metrics, where there is a test split, use the tuned values on held-out data",
            }
    return metrics


def _write_run(
    run_dir: Path,
    cfg: RunConfig,
    task: TaskBase,
    model: Any,
    tokenizer: Any,
    metrics: dict[str, Any],
    *,
    meta_extra: dict[str, Any],
    final_dir: Path | None = None,
) -> None:
    """Write the run directory; taskhead.json last, so that only a complete run is ever loadable.

    ``final_dir``: where the folder ends up when ``run_dir`` is a staging folder (the files name it)."""
    from taskhead.workflows.rundir import library_versions, model_card

    (run_dir / META_FILE).unlink(missing_ok=True)

    def fill(directory: Path) -> None:
        task.save_model(model, directory)
        tokenizer.save_pretrained(directory)

    replace_dir(run_dir / "model", fill)
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_json(run_dir / "metrics.json", metrics)
    meta = {
        "format_version": FORMAT_VERSION,
        "task": task.name,
        "task_state": task.state(),
        "config": cfg.to_yaml_dict(),
        "run_dir": str(final_dir or run_dir),
        "versions": library_versions(),
        **meta_extra,
    }
    card = model_card(meta, metrics, task.model_card(), task.example_input)
    atomic_write_text(run_dir / "README.md", card)
    if (run_dir / CHECKPOINTS).is_dir():
        apply_umask(run_dir / CHECKPOINTS)
    atomic_write_json(run_dir / META_FILE, meta)
