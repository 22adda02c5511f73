"""Device selection and mixed precision: one place that knows about CUDA, MPS and CPU bf16."""

from __future__ import annotations

import contextlib
from functools import cache
from typing import Any

import torch

from taskhead.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but no CUDA GPU is visible; use device=auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device: 'mps' requested but MPS is not available; use device=auto or cpu")
    return torch.device(name)


@cache
def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run faster than fp32 (elsewhere bf16 is emulated and slower)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_precision(device: torch.device, bf16: bool | str, fp16: bool) -> str:
    """``bf16`` / ``fp16`` / ``fp32`` for training on ``device``; errors for a combination that cannot run."""
    if fp16 and bf16 is True:
        raise ConfigError("train.fp16 and train.bf16 are both on; choose one")
    if fp16:
        if device.type != "cuda":
            raise ConfigError(
                f"train.fp16: fp16 mixed precision needs a CUDA GPU (device is {device.type}); "
                f"use bf16 or fp32"
            )
        return "fp16"
    if bf16 is True:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("train.bf16: this GPU has no bf16 support; use fp16=true")
        return "bf16"
    if bf16 == "auto" and bf16_supported(device):
        return "bf16"
    return "fp32"


def native_precision(device: torch.device, precision: str) -> str:
    """The precision a forward pass runs in on ``device`` when ``precision`` is asked: ``bf16`` where the
    device runs bf16 natively (CUDA with bf16, CPUs with AVX-512 BF16 or AMX), ``fp16`` on CUDA, else
    ``fp32`` (a precision the device would only emulate is never used for a forward pass)."""
    if precision == "bf16" and bf16_supported(device):
        return "bf16"
    if precision == "fp16" and device.type == "cuda":
        return "fp16"
    return "fp32"


def autocast_context(device: torch.device, precision: str) -> Any:
    """Autocast to ``precision`` (``bf16`` / ``fp16``) on ``device``; a no-op context for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
KEEP_MAPPED = 1 << 30  # allocations up to 1 GiB come from the heap, and up to 1 GiB of free heap is kept
STEADY_MMAP, STEADY_TRIM = 32 << 20, 64 << 20  # where glibc's dynamic thresholds end up in a torch process


@contextlib.contextmanager
def cpu_buffers_kept(device: torch.device) -> Any:
    """While training on a CPU under glibc, keep large freed buffers mapped instead of returning them.

    PyTorch's CPU allocator is plain malloc. glibc serves blocks above its mmap threshold (at most 32 MiB
    by its dynamic rule) with a fresh mmap and unmaps them on free, so every step pays page faults for
    the same buffers again: MiniLM's 47 MB word-embedding gradient alone, 10 % of a step on SST-2
    (benchmarks/README.md). Raising the thresholds keeps them in the heap. On exit the thresholds go to
    glibc's usual steady state and the free heap is trimmed. Not applied off Linux/glibc, on GPUs, when the
    user set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` or preloads another allocator, or with
    ``TASKHEAD_MALLOC_TUNING=0``.
    """
    import ctypes
    import os
    import sys

    libc = None
    user_set = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    preloaded = "malloc" in os.environ.get("LD_PRELOAD", "")  # jemalloc, tcmalloc, mimalloc
    wanted = os.environ.get("TASKHEAD_MALLOC_TUNING", "1") != "0"
    if (
        device.type == "cpu"
        and sys.platform.startswith("linux")
        and wanted
        and not user_set
        and not preloaded
    ):
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = libc.mallopt(M_MMAP_THRESHOLD, KEEP_MAPPED) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_MAPPED)
            if not ok:  # an older glibc caps the mmap threshold at 32 MiB
                libc.mallopt(M_MMAP_THRESHOLD, STEADY_MMAP)
                libc.mallopt(M_TRIM_THRESHOLD, STEADY_TRIM)
        except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
            libc = None
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, STEADY_MMAP)
            libc.mallopt(M_TRIM_THRESHOLD, STEADY_TRIM)
            libc.malloc_trim(0)
