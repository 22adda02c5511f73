"""Loading what ``taskhead serve`` serves: run directories (safetensors weights only) and embedding indexes.

Unpickling a ``*.bin`` / ``*.pt`` weight file can run arbitrary code, so a model directory that holds its
weights only as pickles is refused before anything is loaded; a model's own Python code
(``trust_remote_code``) runs only when the server is started with ``--trust-remote-code``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from taskhead.engine.backbones import PICKLE_SUFFIXES, check_remote_code, check_safetensors
from taskhead.errors import ConfigError

__all__ = ["PICKLE_SUFFIXES", "check_remote_code", "check_safetensors", "load_indexes", "load_models"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
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
    from taskhead.workflows.predict import Predictor
    from taskhead.workflows.rundir import read_meta

    models: dict[str, Any] = {}
    for name, run_dir in parse_specs(specs, "RUN_DIR").items():
        check_safetensors(run_dir / "model", loader="the server", again="serve it again")
        check_remote_code(
            run_dir,
            read_meta(run_dir),
            trust_remote_code,
            consent="start the server with --trust-remote-code",
        )
        predictor = Predictor(  # checks again for the Python API; the lines above word it for the server
            run_dir,
            device=device,
            precision=precision,
            backend=backend,
            onnx_variant=onnx_variant,
            trust_remote_code=trust_remote_code,
        )
        predictor.batch_size = batch_size or (CPU_FORWARD_BATCH if predictor.device.type == "cpu" else 64)
        models[name] = predictor
    return models


def load_indexes(specs: list[str], *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Load each ``[NAME=]INDEX_DIR`` with ``taskhead.retrieval.index.Index.load``; ``{name: index}``.

    ``trust_remote_code`` applies to each index's query model when it loads."""
    if not specs:
        return {}
    from taskhead.retrieval.index import Index

    return {
        name: Index.load(path, trust_remote_code=trust_remote_code)
        for name, path in parse_specs(specs, "--index").items()
    }
