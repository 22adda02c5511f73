"""``taskhead serve``: an HTTP server (FastAPI + uvicorn) for run directories and embedding indexes.

Imported when the CLI builds its parser, so it imports neither FastAPI, uvicorn nor torch at import time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``taskhead serve`` to the CLI."""
    from taskhead.serving.settings import ServeSettings

    d = ServeSettings()
    p = subparsers.add_parser(
        "serve",
        help="serve runs and indexes over HTTP (POST /v1/models/NAME/predict, OpenAPI docs at /docs)",
        description="Serve run directories (NAME=RUN_DIR, or RUN_DIR named after its directory) and "
        "embedding indexes over HTTP. Concurrent requests to a model share forward passes.",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run directory, or NAME=RUN_DIR")
    p.add_argument("--index", action="append", default=[], metavar="INDEX_DIR", help="index, or NAME=DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--max-batch",
        type=_positive_int,
        default=d.max_batch,
        help=f"most inputs merged into one batch (default: {d.max_batch})",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        help="inputs per forward pass within a merged batch, sorted by length (default: 8 on CPU, 64 on GPU)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=d.batch_wait_ms,
        help=f"how long a request waits for others to join its batch (default: {d.batch_wait_ms:g})",
    )
    p.add_argument("--no-micro-batching", action="store_true", help="run each request alone")
    p.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=d.max_body_bytes,
        help=f"larger bodies get 413 (default: {d.max_body_bytes})",
    )
    p.add_argument(
        "--max-batch-items",
        type=_positive_int,
        default=d.max_batch_items,
        help=f"more inputs or queries in a request get 413 (default: {d.max_batch_items})",
    )
    p.add_argument(
        "--max-text-chars",
        type=_positive_int,
        default=d.max_text_chars,
        help=f"longest string in an input, in characters (default: {d.max_text_chars})",
    )
    p.add_argument(
        "--on-long",
        default=d.on_long,
        choices=["truncate", "reject"],
        help="inputs over --max-text-chars or over the model's max_length: cut and flag them, or answer 422 "
        "(default: truncate)",
    )
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model's own Python code")
    p.add_argument(
        "--backend", default="torch", choices=["torch", "onnx"], help="forward pass engine (default: torch)"
    )
    p.add_argument("--onnx-variant", default="fp32", choices=["fp32", "int8"], help="with --backend onnx")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--precision",
        default="auto",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="forward pass precision (default auto: bf16 where the device runs it natively, else fp32)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return {"serve": _cmd_serve}


def _cmd_serve(args: argparse.Namespace) -> int:
    from taskhead.errors import ConfigError
    from taskhead.serving.settings import ServeSettings

    if not args.run_dirs and not args.index:
        raise ConfigError("serve: nothing to serve; pass at least one RUN_DIR or --index INDEX_DIR")
    settings = ServeSettings(
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        micro_batching=not args.no_micro_batching,
        max_body_bytes=args.max_body_bytes,
        max_batch_items=args.max_batch_items,
        max_text_chars=args.max_text_chars,
        on_long=args.on_long,
    )
    from taskhead.serving.loading import load_indexes, load_models

    models = load_models(
        args.run_dirs,
        backend=args.backend,
        onnx_variant=args.onnx_variant,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        trust_remote_code=args.trust_remote_code,
    )
    indexes = load_indexes(args.index, trust_remote_code=args.trust_remote_code)
    import uvicorn

    from taskhead.serving.app import create_app

    app = create_app(models, indexes, settings)
    served = ", ".join([*(f"model {n}" for n in models), *(f"index {n}" for n in indexes)])
    print(f"serving {served} on http://{args.host}:{args.port} (API docs: /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
