"""Model pieces taskhead adds to a backbone when the standard transformers head does not fit.

``PooledClassifier`` is used for mean/max pooling or a hidden head layer. Its backbone is saved with
``save_pretrained`` and the head beside it in ``head.safetensors``; the default settings use the standard
``AutoModelForSequenceClassification`` instead, which plain transformers loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

HEAD_FILE = "head.safetensors"


def fit_embeddings(net: Any, tokenizer: Any) -> Any:
    """Resize the input embeddings when the tokenizer grew (extra special tokens); returns ``net``."""
    if len(tokenizer) > net.get_input_embeddings().num_embeddings:
        net.resize_token_embeddings(len(tokenizer))
    return net


def no_classification_head(model: Any, task: str) -> None:
    """Pooling and a hidden head layer are classification settings; set for another task, a config error."""
    from taskhead.errors import ConfigError

    if model.pooling != "cls" or model.head_hidden_size is not None:
        setting = "model.pooling" if model.pooling != "cls" else "model.head_hidden_size"
        raise ConfigError(f"{setting}: applies to classification only; {task} uses the standard head")


def standard_head(
    auto_class: Any, backbone: str, model: Any, tokenizer: Any, task: str, **kwargs: Any
) -> Any:
    """The backbone with transformers' own head for a task (``AutoModelFor...``), embeddings fitted to the
    tokenizer (after ``no_classification_head``)."""
    no_classification_head(model, task)
    net = auto_class.from_pretrained(backbone, trust_remote_code=model.trust_remote_code, **kwargs)
    return fit_embeddings(net, tokenizer)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool token vectors (batch, seq, dim) into one vector per sequence, ignoring padding."""
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if how == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if how == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    raise ValueError(f"model.pooling: expected cls, mean or max, got {how!r}")


class PooledClassifier(nn.Module):
    """Backbone -> pooling -> dropout -> [Linear -> GELU -> dropout] -> Linear(num_labels)."""

    def __init__(
        self, encoder: nn.Module, num_labels: int, *, pooling: str, hidden_size: int | None, dropout: float
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        width = encoder.config.hidden_size
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_size:
            layers += [nn.Linear(width, hidden_size), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, num_labels))
        self.head = nn.Sequential(*layers)
        self.config = encoder.config  # lets the Trainer and the predictor read model settings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return SequenceClassifierOutput(logits=self.head(pool(hidden, attention_mask, self.pooling)))

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        self.encoder.save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(directory / HEAD_FILE))

    def load_head(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
