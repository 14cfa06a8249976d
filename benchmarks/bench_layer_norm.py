"""The block's two LayerNorms at ViT-B/16 shapes (BATCH x 8 frames of 197 x 768): PyTorch piece vs Triton kernel.

pytest benchmarks/bench_layer_norm.py --benchmark-only
"""

import pytest
import torch
from common import BATCH, DEVICE, DTYPE, IMPLS, implementation, synced

from stdd_fast.stca import pieces

SHAPE = (BATCH * 8, 197, 768)


@pytest.fixture(scope="module")
def rows():
    """x, an update like it, and LayerNorm weight and bias, in the benchmark's dtype."""
    x, update = (torch.randn(SHAPE, device=DEVICE, dtype=DTYPE) for _ in range(2))
    weight = (1 + 0.1 * torch.randn(768, device=DEVICE)).to(DTYPE)
    bias = (0.1 * torch.randn(768, device=DEVICE)).to(DTYPE)
    return x, update, weight, bias


@pytest.mark.parametrize("impl", IMPLS)
def test_layer_norm(benchmark, rows, impl):
    layer_norm = implementation("layer_norm", impl, pieces.layer_norm)
    x, _, weight, bias = rows
    benchmark.group = f"layer_norm B/16 {BATCH}x8 {DTYPE} {DEVICE.type}"
    benchmark(synced(lambda: layer_norm(x, weight, bias, 1e-5)))


@pytest.mark.parametrize("impl", IMPLS)
def test_residual_layer_norm(benchmark, rows, impl):
    residual_layer_norm = implementation("residual_layer_norm", impl, pieces.residual_layer_norm)
    x, update, weight, bias = rows
    benchmark.group = f"residual_layer_norm B/16 {BATCH}x8 {DTYPE} {DEVICE.type}"
    benchmark(synced(lambda: residual_layer_norm(update, x, weight, bias, 1e-5)))
