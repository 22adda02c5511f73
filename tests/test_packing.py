"""Packed training batches (taskhead.engine.packing): the same logits and gradients as the padded batch, for
every supported head; the default choice of batching; refusals with a reason."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

import taskhead
from taskhead.engine.modeling import PooledClassifier
from taskhead.engine.packing import first_fit_decreasing, packed_forward, unsupported_reason
from taskhead.errors import ConfigError
from taskhead.workflows.train import Run

LENGTHS = [7, 3, 12, 5, 1, 9, 2, 12]
SIZES = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}


def padded_batch(*, pad: int, pairs: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.full((len(LENGTHS), max(LENGTHS)), pad)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(LENGTHS):
        ids[i, :n] = torch.randint(5, 100, (n,), generator=gen)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if pairs:  # second segment from token 3 on, as in a text pair
        batch["token_type_ids"] = (torch.arange(ids.shape[1]) >= 3).long().expand_as(ids) * mask
    return batch


def models(attention: str) -> dict[str, tuple[torch.nn.Module, dict]]:
    torch.manual_seed(0)
    bert = BertConfig(**SIZES, intermediate_size=64, num_labels=3, attn_implementation=attention)
    roberta = RobertaConfig(
        **SIZES,
        intermediate_size=64,
        num_labels=3,
        pad_token_id=1,
        type_vocab_size=1,
        attn_implementation=attention,
    )
    made = {
        "bert": (BertForSequenceClassification(bert), padded_batch(pad=0, pairs=True)),
        "roberta": (RobertaForSequenceClassification(roberta), padded_batch(pad=1, pairs=False)),
    }
    for how in ("cls", "mean", "max"):
        net = PooledClassifier(BertModel(bert), 3, pooling=how, hidden_size=16, dropout=0.1)
        made[how] = (net, padded_batch(pad=0, pairs=True))
    return made


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logits_and_gradients_equal_the_padded_batch(attention: str) -> None:
    for name, (model, batch) in models(attention).items():
        assert unsupported_reason(model) is None, name
        model.eval()  # no dropout: both ways compute the same function
        labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        grads = []
        for packed in (False, True):
            model.zero_grad()
            logits = (packed_forward(model, batch) if packed else model(**batch)).logits
            torch.nn.functional.cross_entropy(logits, labels).backward()
            grads.append(
                (logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None])
            )
        (plain, plain_grads), (packed, packed_grads) = grads
        torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-4, msg=name)
        assert len(plain_grads) == len(packed_grads)
        for a, b in zip(plain_grads, packed_grads, strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)


def test_packing_really_shares_rows() -> None:
    """Sequences do share rows (fewer rows than sequences), and a wrong mask would change the logits."""
    row, offset, rows = first_fit_decreasing(LENGTHS, max(LENGTHS))
    assert rows < len(LENGTHS)
    spans = sorted((r, o, o + n) for r, o, n in zip(row, offset, LENGTHS, strict=True))
    for (r1, _, end1), (r2, start2, _) in itertools.pairwise(spans):
        assert r1 != r2 or end1 <= start2  # no overlap
    assert all(o + n <= max(LENGTHS) for o, n in zip(offset, LENGTHS, strict=True))
    model, batch = models("sdpa")["bert"]
    model.eval()
    with torch.no_grad():
        alone = packed_forward(model, batch).logits
        one_row = {k: v[:2] for k, v in batch.items()}  # lengths 7 and 3 share a row of 12 ...
        one_row = {k: torch.nn.functional.pad(v, (0, 5), value=0) for k, v in one_row.items()}
        assert torch.allclose(packed_forward(model, one_row).logits, alone[:2], atol=1e-5)


def test_left_padded_batches_run_unpacked() -> None:
    model, batch = models("sdpa")["bert"]
    model.eval()
    flipped = {k: v.flip(1) for k, v in batch.items()}
    with torch.no_grad():
        assert torch.equal(packed_forward(model, flipped).logits, model(**flipped).logits)


def test_unsupported_models_are_named() -> None:
    config = DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=4, hidden_dim=64)
    reason = unsupported_reason(DistilBertForSequenceClassification(config))
    assert reason and "DistilBertForSequenceClassification" in reason and "distilbert" in reason
    bert = BertConfig(**SIZES, intermediate_size=64, attn_implementation="flex_attention")
    assert "flex_attention" in (unsupported_reason(BertForSequenceClassification(bert)) or "")


def batching(run_dir: Path) -> str:
    return json.loads((run_dir / "metrics.json").read_text())["train"]["batching"]


def test_packed_training_is_random_order_training(
    tiny_backbone: Path, sentiment_data, tmp_path: Path
) -> None:
    """Without dropout, packed training ends where training on the same random batches unpacked ends: the
    same batch order, the same gradients. Length grouping is a different run."""
    import shutil

    from transformers import AutoConfig

    backbone = tmp_path / "no-dropout"
    shutil.copytree(tiny_backbone, backbone)
    config = AutoConfig.from_pretrained(backbone)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(backbone)

    def run(name: str, **train: object) -> Run:
        settings = {"epochs": 8, "batch_size": 4, **train}
        config = tiny_config(
            backbone, sentiment_data, tmp_path / name, model={"head_dropout": 0.0}, train=settings
        )
        return taskhead.train(config, quiet=True)

    packed = run("packed")
    assert batching(packed.run_dir) == "packed"
    unpacked = run("random", packing=False, group_by_length=False)
    assert batching(unpacked.run_dir) == "random"
    assert packed.metrics["eval"]["loss"] == pytest.approx(unpacked.metrics["eval"]["loss"], abs=1e-4)
    assert packed.metrics["eval"]["loss"] < 0.69  # and it learned
    grouped = run("grouped", group_by_length=True)
    assert batching(grouped.run_dir) == "length-grouped"
    assert grouped.metrics["eval"]["loss"] != pytest.approx(packed.metrics["eval"]["loss"], abs=1e-4)
    # the saved model is the standard one: plain transformers loads it
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(packed.run_dir / "model").config.num_labels == 2


def test_packing_is_refused_where_it_cannot_run(tiny_generators: dict[str, Path], tmp_path: Path) -> None:
    from conftest import generation_records, write_jsonl

    data = {"train": write_jsonl(tmp_path / "train.jsonl", generation_records(8))}
    config = tiny_config(
        tiny_generators["t5"], data, tmp_path / "run", task={"name": "generation"}, train={"packing": True}
    )
    with pytest.raises(ConfigError, match=r"train\.packing: the generation task"):
        taskhead.train(config, quiet=True)
    assert not (tmp_path / "run" / "model").exists()
