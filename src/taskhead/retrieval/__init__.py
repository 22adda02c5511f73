"""Embedding indexes and retrieval: build, save, load, search and extend an index; retrieval metrics;
BEIR / TREC readers; cross-encoder re-ranking and hard-negative mining.

Importing this package is light; ``Index`` and ``Encoder`` load torch and FAISS when used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["Doc", "Encoder", "Index", "read_corpus"]

_LAZY = {
    "Index": "taskhead.retrieval.index",
    "Encoder": "taskhead.retrieval.encoder",
    "Doc": "taskhead.retrieval.corpus",
    "read_corpus": "taskhead.retrieval.corpus",
}

if TYPE_CHECKING:
    from taskhead.retrieval.corpus import Doc, read_corpus
    from taskhead.retrieval.encoder import Encoder
    from taskhead.retrieval.index import Index


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taskhead.retrieval' has no attribute {name!r}")
