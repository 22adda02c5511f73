"""HTTP serving of run directories and embedding indexes (FastAPI + uvicorn): ``taskhead serve``.

``create_app(models, indexes, settings)`` builds the application from loaded Predictors and indexes, so
tests drive it without a server. Importing this package imports neither FastAPI nor torch (the CLI lists
``taskhead.serving.cli``); the names below load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["ServeSettings", "create_app", "load_indexes", "load_models"]

_LAZY = {
    "ServeSettings": "taskhead.serving.settings",
    "create_app": "taskhead.serving.app",
    "load_models": "taskhead.serving.loading",
    "load_indexes": "taskhead.serving.loading",
}

if TYPE_CHECKING:
    from taskhead.serving.app import create_app
    from taskhead.serving.loading import load_indexes, load_models
    from taskhead.serving.settings import ServeSettings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taskhead.serving' has no attribute {name!r}")
