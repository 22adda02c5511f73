"""The server's limits and batching settings, shared by the CLI, the app factory and the batcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from taskhead.errors import ConfigError


@dataclass(frozen=True)
class ServeSettings:
    """How ``taskhead serve`` batches requests and which requests it refuses.

    Attributes:
        max_batch: most inputs merged into one forward pass (a larger request still runs, alone).
        batch_wait_ms: how long the first queued request waits for others to share its forward pass.
        micro_batching: merge concurrent requests to a model; off: each request runs alone.
        max_body_bytes: larger request bodies get 413.
        max_batch_items: requests with more inputs (or queries) get 413.
        max_text_chars: longest string in an input, in characters; longer ones follow ``on_long``.
        on_long: ``truncate`` (cut, predict, flag ``"truncated": true``) or ``reject`` (422 naming the
            input) for texts over ``max_text_chars`` and inputs the model would truncate to its max_length.
        body_timeout_s: seconds a request's body may take to arrive (from the first read); later: 408 and
            the connection is closed.
        keep_alive_s: seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``),
            and a request line and headers may take to arrive.
    """

    max_batch: int = 64
    batch_wait_ms: float = 5.0
    micro_batching: bool = True
    max_body_bytes: int = 1 << 20
    max_batch_items: int = 256
    max_text_chars: int = 100_000
    on_long: Literal["truncate", "reject"] = "truncate"
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_body_bytes", "max_batch_items", "max_text_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
        if not isinstance(self.keep_alive_s, int) or self.keep_alive_s < 1:
            raise ConfigError(f"keep_alive_s: expected a positive integer, got {self.keep_alive_s!r}")
        if not 0 < self.body_timeout_s < float("inf"):  # also refuses NaN
            raise ConfigError(
                f"body_timeout_s: expected a positive finite number, got {self.body_timeout_s!r}"
            )
        if self.batch_wait_ms < 0:
            raise ConfigError(f"batch_wait_ms: expected 0 or more, got {self.batch_wait_ms!r}")
        if self.on_long not in ("truncate", "reject"):
            raise ConfigError(f"on_long: expected 'truncate' or 'reject', got {self.on_long!r}")
