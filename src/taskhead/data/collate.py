"""Dynamic padding: a batch is padded to its own longest sequence, not to max_length."""

from __future__ import annotations

from typing import Any

import torch


class PadCollator:
    """Pads ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (right side) and batches ``labels``.

    Labels: an int per example (classes); a float list per example (multi-label vectors, stacked); an int
    list with one label per token (as long as ``input_ids``; padded with -100, which the loss ignores); or a
    short int list per example (answer start and end, stacked).
    """

    def __init__(
        self, pad_token_id: int, *, pad_to_multiple_of: int | None = None, sequence_labels: bool = False
    ) -> None:
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of
        self.sequence_labels = sequence_labels  # labels are a token sequence of their own length (seq2seq)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        batch: dict[str, torch.Tensor] = {}
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
        for key, pad in pads.items():
            if key not in features[0]:
                continue
            out = torch.full((len(features), width), pad, dtype=torch.long)
            for i, f in enumerate(features):
                out[i, : len(f[key])] = torch.as_tensor(f[key], dtype=torch.long)
            batch[key] = out
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            first = labels[0]
            if self.sequence_labels:
                longest = max(len(row) for row in labels)
                if self.multiple:
                    longest = -(-longest // self.multiple) * self.multiple
                out = torch.full((len(features), longest), -100, dtype=torch.long)
                for i, row in enumerate(labels):
                    out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
                batch["labels"] = out
                return batch
            per_token = isinstance(first, list) and len(first) == len(features[0]["input_ids"])
            if per_token and any(isinstance(x, int) for x in first):
                out = torch.full((len(features), width), -100, dtype=torch.long)
                for i, row in enumerate(labels):
                    out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
                batch["labels"] = out
            else:
                floats = isinstance(first, list) and any(isinstance(x, float) for x in first)
                dtype = torch.float32 if floats else torch.long  # int lists: several targets (span ends)
                batch["labels"] = torch.tensor(labels, dtype=dtype)
        return batch
