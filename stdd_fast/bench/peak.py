"""Measured ceilings of this device: the matrix rate MFU is reported against (not a datasheet figure)."""

from __future__ import annotations

import torch

from stdd_fast.bench.timing import time_fn


def matrix_peak_tflops(device: torch.device, dtype: torch.dtype, size: int | None = None) -> float:
    """TFLOP/s of a large square matmul on random data (8192 on GPU, 2048 on CPU)."""
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timing = time_fn(lambda: a @ b, device, warmup=2, iters=10 if device.type == "cuda" else 3)
    return 2 * n**3 / timing.median / 1e12
