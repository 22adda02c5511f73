"""``taskhead.engine.forward``: the one in-order batched forward loop, and its one precision rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import taskhead.engine.devices
from taskhead.data.collate import PadCollator
from taskhead.data.types import Features
from taskhead.engine.devices import native_precision
from taskhead.engine.forward import Batch, StepOutput, forward_in_order, forward_outputs

CPU = torch.device("cpu")


class Recorder(torch.nn.Module):
    """Logits = the sum of the input ids per row; records each batch's shape and the autocast state."""

    def __init__(self, per_token: bool = False) -> None:
        super().__init__()
        self.per_token = per_token
        self.shapes: list[tuple[int, ...]] = []
        self.autocast: list[bool] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        self.shapes.append(tuple(input_ids.shape))
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        assert not self.training  # the loop runs in eval mode
        ids = input_ids.float()
        logits = torch.stack([ids, -ids], -1) if self.per_token else ids.sum(1, keepdim=True)
        return {"logits": logits}


def _features(lengths: list[int], labelled: bool = False) -> Features:
    inputs = [
        {
            "input_ids": list(range(1, n + 1)),
            "attention_mask": [1] * n,
            **({"labels": n % 2} if labelled else {}),
        }
        for n in lengths
    ]
    return Features(inputs=inputs, example_index=list(range(len(lengths))))


def test_outputs_come_back_in_input_order_from_length_sorted_padded_batches() -> None:
    lengths = [3, 7, 1, 5, 2]
    model = Recorder().train()
    logits, loss = forward_outputs(
        model, _features(lengths), PadCollator(0), batch_size=2, device=CPU, precision="fp32"
    )
    assert logits.dtype == np.float32 and logits[:, 0].tolist() == [n * (n + 1) / 2 for n in lengths]
    assert loss is None
    assert model.shapes == [(2, 7), (2, 3), (1, 1)]  # longest first, each batch padded to its own longest
    assert model.training  # the model's mode is restored


def test_per_token_outputs_are_cut_to_each_feature_and_the_loss_is_a_mean_per_feature() -> None:
    lengths = [2, 4, 3]
    calls: list[int] = []

    def loss_fn(result: Any, labels: torch.Tensor) -> torch.Tensor:
        calls.append(len(labels))
        return labels.float().mean()  # labels n % 2: batch [4, 3] -> 0.5, batch [2] -> 0.0

    out, loss = forward_outputs(
        Recorder(per_token=True),
        _features(lengths, labelled=True),
        PadCollator(0),
        batch_size=2,
        device=CPU,
        loss_fn=loss_fn,
    )
    assert [o.shape for o in out] == [(2, 2), (4, 2), (3, 2)]
    assert out[0][:, 0].tolist() == [1.0, 2.0]
    assert calls == [2, 1] and loss == pytest.approx((0.5 * 2 + 0.0 * 1) / 3)


def test_a_step_gets_input_positions_and_weights_its_own_loss() -> None:
    texts = ["ccc", "a", "bb", "dddd"]
    seen: list[list[int]] = []

    def step(batch: Batch) -> StepOutput:
        seen.append(batch.index)
        assert batch.items == [texts[i] for i in batch.index]
        tokens = sum(len(t) for t in batch.items)
        return StepOutput([t.upper() for t in batch.items], loss=2.0 * tokens, weight=tokens)

    out, loss = forward_in_order(
        torch.nn.Identity(),
        texts,
        step,
        lengths=[len(t) for t in texts],
        batch_size=3,
        device=CPU,
        precision="fp32",
    )
    assert out == ["CCC", "A", "BB", "DDDD"] and loss == 2.0
    assert seen == [[3, 0, 2], [1]]
    with pytest.raises(ValueError, match="no collate"):
        forward_in_order(
            torch.nn.Identity(),
            texts,
            lambda b: StepOutput([b.padded()]),
            lengths=[1] * 4,
            batch_size=4,
            device=CPU,
            precision="fp32",
        )


@pytest.mark.parametrize("native", [True, False])
def test_one_precision_rule_autocasts_only_where_the_device_runs_it(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskhead.engine.devices, "bf16_supported", lambda device: native)
    assert native_precision(CPU, "bf16") == ("bf16" if native else "fp32")
    assert native_precision(CPU, "fp16") == "fp32"  # fp16 autocast only on CUDA
    assert native_precision(CPU, "fp32") == "fp32"
    model = Recorder()
    for precision in ("bf16", "fp16", "fp32"):
        forward_outputs(
            model, _features([2, 3]), PadCollator(0), batch_size=8, device=CPU, precision=precision
        )
    assert model.autocast == [native, False, False]


def test_predictor_precision_follows_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import taskhead.workflows.predict as predict

    monkeypatch.setattr(predict, "bf16_supported", lambda device: False)
    assert [predict.inference_precision(CPU, p) for p in ("auto", "bf16", "fp16", "fp32")] == ["fp32"] * 4
    monkeypatch.setattr(predict, "bf16_supported", lambda device: True)
    assert [predict.inference_precision(CPU, p) for p in ("auto", "bf16", "fp16")] == ["bf16", "bf16", "fp32"]
