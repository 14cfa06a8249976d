"""The scoring head at K400 scale (K=400 classes, N=224 prompts), reference vs Triton (group "head").

pytest benchmarks/bench_head.py --benchmark-only
"""

import pytest
import torch
import torch.nn.functional as F

from stdd_fast import score
from stdd_fast.ops import resolve_impl

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_head(benchmark, impl, batch):
    try:
        resolve_impl(impl, DEVICE)
    except Exception as e:
        pytest.skip(str(e))
    emb = F.normalize(torch.randn(batch, 8, 512, device=DEVICE), dim=-1)
    weights = F.normalize(torch.randn(400, 224, 512, device=DEVICE), dim=-1)
    benchmark.group = f"head K=400 N=224 B={batch} {DEVICE.type}"

    def run():
        out = score(emb, weights, 4.6, impl=impl)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark(run)
