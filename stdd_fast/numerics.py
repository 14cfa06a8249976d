"""The tolerance table (ARCHITECTURE §6) and the error measures every comparison uses.

One place for the tests, the export parity gate and the GPU check:

| comparison | fp32 | bf16 / fp16 |
| --- | --- | --- |
| kernel or fused path vs reference | max rel err <= 1e-5 | <= 2x the reference's own low-precision error + 1e-3 |
| embeddings / scores across paths or exports | cosine >= 0.99999 | cosine >= 0.999, same top-1 |

TF32 has bf16's mantissa and takes its row. The table has no row for quantised (int8 / fp8)
graphs; 0.99 is this package's choice for them, reported, never a default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# kernel or fused path vs reference, fp32: max relative error
FP32_MAX_REL = 1e-5
# exact re-implementations of the same arithmetic (reference vs literal spec, open_clip parity)
EXACT_MAX_REL = 1e-6
# low precision vs the fp32 reference: at most LOWP_FACTOR x the reference's own error, + LOWP_ATOL
LOWP_FACTOR = 2.0
LOWP_ATOL = 1e-3
# frame embeddings / scores across paths or exports: cosine similarity, by precision name
COSINE_MIN: dict[str, float] = {
    "float32": 0.99999,
    "float16": 0.999,
    "bfloat16": 0.999,
    "tf32": 0.999,
    "int8": 0.99,
    "fp8": 0.99,
}


def precision_name(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (names pass through)."""
    return str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else str(dtype)


def cosine_min(dtype: torch.dtype | str) -> float:
    """The smallest cosine similarity the table accepts across paths in ``dtype``."""
    return COSINE_MIN[precision_name(dtype)]


def low_precision_bound(reference_error: float) -> float:
    """The largest error a low-precision path may have, given the reference's own error in that dtype."""
    return LOWP_FACTOR * reference_error + LOWP_ATOL


def all_finite(*tensors: torch.Tensor | None) -> bool:
    """Whether every given tensor holds only finite values (None counts as finite)."""
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64 (a NaN or Inf anywhere gives inf)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(actual).all():
        return float("inf")
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def min_cosine(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Smallest cosine similarity between matching rows of the last dimension (float64)."""
    a = actual.detach().double().cpu().flatten(0, -2)
    e = expected.detach().double().cpu().flatten(0, -2)
    return F.cosine_similarity(a, e, dim=-1, eps=1e-30).min().item()
