"""The scoring head at K400 scale (K=400 classes, N=224 prompts): its PyTorch piece vs its Triton kernel.

pytest benchmarks/bench_score.py --benchmark-only
"""

import pytest
import torch
import torch.nn.functional as F
from common import DEVICE, IMPLS, implementation, synced

from stdd_fast import head


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("impl", IMPLS)
def test_score(benchmark, impl, batch):
    score = implementation("score", impl, head.score)
    emb = F.normalize(torch.randn(batch, 8, 512, device=DEVICE), dim=-1)
    weights = F.normalize(torch.randn(400, 224, 512, device=DEVICE), dim=-1)
    scale = torch.tensor(4.6, device=DEVICE)
    benchmark.group = f"score K=400 N=224 B={batch} {DEVICE.type}"
    benchmark(synced(lambda: score(emb, weights, scale)))
