"""One STCA block at ViT-B/16 shapes, every implementation side by side (group "stca-block").

pytest benchmarks/bench_stca_block.py --benchmark-only [--benchmark-json out.json]
"""

import pytest
import torch

from stdd_fast import create_model, ops
from stdd_fast.ops import resolve_impl

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
BATCH = 32 if DEVICE.type == "cuda" else 1


@pytest.fixture(scope="module")
def block_inputs():
    model = create_model("ViT-B-16", device=DEVICE, dtype=DTYPE)
    block = model.blocks[6]
    x = torch.randn(BATCH * 8, 197, 768, device=DEVICE, dtype=DTYPE)
    return block, x, block.visible_tokens(BATCH, 8, DEVICE), block.index.source_maps(8, DEVICE)


@pytest.mark.parametrize("impl", ["reference", "fused", "triton"])
def test_stca_block(benchmark, block_inputs, impl):
    try:
        resolve_impl(impl, DEVICE)
    except Exception as e:
        pytest.skip(str(e))
    block, x, vis, src = block_inputs
    block.impl = impl
    benchmark.group = f"stca-block B/16 {BATCH}x8 {DTYPE} {DEVICE.type}"

    def run():
        with torch.no_grad():
            out = ops.stca_block(block, x, vis, src)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark(run)
