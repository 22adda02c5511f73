"""``train()``: config -> validated data -> features -> Trainer -> scores -> run directory (the setup
steps are in ``workflows/train_setup.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskhead.config import RunConfig
from taskhead.console import info, print_table, trained_text, tuned_text, warn, weights_text
from taskhead.errors import RunDirError
from taskhead.tasks.base import Example, Features, TaskBase
from taskhead.workflows.files import apply_umask, atomic_write_json, atomic_write_text, real
from taskhead.workflows.output_dir import check_output_dir
from taskhead.workflows.outputs import Staging, replace_dir
from taskhead.workflows.rundir import (
    CHECKPOINTS,
    FORMAT_VERSION,
    MANIFEST,
    META_FILE,
    save_config,
    written_files,
)
from taskhead.workflows.train_setup import (
    TrainerSetup,
    backbone_dir,
    setup_data,
    setup_model,
    setup_trainer,
)
from taskhead.workflows.validate import validate


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
    run_dir = Path(cfg.output_dir).expanduser()  # as a shell would; the Trainer's own paths expand it too
    from taskhead.console import process_rank
    from taskhead.workflows.outputs import WriterLock

    lock = WriterLock(run_dir) if process_rank() == 0 else None  # one writer per output_dir
    try:
        resume_from, staging = check_output_dir(run_dir, resume=resume, overwrite=overwrite)
        command = _command(config, overrides, keyword_overrides)
        if staging is None:
            return _train(cfg, task, splits, run_dir, run_dir, resume_from, quiet, command)
        return _train_staged(cfg, task, splits, run_dir, staging, resume_from, quiet, command)
    finally:
        if lock is not None:
            lock.release()


def _command(config: Any, overrides: Any, keyword_overrides: dict[str, Any]) -> str:
    """The command that trains this run again, for the advice of an error: the config file and every
    override as ``key=value`` (dropping one could point the advice at another run's folder)."""
    import shlex

    parts = ["taskhead", "train", str(config) if isinstance(config, str | Path) else "CONFIG"]
    merged = _merge_overrides(overrides, keyword_overrides) or {}
    items = merged.items() if isinstance(merged, dict) else (item.split("=", 1) for item in merged)
    parts += [f"{key}={value}" for key, value in items]
    return " ".join(shlex.quote(p) for p in parts)


def _train_staged(
    cfg: RunConfig,
    task: TaskBase,
    splits: dict[str, list[Example]],
    run_dir: Path,
    staging: Staging,
    resume_from: Path | None,
    quiet: bool,
    command: str,
) -> Run:
    """Train in the staging folder and swap it in. A failure keeps a staging folder that holds a complete
    checkpoint (``--resume`` continues it) and removes any other; ``run_dir`` is untouched either way."""
    from taskhead.console import process_rank
    from taskhead.engine.checkpoints import newest_complete, write_failure
    from taskhead.errors import SaveError

    try:
        run = _train(cfg, task, splits, run_dir, staging.path, resume_from, quiet, command)
    except BaseException as exc:
        if process_rank() > 0:
            staging.release()
            raise
        if newest_complete(staging.path / CHECKPOINTS) is not None:
            staging.release(keep=True)  # a failed training's checkpoints: --resume continues them
            warn(
                f"{run_dir}: the checkpoints so far are kept beside it ({staging.path.name}); continue with "
                f"{command} --resume"
            )
            raise
        staging.discard()
        if isinstance(
            exc, SaveError
        ):  # nothing left to resume: say so, naming run_dir, not the staging folder
            from taskhead.engine.checkpoints import SPACE

            text, code = write_failure(exc.__cause__ or exc, staging.path) or (
                "the file system refused",
                None,
            )
            old = (run_dir / META_FILE).exists()
            advice = (
                "free space"
                if code in SPACE
                else f"make {real(run_dir).parent} writable (or another output_dir)"
            )
            raise SaveError(
                f"{run_dir}: {text} while training it beside it ({staging.path.name}); removed the partial "
                "run"
                f"{', the old run is unchanged' if old else ''}; {advice}, then train again with {command}"
                f"{' --overwrite' if old else ''}"
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
    (its files name ``run_dir``, where they end up). The steps: backbone and device, data, model, trainer
    (``workflows/train_setup.py``), training, scoring of the eval/test splits, the run directory."""
    from taskhead.engine.backbones import resolve_backbone
    from taskhead.engine.devices import resolve_device, resolve_precision

    quiet = _other_rank() or quiet  # called first: it also turns the progress bars off
    backbone = backbone_dir(cfg, splits, work_dir, resolve_backbone)
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(device, cfg.train.bf16, cfg.train.fp16)
    tokenizer, features = setup_data(cfg, task, splits, backbone)
    model, packing = setup_model(cfg, task, backbone, tokenizer)
    setup = setup_trainer(
        cfg,
        task,
        splits,
        features,
        model,
        tokenizer,
        work_dir=work_dir,
        device=device,
        precision=precision,
        packing=packing,
        quiet=quiet,
    )
    trainer = setup.trainer
    trainer.train_command = command  # what a full disk during a checkpoint save suggests running again
    metrics, trained, weights = _fit(setup, cfg, device, resume_from)
    if not trainer.is_world_process_zero():  # multi-process run: rank 0 scores and writes the run directory
        return Run(run_dir, cfg, metrics)
    info(trained_text(trained, cfg))
    info(weights_text(weights))
    metrics.update(_score_splits(trainer, task, splits, features))
    metrics["history"] = trainer.state.log_history
    meta_extra = {
        "rows": {n: len(e) for n, e in splits.items()},
        "precision": precision,
        "device": device.type,
        "best_checkpoint": _moved(trainer.state.best_model_checkpoint, work_dir, run_dir),
        "model_weights": weights,
        "trained": trained,
        "world_size": trainer.args.world_size,
    }
    _write(work_dir, run_dir, cfg, task, trainer.model, tokenizer, metrics, meta_extra, command)
    _show_metrics(metrics, run_dir)
    return Run(run_dir, cfg, metrics, model=trainer.model, tokenizer=tokenizer, task=task)


def _other_rank() -> bool:
    """Whether this process is not rank 0 of a multi-process run; such ranks show no progress bars (turned
    off here) and train quietly."""
    from taskhead.console import process_rank

    if process_rank() == 0:
        return False
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return True


def _fit(
    setup: TrainerSetup, cfg: RunConfig, device: Any, resume_from: Path | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Run the Trainer (from ``resume_from`` when given). Returns the metrics so far (``{"train": ...}``:
    the Trainer's figures, wall seconds, batching, what was trained), what was trained (steps, epochs) and
    which weights became the model (``_what_was_trained``)."""
    from taskhead.engine.backbones import no_hf_progress_bars
    from taskhead.engine.devices import cpu_buffers_kept

    trainer = setup.trainer
    started = time.perf_counter()
    with no_hf_progress_bars(), cpu_buffers_kept(device):
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    metrics: dict[str, Any] = {
        "train": {
            **result.metrics,
            "wall_seconds": round(time.perf_counter() - started, 2),
            "batching": setup.batching,
        }
    }
    if resume_from is not None:
        _note_resume(metrics["train"], resume_from, trainer.state.global_step)
    if setup.budget is not None and setup.budget.stopped_early:
        metrics["train"]["stopped_by_max_minutes"] = True
        warn(
            f"training stopped after train.max_minutes={cfg.train.max_minutes:g} "
            f"(step {trainer.state.global_step})"
        )
    trained, weights = _what_was_trained(trainer, setup.metric)
    metrics["train"].update(trained)
    return metrics, trained, weights


def _write(
    work_dir: Path,
    run_dir: Path,
    cfg: RunConfig,
    task: TaskBase,
    model: Any,
    tokenizer: Any,
    metrics: dict[str, Any],
    meta_extra: dict[str, Any],
    command: str,
) -> None:
    """Write the run directory into ``work_dir`` (``_write_run``), then its disk usage into
    ``metrics.json``; a save failed on the file system becomes one ``SaveError`` line.

    Raises:
        SaveError: a full disk, a quota or a permission refused a write (the partial write removed).
    """
    from taskhead.engine.backbones import no_hf_progress_bars
    from taskhead.engine.checkpoints import disk_usage, disk_usage_text, explained_save_errors

    with no_hf_progress_bars(), explained_save_errors(work_dir, command=command):
        _write_run(work_dir, cfg, task, model, tokenizer, metrics, meta_extra=meta_extra, final_dir=run_dir)
        metrics["train"]["disk"] = disk_usage(work_dir)  # known once model/ is written
        atomic_write_json(work_dir / "metrics.json", metrics)
    info(disk_usage_text(metrics["train"]["disk"]))


def _show_metrics(metrics: dict[str, Any], run_dir: Path) -> None:
    """The eval and test metric tables, and what was tuned on the eval split."""
    from taskhead.evaluation import metrics_table

    tuned = "tuned_on_eval" in metrics
    for name in ("eval", "test"):
        if name in metrics:
            where = " - the split the thresholds were tuned on" if tuned and name == "eval" else ""
            print_table(metrics_table(metrics[name], f"{name} metrics ({run_dir}){where}"))
    if tuned:
        info(tuned_text(metrics))


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
    """Final metrics of the eval and test splits, through the scorer of the per-epoch evaluation
    (``evaluation.score_outputs``). Where the task tunes post-processing on the eval set
    (multi-label thresholds, the QA null threshold), the eval split is scored with the configured values
    (``eval_before_tuning``), tuned, and scored again: ``eval`` is then on the tuning set itself, and the
    test split is scored with the tuned values (held-out data)."""
    from taskhead.evaluation import score_outputs

    metrics: dict[str, Any] = {}
    for name in ("eval", "test"):
        if name not in splits:
            continue
        examples, feats = splits[name], features[name]
        outputs, loss = trainer.run_split(examples, feats, progress=f"scoring {name}")
        metrics[name] = score_outputs(task, outputs, feats, examples, loss)
        if name != "eval":
            continue
        tuned = task.fit_on_eval(outputs, feats, examples) if task.traits.fits_on_eval else {}
        if tuned:
            metrics["eval_before_tuning"] = metrics["eval"]
            metrics["eval"] = score_outputs(task, outputs, feats, examples, loss)
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
    from taskhead.workflows.model_card import model_card
    from taskhead.workflows.rundir import library_versions

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
        MANIFEST: written_files(run_dir),
        "versions": library_versions(),
        **meta_extra,
    }
    card = model_card(meta, metrics, task.model_card(), task.example_input)
    atomic_write_text(run_dir / "README.md", card)
    if (run_dir / CHECKPOINTS).is_dir():
        apply_umask(run_dir / CHECKPOINTS)
    atomic_write_json(run_dir / META_FILE, meta)
