"""Loading what ``taskhead serve`` serves: run directories (safetensors weights only) and embedding indexes.

Unpickling a ``*.bin`` / ``*.pt`` weight file can run arbitrary code, so a model directory that holds its
weights only as pickles is refused before anything is loaded; a model's own Python code
(``trust_remote_code``) runs only when the server is started with ``--trust-remote-code``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from taskhead.errors import ConfigError, UnsafeWeightsError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CPU_FORWARD_BATCH = 8  # measured on SST-2 with MiniLM: 1.7x the requests/s of 64 at concurrency 32


def parse_specs(specs: list[str], option: str) -> dict[str, Path]:
    """``NAME=DIR`` or ``DIR`` (named after the directory) into ``{name: directory}``.

    Raises:
        ConfigError: a name that is not a URL path segment, or a name given twice.
    """
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if sep and NAME.match(name) and not Path(spec).exists():
            path = Path(rest)
        else:
            path = Path(spec)
            name = path.resolve().name
        if not NAME.match(name):
            raise ConfigError(
                f"{option} {spec}: name {name!r} is not usable in a URL; give one as NAME={spec} "
                f"(letters, digits, '.', '_', '-')"
            )
        if name in out:
            raise ConfigError(
                f"{option} {spec}: the name {name!r} is taken by {out[name]}; name one of them: NAME={spec}"
            )
        out[name] = path
    return out


def check_safetensors(model_dir: Path) -> None:
    """Refuse a model directory where a folder holds pickle weight files and no ``*.safetensors``.

    Raises:
        UnsafeWeightsError: naming the pickle files and how to convert them.
    """
    pickles = sorted(p for p in model_dir.rglob("*") if p.suffix in PICKLE_SUFFIXES and p.is_file())
    for folder in sorted({p.parent for p in pickles}):
        if not any(folder.glob("*.safetensors")):
            names = ", ".join(p.name for p in pickles if p.parent == folder)
            raise UnsafeWeightsError(
                f"{folder}: weights only as pickle files ({names}) and no *.safetensors; the server loads "
                f"safetensors only (unpickling can run code from the file): re-save the model with "
                f"save_pretrained(..., safe_serialization=True) and serve it again"
            )


def check_remote_code(run_dir: Path, meta: dict[str, Any], trust_remote_code: bool) -> None:
    """Refuse a run that needs its model's own Python code unless the server was told to trust it."""
    if trust_remote_code:
        return
    asked = bool(meta.get("config", {}).get("model", {}).get("trust_remote_code"))
    config_file = run_dir / "model" / "config.json"
    custom = False
    if config_file.is_file():
        try:
            custom = "auto_map" in json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{config_file}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    if asked or custom:
        why = "was trained with model.trust_remote_code=true" if asked else "config.json names its own code"
        raise ConfigError(
            f"{run_dir}: the model {why}: serving it runs Python code from the model directory; "
            f"start the server with --trust-remote-code if you trust that code"
        )


def load_models(
    specs: list[str],
    *,
    backend: str = "torch",
    onnx_variant: str = "fp32",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Load each ``[NAME=]RUN_DIR`` as a Predictor, after the safety checks; ``{name: predictor}``.

    ``batch_size`` is the size of each forward pass inside a merged batch, which the Predictor sorts by
    length first; None: ``CPU_FORWARD_BATCH`` on the CPU (small passes pad little, and padding is what
    costs there), 64 on a GPU.
    """
    from taskhead.inference import Predictor
    from taskhead.rundir import read_meta

    models: dict[str, Any] = {}
    for name, run_dir in parse_specs(specs, "RUN_DIR").items():
        meta = read_meta(run_dir)
        check_safetensors(run_dir / "model")
        check_remote_code(run_dir, meta, trust_remote_code)
        predictor = Predictor(
            run_dir, device=device, precision=precision, backend=backend, onnx_variant=onnx_variant
        )
        predictor.batch_size = batch_size or (CPU_FORWARD_BATCH if predictor.device.type == "cpu" else 64)
        models[name] = predictor
    return models


def load_indexes(specs: list[str]) -> dict[str, Any]:
    """Load each ``[NAME=]INDEX_DIR`` with ``taskhead.retrieval.index.Index.load``; ``{name: index}``."""
    if not specs:
        return {}
    from taskhead.retrieval.index import Index

    return {name: Index.load(path) for name, path in parse_specs(specs, "--index").items()}
