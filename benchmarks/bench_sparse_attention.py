"""The STCA sparse path (all scales' attention over a frame's CLS + visible tokens): PyTorch piece vs Triton kernel.

At ViT-B/16 (1 + 98 rows a frame: the one-tile kernel) and ViT-L/14 (1 + 128 rows: the blocked kernel)
block shapes, BATCH x 8 frames.

pytest benchmarks/bench_sparse_attention.py --benchmark-only
"""

import dataclasses

import pytest
import torch
from common import BATCH, DEVICE, DTYPE, IMPLS, implementation, synced

from stdd_fast import create_model
from stdd_fast.config import get_arch
from stdd_fast.stca import pieces


def _with_piece_arguments(launcher):
    """The Triton launcher called as the piece: the projection's plain tensors, the kernel the frame size takes."""
    from stdd_fast.kernels import fits_one_tile

    def sparse_attention(qkv, x, mean, rstd, visible, source_maps, proj, num_heads):
        plain = (qkv, x, mean, rstd, visible, source_maps, proj.const, proj.gain_sum, proj.head, num_heads)
        return launcher(*plain, blocked=not fits_one_tile(visible.shape[2]))

    return sparse_attention


@pytest.fixture(scope="module", params=["ViT-B-16", "ViT-L-14"])
def sparse_inputs(request):
    """The arguments of the piece for one block of the architecture (one vision layer: the real widths and grid)."""
    arch = dataclasses.replace(get_arch(request.param), vision_layers=1, text_layers=1)
    block = create_model(arch, device=DEVICE, dtype=DTYPE).blocks[0]
    x = torch.randn(BATCH * 8, arch.tokens_per_frame, arch.vision_width, device=DEVICE, dtype=DTYPE)
    vis, src = block.visible_tokens(BATCH, 8, DEVICE), block.index.source_maps(8, DEVICE)
    with torch.no_grad():
        return request.param, pieces.sparse_attention_inputs(block, x, vis, src)


@pytest.mark.parametrize("impl", IMPLS)
def test_sparse_attention(benchmark, sparse_inputs, impl):
    arch, args = sparse_inputs
    sparse_attention = implementation("sparse_attention", impl, pieces.sparse_attention)
    if impl == "triton":
        sparse_attention = _with_piece_arguments(sparse_attention)
    benchmark.group = f"sparse_attention {arch} {BATCH}x8 {DTYPE} {DEVICE.type}"
    benchmark(synced(lambda: sparse_attention(*args)))
