"""``taskhead serve``: an HTTP server (FastAPI + uvicorn) for run directories and embedding indexes.

Imported when the CLI builds its parser, so it imports neither FastAPI, uvicorn nor torch at import time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

MAX_HEADER_BYTES = 64 * 1024  # request line and headers; over it: 400 from h11


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
    _add_batching_options(p, d)
    _add_limit_options(p, d)
    _add_backend_options(p)
    return {"serve": _cmd_serve}


def _add_batching_options(p: argparse.ArgumentParser, d: Any) -> None:
    """Micro-batching: how many inputs merge into one batch, the forward batch size, the wait."""
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


def _add_limit_options(p: argparse.ArgumentParser, d: Any) -> None:
    """Request limits: body size, inputs per request, text length (and what a long input gets), timeouts."""
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
    p.add_argument(
        "--body-timeout",
        type=float,
        default=d.body_timeout_s,
        metavar="SECONDS",
        help=f"a request body not in after this long: 408, connection closed (default: {d.body_timeout_s:g})",
    )
    p.add_argument(
        "--keep-alive-timeout",
        type=_positive_int,
        default=d.keep_alive_s,
        metavar="SECONDS",
        help="idle keep-alive connections, and requests whose headers are not in after this long, are closed "
        f"(default: {d.keep_alive_s})",
    )


def _add_backend_options(p: argparse.ArgumentParser) -> None:
    """The forward pass: remote code consent, backend, device, precision; and the log level."""
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
        help="forward pass precision (default auto: bf16 where the device runs it natively, else fp32; "
        "bf16 and fp16 run only where the device runs them natively, else fp32)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


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
        body_timeout_s=args.body_timeout,
        keep_alive_s=args.keep_alive_timeout,
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
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        http=_h11_with_header_timeout(),
        timeout_keep_alive=settings.keep_alive_s,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )
    return 0


def _h11_with_header_timeout() -> type:
    """uvicorn's h11 protocol with a timer on each request line and headers: a client that has not sent them
    all ``--keep-alive-timeout`` seconds after the connection opened (or after the previous response) is
    disconnected. uvicorn's own keep-alive timer stops at the first byte received, so a request trickled in
    a byte at a time would hold the connection for ever. The body is bounded by ``--body-timeout``
    (taskhead.serving.body.BodyTimeout)."""
    import asyncio

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11WithHeaderTimeout(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
                self._stop_header_timer()
            elif self._header_timer is None:  # a new request began after a body read to its end late
                self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._stop_header_timer()
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._header_timer = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

    return H11WithHeaderTimeout
