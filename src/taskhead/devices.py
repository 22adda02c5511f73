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


def autocast_context(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
