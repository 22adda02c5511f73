"""taskhead: fine-tune pretrained transformers on downstream NLP tasks, evaluate them, serve predictions.

``import taskhead`` is light: torch and transformers load on first use of ``train`` or ``load``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "ConfigError",
    "DataError",
    "Index",
    "Predictor",
    "Run",
    "RunConfig",
    "RunDirError",
    "TaskheadError",
    "__version__",
    "load",
    "load_config",
    "train",
    "validate",
]

_LAZY = {
    "train": "taskhead.workflows.train",
    "Run": "taskhead.workflows.train",
    "Predictor": "taskhead.workflows.predict",
    "validate": "taskhead.workflows.validate",
    "load_config": "taskhead.config",
    "RunConfig": "taskhead.config",
    "TaskheadError": "taskhead.errors",
    "ConfigError": "taskhead.errors",
    "DataError": "taskhead.errors",
    "BackboneError": "taskhead.errors",
    "RunDirError": "taskhead.errors",
    "Index": "taskhead.retrieval.index",
}

if TYPE_CHECKING:
    from taskhead.config import RunConfig, load_config
    from taskhead.errors import BackboneError, ConfigError, DataError, RunDirError, TaskheadError
    from taskhead.retrieval.index import Index
    from taskhead.workflows.predict import Predictor
    from taskhead.workflows.train import Run, train
    from taskhead.workflows.validate import validate


def load(run_dir: Any, **kwargs: Any) -> Predictor:
    """Load a finished run directory as a Predictor (``.predict(texts)``, ``.evaluate(data)``).

    Keyword arguments go to ``Predictor``: ``device``, ``batch_size``, ``precision`` (``auto``, the
    default: bf16 where the device runs it natively, else fp32; or ``fp32``, ``bf16``, ``fp16``),
    ``progress``, and ``backend="onnx"`` to run the forward pass with ONNX Runtime on the CPU from
    ``taskhead export RUN --format onnx`` (``onnx_variant="fp32"`` or ``"int8"``, ``onnx_dir`` when the
    export is not in ``RUN/onnx``), ``trust_remote_code=True`` to run the model's own Python code (a run
    saved with ``model.trust_remote_code: true`` is refused without it). Weights load from safetensors
    only: a run holding only ``pytorch_model.bin`` raises ``UnsafeWeightsError``.
    """
    from taskhead.workflows.predict import Predictor

    return Predictor(run_dir, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taskhead' has no attribute {name!r}")
