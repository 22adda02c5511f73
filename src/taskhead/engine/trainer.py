"""Glue to the Hugging Face Trainer: arguments from the config, length-grouped batches in shuffled order,
and evaluation through taskhead's own in-order forward pass and the task's metrics."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

from taskhead.engine.forward import forward_outputs
from taskhead.evaluation import scalar_metrics, score_outputs

if TYPE_CHECKING:
    from taskhead.config import RunConfig
    from taskhead.data.types import Example, Features
    from taskhead.tasks.base import TaskBase


class ShuffledLengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Batches of similar length (little padding) whose order is shuffled.

    A random permutation is cut into mega-batches of ``mega_batches`` batches; each mega-batch is sorted by
    length and cut into batches; then the order of all full batches is shuffled, and the one partial batch
    (if any) comes last so the DataLoader's batch boundaries stay aligned with ours. Unlike the Trainer's
    ``group_by_length`` sampler, the order is not longest-first within each mega-batch, which trained
    less accurately in short runs.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int, mega_batches: int = 50) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = batch_size * mega_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        full: list[list[int]] = []  # the batches of batch_size indices
        partial: list[list[int]] = []  # the shorter last batch of each mega-batch
        for start in range(0, len(perm), self.mega):
            chunk = sorted(perm[start : start + self.mega], key=lambda i: self.lengths[i])
            for j in range(0, len(chunk), self.batch_size):
                batch = chunk[j : j + self.batch_size]
                (full if len(batch) == self.batch_size else partial).append(batch)
        for b in torch.randperm(len(full), generator=g).tolist():
            yield from full[b]
        for batch in partial:
            yield from batch


class TimeBudgetCallback(TrainerCallback):
    """Stops training at the first step end after ``seconds`` of training (``train.max_minutes``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: float | None = None
        self.stopped_early = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.started is not None and time.perf_counter() - self.started >= self.seconds:
            control.should_training_stop = True
            self.stopped_early = True


class StderrProgressCallback(ProgressCallback):
    """The Trainer's progress bar, with its log lines on stderr: stdout stays clean for results."""

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            shown = {k: v for k, v in logs.items() if k != "total_flos"}
            if self.training_bar is not None:
                self.training_bar.write(str(shown), file=sys.stderr)
            else:
                print(shown, file=sys.stderr)


def route_logs_to_stderr(trainer: Trainer, *, quiet: bool) -> None:
    """Replace the Trainer's stdout printers: a stderr progress bar, or nothing when quiet (logs are still
    kept in ``trainer.state.log_history``, which goes to metrics.json)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if not quiet:
        trainer.add_callback(StderrProgressCallback())


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class TaskheadTrainer(Trainer):
    """A Trainer whose sampler and evaluation are taskhead's; everything else is the Trainer's own."""

    def __init__(
        self,
        *args: Any,
        task: TaskBase,
        train_features: Features | None,
        eval_split: tuple[list[Example], Features] | None,
        precision: str,
        group_by_length: bool,
        packing: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.task = task
        self.train_features = train_features
        self.eval_split = eval_split
        self.precision = precision
        self.packing = packing  # random batches computed on packed rows (taskhead.engine.packing)
        self.group_by_length = group_by_length and not packing
        # the command a failed checkpoint save tells the user to run again (with --resume) once fixed
        self.train_command = "taskhead train CONFIG"
        shifts = task.loss_shifts_labels
        if shifts is not None and self.compute_loss_func is not None:
            # The Trainer counts num_items_in_batch (the accumulated batch's targets) over labels[..., 1:]
            # only for models it recognises as causal LMs; the task's loss says whether it shifts labels.
            self._loss_shifts_labels = bool(shifts)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> None:
        # Resumed from the last checkpoint of a finished run whose max_steps ends mid-epoch: the Trainer
        # would run one optimizer step before it checks max_steps (and save it as checkpoint-N+1).
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """The Trainer's checkpoint save; a file-system failure (full disk, quota, permissions) removes the
        partial checkpoint and raises ``SaveError`` with one line saying what to do next."""
        try:
            super()._save_checkpoint(model, trial)
        except Exception as exc:
            from taskhead.engine import checkpoints as ck
            from taskhead.errors import SaveError

            folder = Path(self._get_output_dir(trial=trial))
            partial = folder / f"checkpoint-{self.state.global_step}"
            cause = ck.write_failure(exc, partial)
            if cause is None:
                raise
            removed = ck.remove_partial(partial)
            message = ck.save_error(
                partial,
                cause,
                what="a checkpoint",
                removed=removed,
                checkpoints=folder,
                command=self.train_command,
            )
            raise SaveError(message) from exc

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        if not self.group_by_length or self.train_features is None:
            return super()._get_train_sampler(train_dataset)
        return ShuffledLengthGroupedSampler(
            self.train_features.lengths(), self.args.per_device_train_batch_size, seed=self.args.seed
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if self.compute_loss_func is not None and "labels" in inputs and "decoder_input_ids" not in inputs:
            inputs = _with_decoder_inputs(self.accelerator.unwrap_model(model), inputs)
        # packed only on the unwrapped model (a DDP wrapper must see the forward call to reduce gradients)
        if not (self.packing and model.training and self.accelerator.unwrap_model(model) is model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from taskhead.engine.packing import packed_forward

        # packing is set only for tasks whose loss taskhead computes (train_setup passes it as
        # compute_loss_func)
        assert self.compute_loss_func is not None
        labels = inputs.pop("labels")
        with self.accelerator.autocast():
            outputs = packed_forward(model, inputs)
        loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def run_split(self, examples: list[Example], features: Features, *, progress: str | None = None) -> Any:
        """Outputs of the current model for a split, in input order, and the mean loss. A task with its own
        ``run_outputs`` (generation: generated token ids instead of logits) runs it instead."""
        run = self.task.run_outputs or forward_outputs
        assert self.model is not None  # TaskheadTrainer is built with a model (never with model_init)
        return run(
            self.model,
            features,
            self.data_collator,
            batch_size=self.args.eval_batch_size,
            device=self.args.device,
            precision=self.precision,
            loss_fn=self.task.loss,
            progress=progress,
        )

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        if self.eval_split is None:
            return {}
        examples, features = self.eval_split
        outputs, loss = self.run_split(examples, features)
        # the scorer of the final eval/test scoring too: the loss, and perplexity where the task reports one
        metrics = score_outputs(self.task, outputs, features, examples, loss)
        flat = {f"{metric_key_prefix}_{k}": v for k, v in scalar_metrics(metrics).items()}
        self.log(flat)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, flat)
        return flat


def _with_decoder_inputs(model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """An encoder-decoder model builds its decoder inputs from ``labels``; the Trainer hands labels to the
    task's loss function instead of the model, so build them here (the model's own shift rule)."""
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return inputs
    prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    if prepare is None:
        return inputs
    return {**inputs, "decoder_input_ids": prepare(labels=inputs["labels"])}


def training_arguments(
    config: RunConfig,
    *,
    output_dir: Path,
    has_eval: bool,
    device: torch.device,
    precision: str,
    metric: str,
    greater_is_better: bool,
    quiet: bool,
) -> TrainingArguments:
    """The Trainer's arguments; ``metric`` (logged as ``eval_<metric>``) and its direction pick the
    checkpoint that is loaded at the end when evaluation and saving share a schedule."""
    t = config.train
    eval_strategy = t.eval_strategy if has_eval else "no"
    best = eval_strategy != "no" and t.save_strategy == eval_strategy
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device.type == "cpu",
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps if t.save_steps is not None else 500,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=best,
        metric_for_best_model=f"eval_{metric}" if best else None,
        greater_is_better=greater_is_better if best else None,
        logging_steps=t.logging_steps,
        report_to="none",
        dataloader_num_workers=t.num_workers,
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=quiet,
        save_only_model=False,
    )
