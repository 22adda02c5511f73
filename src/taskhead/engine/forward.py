"""The one in-order batched forward loop of evaluation, prediction, embedding and retrieval.

``forward_in_order`` sorts the inputs by length so that each batch is padded only to its own longest input
(the caller's ``collate``), runs the caller's per-batch ``step`` under ``torch.inference_mode`` and autocast,
and puts every output back in input order: the caller never sees the sorted order.

One precision rule for every forward pass (``engine.devices.native_precision``): bf16 autocast where the
device runs bf16 natively (CUDA with bf16, CPUs with AVX-512 BF16 or AMX), fp16 autocast on CUDA, fp32
otherwise. Callers decide what to ask for (prediction: ``auto``; evaluation: the precision the run trained
in), the loop never emulates a precision the device lacks.

``forward_outputs`` is the step of models that return logits (every task without its own ``run_outputs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from taskhead.engine import devices

if TYPE_CHECKING:
    from taskhead.data.types import Features


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length, longest first (the first batch shows the peak memory)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def progress_bar(description: str | None, total: int) -> Any:
    """A tqdm bar of ``total`` inputs titled ``description``; None when ``description`` is None."""
    if description is None:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="ex", leave=False, disable=None)


@dataclass
class Batch:
    """One length-sorted batch as a step sees it.

    Attributes:
        index: the input positions of the batch's rows, in batch order (longest first).
        items: the inputs at those positions.
        device: where the model runs.
    """

    index: list[int]
    items: list[Any]
    device: torch.device
    collate: Callable[[list[Any]], Mapping[str, Any]] | None = field(default=None, repr=False)

    def padded(self) -> dict[str, Any]:
        """The items collated (padded to this batch's longest) with every tensor moved to ``device``.

        Raises:
            ValueError: the loop was given no ``collate``.
        """
        if self.collate is None:
            raise ValueError("forward_in_order: a step asked for a padded batch, but no collate was given")
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in self.collate(self.items).items()}


@dataclass
class StepOutput:
    """What a step gives back for one batch.

    Attributes:
        outputs: one output per row, in batch order (anything: an array row, a list, a tuple).
        loss: the batch's loss summed over ``weight`` units (examples or target tokens); 0 when unlabelled.
        weight: how many units ``loss`` sums over; the loop returns ``sum(loss) / sum(weight)``.
    """

    outputs: Sequence[Any]
    loss: float = 0.0
    weight: float = 0


def forward_in_order(
    model: Any,
    inputs: Sequence[Any],
    step: Callable[[Batch], StepOutput],
    *,
    lengths: Sequence[int],
    batch_size: int,
    device: torch.device,
    precision: str,
    collate: Callable[[list[Any]], Mapping[str, Any]] | None = None,
    progress: str | None = None,
) -> tuple[list[Any], float | None]:
    """Run ``step`` over length-sorted batches of ``inputs``; outputs in input order and the mean loss.

    Args:
        model: switched to eval mode for the loop and back to its previous mode after.
        inputs: what the batches hold (features, texts); ``lengths[i]`` is the length of ``inputs[i]``.
        step: computes one batch (``Batch.padded()`` gives the collated tensors on ``device``).
        batch_size: rows per batch.
        device: where the model runs.
        precision: ``fp32``, ``bf16`` or ``fp16`` asked for; autocast uses it only where the device runs it
            natively (``engine.devices.native_precision``), else fp32.
        collate: pads a list of inputs into tensors (for ``Batch.padded``).
        progress: a progress bar title, or None for no bar.

    Returns:
        ``(outputs, loss)``: ``outputs[i]`` is the step's output for ``inputs[i]``; ``loss`` is the summed
        step losses over their summed weights, None when no step had a weight.
    """
    n = len(inputs)
    outputs: list[Any] = [None] * n
    loss_sum, weight = 0.0, 0.0
    was_training = model.training
    model.eval()
    bar = progress_bar(progress, n)
    autocast = devices.autocast_context(device, devices.native_precision(device, precision))
    try:
        with torch.inference_mode(), autocast:
            for idx in length_sorted_batches(lengths, batch_size):
                result = step(Batch(idx, [inputs[i] for i in idx], device, collate))
                for i, out in zip(idx, result.outputs, strict=True):
                    outputs[i] = out
                loss_sum += result.loss
                weight += result.weight
                if bar is not None:
                    bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return outputs, (loss_sum / weight if weight else None)


def forward_outputs(
    model: torch.nn.Module,
    features: Features,
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    loss_fn: Callable[..., torch.Tensor] | None = None,
    progress: str | None = None,
) -> tuple[np.ndarray | list[np.ndarray], float | None]:
    """Logits for every feature, in input order, and the mean loss per feature when features carry labels.

    Per-sequence logits come back as one float32 array ``[features, ...]``; per-token logits (``[batch,
    tokens, labels]``) as a list with one ``[tokens, labels]`` array per feature, cut to the feature's own
    length. Span logits (``start_logits``, ``end_logits``) count as per-token ``[tokens, 2]``.
    """

    def step(batch: Batch) -> StepOutput:
        padded = batch.padded()
        labels = padded.pop("labels", None)
        result = model(**padded)
        rows = _logits(result).cpu().numpy()
        if rows.ndim == 3:
            out: Sequence[Any] = [rows[j, : len(f["input_ids"])] for j, f in enumerate(batch.items)]
        else:
            out = list(rows)
        if loss_fn is None or labels is None:
            return StepOutput(out)
        return StepOutput(out, float(loss_fn(result, labels)) * len(batch.index), len(batch.index))

    n = len(features.inputs)
    outputs, loss = forward_in_order(
        model,
        features.inputs,
        step,
        lengths=features.lengths(),
        batch_size=batch_size,
        device=device,
        precision=precision,
        collate=collate,
        progress=progress,
    )
    if outputs and outputs[0].ndim == 2:  # per-token: one array per feature, its own length
        return outputs, loss
    if not outputs:
        return np.empty((0,), dtype=np.float32), loss
    stacked = np.empty((n, *outputs[0].shape), dtype=np.float32)
    for i, row in enumerate(outputs):
        stacked[i] = row
    return stacked, loss


def _logits(result: Any) -> torch.Tensor:
    """The scores as one tensor: ``logits``, or span start and end logits as ``[batch, tokens, 2]``."""
    if "logits" in result:
        return result["logits"].float()
    return torch.stack([result["start_logits"], result["end_logits"]], dim=-1).float()
