"""The block's four GEMMs at ViT-B/16 shapes (BATCH x 8 frames of 197 rows): PyTorch piece (cuBLAS, then the
activation as a second pass) vs the Triton GEMM with the bias and activation in its epilogue.

pytest benchmarks/bench_linear.py --benchmark-only
"""

import pytest
import torch
from common import BATCH, DEVICE, DTYPE, IMPLS, implementation, synced

from stdd_fast.stca import pieces

ROWS = BATCH * 8 * 197
# name -> (N, K, activation): QKV, out-projection, MLP fc1 (QuickGELU folded to SiLU), fc2
GEMMS = {"qkv": (2304, 768, None), "out_proj": (768, 768, None), "fc1": (3072, 768, "silu"), "fc2": (768, 3072, None)}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("gemm", GEMMS)
def test_linear(benchmark, gemm, impl):
    linear = implementation("linear", impl, pieces.linear)
    n, k, activation = GEMMS[gemm]
    x = torch.randn(ROWS, k, device=DEVICE, dtype=DTYPE)
    weight = (torch.randn(n, k, device=DEVICE) / k**0.5).to(DTYPE)
    bias = (0.1 * torch.randn(n, device=DEVICE)).to(DTYPE)
    benchmark.group = f"linear {gemm} B/16 {BATCH}x8 [{ROWS}, {k}] x [{n}, {k}] {activation} {DTYPE} {DEVICE.type}"
    benchmark(synced(lambda: linear(x, weight, bias, activation)))
