"""Shared pieces of the Triton kernel tests: where they run, the STCA modes, one block's inputs.

On CPU the kernels run in Triton's interpreter (fp32 only); on a GPU natively. A test module that
needs the kernels calls :func:`require_triton` at import: it skips the whole module where they
cannot run.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from helpers import randomize_, small_arch

from stdd_fast import STCAConfig, create_model
from stdd_fast.errors import BackendUnavailableError
from stdd_fast.ops import resolve_impl

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# (shuffle, training, spatial_repeat)
MODES = [("none", False, True), ("seeded", False, True), ("official", False, True), ("none", True, False)]
LOW_PRECISION = {"bfloat16": torch.bfloat16, "float16": torch.float16}
GPU_DTYPES = {"float32": torch.float32, **LOW_PRECISION}


def triton_problem() -> str | None:
    """Why the Triton kernels cannot run here (None: they can)."""
    try:
        resolve_impl("triton", DEVICE)
    except BackendUnavailableError as e:  # no triton, or no CUDA and no interpreter
        return f"Triton kernels cannot run here: {e}"
    return None


def require_triton() -> None:
    """Skip the calling test module where the kernels cannot run (call it at module level)."""
    problem = triton_problem()
    if problem is not None:
        pytest.skip(problem, allow_module_level=True)


def block_inputs(grid, B, T, shuffle="none", training=False, repeat=True, width=64, heads=4, scales=(1, 2), fold=32):
    """A randomised small model's first block and its inputs on DEVICE.

    Returns (block, x [B*T, 1 + grid^2, width], visible [B|1, T, V], source_maps [S, T, C]).
    """
    cfg = STCAConfig(shuffle=shuffle, spatial_repeat=repeat, seed=1, temporal_scale=scales, channel_fold=fold)
    model = randomize_(create_model(small_arch(grid, width=width, heads=heads), stca=cfg), seed=grid).to(DEVICE)
    block = model.blocks[0].train(training)
    x = torch.randn(B * T, grid * grid + 1, width, device=DEVICE)
    torch.manual_seed(B * 100 + T)
    vis = block.visible_tokens(B, T, x.device)
    src = block.index.source_maps(T, x.device)
    return block, x, vis, src


def realistic_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """open_clip's init plus non-trivial LayerNorm affines and biases (zeros would hide bias bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1 and "logit" not in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen).to(p.device, p.dtype))
    return model


def gpu_block(arch, frames: int, seed: int = 2):
    """A middle block of ``arch`` (a name or ArchConfig, open_clip-like weights) on DEVICE, and its fp32 input.

    Returns (block, x [2 * frames, L, D]: two clips of ``frames`` frames).
    """
    model = realistic_(create_model(arch, seed=seed)).to(DEVICE)
    block = model.blocks[len(model.blocks) // 2]
    x = torch.randn(2 * frames, model.arch.tokens_per_frame, model.arch.vision_width, device=DEVICE)
    return block, x


def max_abs_difference(out: torch.Tensor, others) -> float:
    """The largest |other - out| over ``others`` (inf where one holds a NaN): 0.0 means bit-identical values."""
    return max((o.float() - out.float()).abs().max().nan_to_num(float("inf")).item() for o in others)


def cast_block(block: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``block`` in ``dtype`` (the fp32 block keeps its exact weights)."""
    return block if dtype == torch.float32 else copy.deepcopy(block).to(dtype)


@contextlib.contextmanager
def exact_fp32():
    """Inside, CUDA fp32 matmuls and convolutions are exact fp32, not TF32: the fp32 reference must be exact."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
