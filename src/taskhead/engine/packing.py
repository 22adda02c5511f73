"""Sequence packing for training sequence-level heads: a randomly drawn batch, computed without padding.

Length-grouped batches save padding but change what the optimizer sees: every batch holds sentences of one
length, and on short runs that cost accuracy (SST-2, 63 steps: 1-2 points against random batches, see
benchmarks/README.md). Packing keeps the random batch and removes the padding instead: the padded batch
the collator made is re-laid into rows of the same width, several sequences per row (first-fit
decreasing), each sequence attending only to itself (a block-diagonal attention mask) with its position
ids restarting at 0. After the encoder the token states are gathered back to the padded layout and the
model's own head runs on them, so the logits are those of the unpacked batch (up to floating-point
rounding) and the saved model is unchanged.

Supported: encoders of the BERT and RoBERTa families with ``sdpa`` or ``eager`` attention, under
transformers' standard sequence-classification head or taskhead's ``PooledClassifier``
(``unsupported_reason`` says why another model is not).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

BERT_LIKE = {"bert"}
ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert"}  # position ids start after padding_idx
ATTENTION = {"sdpa", "eager"}


def _parts(model: Any) -> tuple[Any, str] | None:
    """The encoder of a packable model and the kind of head on top (``pooled``, ``bert``, ``roberta``)."""
    from taskhead.engine.modeling import PooledClassifier

    if isinstance(model, PooledClassifier):
        return model.encoder, "pooled"
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind in BERT_LIKE and type(model).__name__ == "BertForSequenceClassification":
        return model.bert, "bert"
    if kind in ROBERTA_LIKE and type(model).__name__.endswith("ForSequenceClassification"):
        return model.roberta, "roberta"
    return None


def unsupported_reason(model: Any) -> str | None:
    """None when ``packed_forward`` can run ``model``; otherwise why not, for a message."""
    parts = _parts(model)
    if parts is None:
        kind = getattr(getattr(model, "config", None), "model_type", "?")
        return (
            f"{type(model).__name__} (model type {kind}) is not packable: packing supports the BERT and "
            f"RoBERTa families with a sequence-classification head"
        )
    encoder, _ = parts
    impl = getattr(encoder.config, "_attn_implementation", None)
    if impl not in ATTENTION:
        return f"attention implementation {impl!r} takes no block-diagonal mask (packing needs sdpa or eager)"
    if encoder.config.model_type not in BERT_LIKE | ROBERTA_LIKE:
        return f"the encoder's model type {encoder.config.model_type} is not in the BERT or RoBERTa families"
    return None


def first_fit_decreasing(lengths: list[int], width: int) -> tuple[list[int], list[int], int]:
    """Place sequences of ``lengths`` into rows of ``width`` tokens, longest first, each into the first row
    with room. Returns each sequence's row and offset, and the number of rows."""
    row, offset = [0] * len(lengths), [0] * len(lengths)
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, filled in enumerate(used):
            if filled + lengths[i] <= width:
                row[i], offset[i], used[r] = r, filled, filled + lengths[i]
                break
        else:
            row[i], offset[i] = len(used), 0
            used.append(lengths[i])
    return row, offset, len(used)


def packed_forward(model: Any, inputs: dict[str, torch.Tensor]) -> SequenceClassifierOutput:
    """The logits of ``model`` for a right-padded batch (``input_ids``, ``attention_mask``, optional
    ``token_type_ids``), computed on packed rows. A batch not padded on the right runs unpacked."""
    encoder, head = _parts(model)  # type: ignore[misc]
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    n, length = ids.shape
    device = ids.device
    lengths = mask.sum(1)
    pos = torch.arange(length, device=device)[None, :].expand(n, length)
    valid = mask.bool()
    if not torch.equal(valid, pos < lengths[:, None]):
        return model(**inputs)
    # rows as wide as the padded batch: wider rows (up to twice) measured no faster on MiniLM / SST-2
    width = length
    row, offset, rows = first_fit_decreasing(lengths.tolist(), width)
    seq = torch.arange(n, device=device)[:, None].expand(n, length)
    start = torch.tensor(row, device=device) * width + torch.tensor(offset, device=device)
    dest = (start[:, None] + pos)[valid]  # where each real token goes in the flattened packed rows

    def packed(values: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((rows * width,), fill, dtype=values.dtype, device=device)
        out[dest] = values[valid]
        return out.view(rows, width)

    pad_id = encoder.config.pad_token_id if encoder.config.pad_token_id is not None else 0
    first_position = pad_id + 1 if encoder.config.model_type in ROBERTA_LIKE else 0
    segment = packed(seq, -1)  # padding positions share segment -1: they attend to each other, never to text
    block = segment[:, :, None] == segment[:, None, :]
    if encoder.config._attn_implementation == "eager":
        block = torch.zeros(block.shape, device=device).masked_fill(~block, torch.finfo(torch.float32).min)
    kwargs = {}
    if inputs.get("token_type_ids") is not None:
        kwargs["token_type_ids"] = packed(inputs["token_type_ids"], 0)
    hidden = encoder(
        input_ids=packed(ids, pad_id),
        attention_mask=block[:, None],
        position_ids=packed(pos + first_position, first_position),
        **kwargs,
    ).last_hidden_state
    # back to the padded layout; padding positions take slot 0's state (masked by the heads that look)
    index = torch.where(valid, start[:, None] + pos, torch.zeros_like(pos)).reshape(-1)
    states = hidden.reshape(rows * width, -1).index_select(0, index).view(n, length, -1)
    if head == "pooled":
        from taskhead.engine.modeling import pool

        logits = model.head(pool(states, mask, model.pooling))
    elif head == "bert":
        pooled = encoder.pooler(states) if encoder.pooler is not None else states[:, 0]
        logits = model.classifier(model.dropout(pooled))
    else:
        logits = model.classifier(states)
    return SequenceClassifierOutput(logits=logits)
