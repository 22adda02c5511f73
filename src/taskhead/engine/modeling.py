"""Model pieces taskhead adds to a backbone when the standard transformers head does not fit.

``PooledClassifier`` is used for mean/max pooling or a hidden head layer. Its backbone is saved with
``save_pretrained`` and the head beside it in ``head.safetensors``; the default settings use the standard
``AutoModelForSequenceClassification`` instead, which plain transformers loads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from taskhead.engine.backbones import SAFE_LOADING

if TYPE_CHECKING:
    from transformers import PreTrainedModel

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
    net = auto_class.from_pretrained(
        backbone, trust_remote_code=model.trust_remote_code, **SAFE_LOADING, **kwargs
    )
    return fit_embeddings(net, tokenizer)


# transformers head classes whose output rows are labels (``id2label``), by the suffix of the class name
LABELLED_HEADS = {
    "ForSequenceClassification": "sequence-classification",
    "ForTokenClassification": "token-classification",
}
_UNNAMED = re.compile(r"LABEL_\d+")


def head_labels(config: Any) -> tuple[str | None, list[str]]:
    """The labelled head a model config declares (a ``LABELLED_HEADS`` suffix of its ``architectures``, or
    None for a bare backbone) and its labels in row order (``id2label``)."""
    archs = getattr(config, "architectures", None) or []
    kind = next((sfx for arch in archs for sfx in LABELLED_HEADS if arch.endswith(sfx)), None)
    id2label = getattr(config, "id2label", None) or {}
    return kind, [str(id2label[k]) for k in sorted(id2label, key=int)]


def _shown(labels: list[str]) -> str:
    return ", ".join(labels[:20]) + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "")


def check_same_labels(backbone: str, kind: str, head: list[str], labels: list[str]) -> None:
    """A fine-tuned head is reused only for the same label set (its rows are then matched by name).

    Raises:
        ConfigError: one line naming both label sets and the fix (``model.reuse_head=fresh``).
    """
    from taskhead.errors import ConfigError

    if set(head) == set(labels) and len(head) == len(labels):
        return
    unnamed = all(_UNNAMED.fullmatch(x) for x in head)
    note = " (unnamed: no label can be matched by name)" if unnamed else ""
    raise ConfigError(
        f"model.backbone: {backbone}: its fine-tuned {kind} head has the labels [{_shown(head)}]{note}, "
        f"the data has [{_shown(labels)}]; a head is reused only for the same label set "
        f"(model.reuse_head=by_name); set model.reuse_head=fresh to train a new head"
    )


def reorder_rows(layer: nn.Linear, head: list[str], labels: list[str]) -> None:
    """Permute the rows of a head's output layer from the ``head`` label order to the ``labels`` order."""
    order = [head.index(label) for label in labels]
    with torch.no_grad():
        layer.weight.copy_(layer.weight[order].clone())
        if layer.bias is not None:
            layer.bias.copy_(layer.bias[order].clone())


def _output_layer(net: Any, rows: int) -> nn.Linear | None:
    """The last Linear layer outside the backbone with one row per label: ``classifier`` (BERT),
    ``classifier.out_proj`` (RoBERTa, ELECTRA), ... (transformers names it differently per architecture)."""
    inside = {id(m) for m in net.base_model.modules()}
    found = [m for m in net.modules() if isinstance(m, nn.Linear) and id(m) not in inside]
    found = [m for m in found if m.out_features == rows]
    return found[-1] if found else None


def labelled_head(
    auto_class: Any, backbone: str, model: Any, tokenizer: Any, labels: list[str], task: str, **kwargs: Any
) -> Any:
    """The backbone with transformers' own head for ``labels`` (``AutoModelFor...Classification``).

    A backbone that already has a fine-tuned head of this kind (``model.reuse_head=by_name``, the default)
    keeps it, its rows reordered to ``labels`` by name (transformers would load it by position); any other
    labelled head, or ``reuse_head=fresh``, gives a new head (with a warning when one is dropped).

    Raises:
        ConfigError: the fine-tuned head's label set differs from ``labels`` (both named), or its output
            layer cannot be found.
    """
    from transformers import AutoConfig

    from taskhead.console import warn
    from taskhead.errors import ConfigError

    no_classification_head(model, task)
    common = {"trust_remote_code": model.trust_remote_code}
    ours = auto_class.__name__.removeprefix("AutoModel")  # "ForSequenceClassification", ...
    kind, head = head_labels(AutoConfig.from_pretrained(backbone, **common))
    names = {"id2label": dict(enumerate(labels)), "label2id": {x: i for i, x in enumerate(labels)}}
    if kind is None:
        net = auto_class.from_pretrained(
            backbone, num_labels=len(labels), **names, **kwargs, **common, **SAFE_LOADING
        )
    elif kind == ours and model.reuse_head == "by_name":
        check_same_labels(backbone, LABELLED_HEADS[kind], head, labels)
        net = auto_class.from_pretrained(
            backbone, **kwargs, **common, **SAFE_LOADING
        )  # its head, rows in its own order
        layer = _output_layer(net, len(head))
        if layer is None:
            raise ConfigError(
                f"model.backbone: {backbone}: the output layer of its fine-tuned head was not found, so its "
                f"rows cannot be matched to the labels by name; set model.reuse_head=fresh"
            )
        reorder_rows(layer, head, labels)
        net.config.update(names)
    else:
        why = "model.reuse_head=fresh" if kind == ours else f"a {task} model needs its own kind of head"
        warn(
            f"model.backbone: {backbone}: its fine-tuned {LABELLED_HEADS[kind]} head (labels "
            f"{_shown(head)}) is not used ({why}); a new head is trained"
        )
        net = fresh_head(auto_class, backbone, len(labels), names, {**kwargs, **common})
    return fit_embeddings(net, tokenizer)


def fresh_head(auto_class: Any, backbone: str, n: int, names: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """The backbone's weights under a newly initialised head (transformers loads any head whose weight
    names and shapes match, even one fine-tuned for other labels)."""
    loaded = auto_class.from_pretrained(
        backbone, num_labels=n, ignore_mismatched_sizes=True, **names, **kwargs, **SAFE_LOADING
    )
    remote = {"trust_remote_code": kwargs.get("trust_remote_code", False)}
    net = auto_class.from_config(loaded.config, **remote).to(loaded.dtype)
    net.base_model.load_state_dict(loaded.base_model.state_dict())
    return net


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
    """Backbone -> pooling -> dropout -> [Linear -> GELU -> dropout] -> Linear(num_labels).

    ``labels`` name the output rows; they are saved with the head, so that a run used as a backbone has
    its head matched to new data by label name.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        num_labels: int,
        *,
        pooling: str,
        hidden_size: int | None,
        dropout: float,
        labels: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.labels = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(num_labels)]
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
        meta = {"pooling": self.pooling, "labels": json.dumps(self.labels, ensure_ascii=False)}
        state = {k: v.contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(directory / HEAD_FILE), metadata=meta)

    def load_head(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self.head.load_state_dict(load_file(str(directory / HEAD_FILE)))


def saved_head(directory: Path) -> tuple[dict[str, torch.Tensor], str | None, list[str]]:
    """A saved ``PooledClassifier`` head: its weights, pooling and labels (unnamed where not recorded)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(directory / HEAD_FILE), framework="pt") as fh:
        meta = fh.metadata() or {}
    state = load_file(str(directory / HEAD_FILE))
    rows = next(reversed(state.values())).shape[0] if state else 0
    labels = json.loads(meta["labels"]) if "labels" in meta else [f"LABEL_{i}" for i in range(rows)]
    return state, meta.get("pooling"), labels


def pooled_classifier(backbone: str, model: Any, tokenizer: Any, labels: list[str]) -> PooledClassifier:
    """A ``PooledClassifier`` for ``labels`` on the backbone (``model.pooling``, ``model.head_hidden_size``).

    A backbone that is a pooled classifier run of the same layout keeps its head, rows matched to
    ``labels`` by name (``model.reuse_head=by_name``); ``reuse_head=fresh`` trains a new one (warned).

    Raises:
        ConfigError: the backbone's fine-tuned head has another label set or another layout (pooling,
            hidden layer), or is a transformers classification head, which a pooled model cannot take over.
    """
    from transformers import AutoConfig, AutoModel

    from taskhead.console import warn
    from taskhead.errors import ConfigError

    common = {"trust_remote_code": model.trust_remote_code}
    config = AutoConfig.from_pretrained(backbone, **common)
    dropout = model.head_dropout
    if dropout is None:
        dropout = getattr(config, "hidden_dropout_prob", 0.1)
    net = PooledClassifier(
        AutoModel.from_pretrained(backbone, **common, **SAFE_LOADING),
        len(labels),
        pooling=model.pooling,
        hidden_size=model.head_hidden_size,
        dropout=dropout,
        labels=labels,
    )
    kind, head = head_labels(config)
    fresh = model.reuse_head == "fresh"
    if (Path(backbone) / HEAD_FILE).is_file():
        state, pooling, head = saved_head(Path(backbone))
        shapes = {k: tuple(v.shape) for k, v in net.head.state_dict().items()}
        if fresh:
            warn(f"model.backbone: {backbone}: its fine-tuned head is not used (model.reuse_head=fresh)")
        else:
            check_same_labels(backbone, "pooled classification", head, labels)
            if pooling != model.pooling or {k: tuple(v.shape) for k, v in state.items()} != shapes:
                raise ConfigError(
                    f"model.backbone: {backbone}: its fine-tuned head has another layout (pooling "
                    f"{pooling}, other head_hidden_size) than model.pooling={model.pooling}, "
                    f"model.head_hidden_size={model.head_hidden_size}; use the same settings to reuse it, "
                    f"or model.reuse_head=fresh to train a new head"
                )
            net.head.load_state_dict(state)
            reorder_rows(cast(nn.Linear, net.head[-1]), head, labels)
    elif kind is not None:
        if kind == "ForSequenceClassification" and not fresh:
            raise ConfigError(
                f"model.backbone: {backbone}: its fine-tuned sequence-classification head (labels "
                f"{_shown(head)}) cannot be reused by a model.pooling={model.pooling} / head_hidden_size "
                f"head; set model.pooling=cls and model.head_hidden_size=null to reuse it, or "
                f"model.reuse_head=fresh to train a new head"
            )
        warn(f"model.backbone: {backbone}: its fine-tuned {LABELLED_HEADS[kind]} head is not used")
    fit_embeddings(net.encoder, tokenizer)
    return net
