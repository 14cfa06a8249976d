"""The block output (residual, MLP and the sparse rows scattered back) at ViT-B/16 shapes: PyTorch piece vs Triton.

pytest benchmarks/bench_scatter_residual.py --benchmark-only
"""

import pytest
import torch
from common import BATCH, DEVICE, DTYPE, IMPLS, implementation, synced

from stdd_fast import create_model
from stdd_fast.stca import pieces


@pytest.fixture(scope="module")
def scatter_inputs():
    """(full, mlp, x [BT, 197, 768], sparse_proj [BT, 1 + V, 768], visible, source_maps) for block 6 of ViT-B/16."""
    block = create_model("ViT-B-16", device=DEVICE, dtype=DTYPE).blocks[6]
    full, mlp, x = (torch.randn(BATCH * 8, 197, 768, device=DEVICE, dtype=DTYPE) for _ in range(3))
    vis, src = block.visible_tokens(BATCH, 8, DEVICE), block.index.source_maps(8, DEVICE)
    sparse_proj = torch.randn(BATCH * 8, vis.shape[2] + 1, 768, device=DEVICE, dtype=DTYPE)
    return full, mlp, x, sparse_proj, vis, src


@pytest.mark.parametrize("impl", IMPLS)
def test_scatter_residual(benchmark, scatter_inputs, impl):
    scatter_residual = implementation("scatter_residual", impl, pieces.scatter_residual)
    benchmark.group = f"scatter_residual B/16 {BATCH}x8 {DTYPE} {DEVICE.type}"
    benchmark(synced(lambda: scatter_residual(*scatter_inputs)))
