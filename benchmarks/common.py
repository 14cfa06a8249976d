"""What the per-stem benchmark suites share: the device, the ViT-B/16 batch, and each stem's two implementations."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from stdd_fast.ops import resolve_impl

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
BATCH = 32 if DEVICE.type == "cuda" else 1  # clips of 8 frames
IMPLS = ["torch", "triton"]  # a stem's PyTorch piece, its Triton launcher


def implementation(stem: str, impl: str, piece: Callable) -> Callable:
    """``piece`` ("torch") or the launcher ``stdd_fast.kernels.<stem>`` ("triton"; skips where it cannot run)."""
    if impl == "torch":
        return piece
    try:
        resolve_impl("triton", DEVICE)
    except Exception as e:
        pytest.skip(str(e))
    from stdd_fast import kernels

    return getattr(kernels, stem)


def synced(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` waiting for the device's queued work, so that a timing covers what it launched."""

    def run():
        out = fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    return run
