"""What the library's defaults pick on this machine (CUDA in bfloat16 where a GPU is present, else the
CPU in float32). Tests that compare two answers of one model loosen their tolerance where a session
runs in half precision, and tests that read a printed device expect this machine's."""

from __future__ import annotations

import torch

from visionllm2.sdk._arguments import checked_device, checked_dtype

DEFAULT_DEVICE = checked_device(None)
DEFAULT_DTYPE = checked_dtype(None, DEFAULT_DEVICE)
HALF = DEFAULT_DTYPE != torch.float32


def tolerance(float32: float, half: float) -> float:
    """``float32`` where sessions run in float32 by default, else ``half`` (bfloat16 keeps ~3 digits)."""
    return half if HALF else float32


def dtype_name(dtype: torch.dtype = DEFAULT_DTYPE) -> str:
    return str(dtype).removeprefix("torch.")
