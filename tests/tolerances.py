"""The tolerance table of ARCHITECTURE §6, in one place, and the error measures the tests print."""

import torch

# kernel or fused path vs reference, fp32: max relative error
FP32_MAX_REL = 1e-5
# exact re-implementations of the same arithmetic (reference vs literal spec, open_clip parity)
EXACT_MAX_REL = 1e-6
# frame embeddings / scores across paths or exports: cosine similarity
COSINE_MIN = {torch.float32: 0.99999, torch.float16: 0.999, torch.bfloat16: 0.999}
# low precision: at most this factor times the reference's own low-precision error, plus LOWP_ATOL
LOWP_FACTOR = 2.0
LOWP_ATOL = 1e-3


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (NaN anywhere gives inf)."""
    actual, expected = actual.double(), expected.double()
    if not torch.isfinite(actual).all():
        return float("inf")
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def min_cosine(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Smallest cosine similarity between matching rows of the last dimension."""
    a = actual.double().flatten(0, -2)
    e = expected.double().flatten(0, -2)
    return torch.nn.functional.cosine_similarity(a, e, dim=-1).min().item()


def report(name: str, value: float) -> float:
    print(f"[measured] {name}: {value:.3e}")
    return value
