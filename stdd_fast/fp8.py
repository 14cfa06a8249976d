"""fp8 (e4m3) GEMMs for the fused STCA block's linear layers: ``dtype="fp8"``, opt-in, inference only.

What runs in fp8: every call of the fused block's ``linear`` piece (QKV, both out-projections, the
MLP's fc1 with its SiLU/GELU and fc2), as ``torch._scaled_mm`` with fp32 accumulation and a bf16
result. Everything else (the patch embedding, attention, the LayerNorms and their statistics, the
sparse path's rank-C correction, the final projection, the head) runs as it does in bf16.

Scales. e4m3 keeps 3 mantissa bits and a range of +-448, so every tensor is stored as fp8 values
times an fp32 scale that maps its largest magnitude to 448:

* weights W [N, K]: one scale per output channel (row), computed once per weight and cached on the
  weight tensor while it is unchanged (:func:`stdd_fast.stca.fused.folded`);
* activations x [M, K]: one scale per row (token), computed on every call (dynamic).

Why per token and per output channel rather than one scale per tensor. e4m3 is a floating-point
format: every value within ~2^14 of the scale's maximum (its normal range) keeps 3 mantissa bits.
So, unlike int8's uniform grid (README: dynamic int8 on weights with outlier channels), the residual
outlier channels of trained CLIP towers, 10-100x the rest (:mod:`stdd_fast.bench.weights` plants
them), and even their 100-1000x "massive activation" tokens cost fp8 little whichever the scale
(tests/test_fp8.py measures per-tensor and per-token rounding alike at 2^10, apart at 2^18). What
one scale per tensor still does is tie every token's rounding to the largest value of the whole
batch: a clip's result would depend on which clips share its batch, and past that range the
smaller tokens fall into subnormals or to zero. A per-token scale is set by the token alone (its
rounding is the same in any batch), and a per-output-channel weight scale gives each output row its
own range. Both cost one amax per row and one fp32 multiply per output in the GEMM's epilogue
([M, 1] x [1, N]), so the arithmetic is ``(q_x s_x) (q_W s_W)^T`` exactly, accumulated in fp32. The
bias is added after the product, in a separate op (``_scaled_mm``'s bias with row-wise scales is not
supported on every version and device).

Cost: in eager mode the activation quantisation is three elementwise passes over x after its amax
(scale, clamp, cast), which eats into what the fp8 GEMM saves; under ``compile=`` inductor fuses
them. Hardware: fp8 tensor cores need compute capability 8.9+ (Ada, Hopper); older CUDA devices get a
ConfigError. On the CPU ``torch._scaled_mm`` runs the same arithmetic (slowly): that is what the
tests and the accuracy figures measure. Needs torch >= 2.5 (row-wise scales).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from stdd_fast.errors import ConfigError
from stdd_fast.stca.fused import FusedPieces, folded
from stdd_fast.stca.pieces import ACTIVATIONS, activate

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448: a row's largest magnitude maps here
AMAX_FLOOR = 1e-12  # an all-zero row gets this amax, so its scale is not zero (x / scale stays 0, not NaN)
MIN_CAPABILITY = (8, 9)  # fp8 tensor cores: Ada (8.9) and Hopper (9.0) on
GEMM_MULTIPLE = 16  # fp8 GEMMs need K and N divisible by 16


class QuantizedWeight(NamedTuple):
    """W [N, K] as ``values * scale^T``: fp8 values [N, K] and fp32 per-output-channel scales [1, N]."""

    values: torch.Tensor
    scale: torch.Tensor


def check_device(device: torch.device) -> None:
    """ConfigError on a CUDA device without fp8 tensor cores (the CPU runs the same arithmetic, slowly)."""
    if device.type != "cuda":
        return
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise ConfigError(
            f"dtype='fp8' needs fp8 tensor cores (compute capability >= 8.9: Ada, Hopper); {name} ({device}) has "
            f"{capability[0]}.{capability[1]}: use dtype='bf16'"
        )


def check_impl(impl: str) -> None:
    """ConfigError for ``impl="reference"``: fp8 replaces the fused block's ``linear`` piece, which it does not run."""
    if impl == "reference":
        raise ConfigError(
            "dtype='fp8' runs the fused STCA block's linear layers as fp8 GEMMs; impl='reference' runs open_clip's "
            "modules: use impl='fused', 'triton' or 'auto'"
        )


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (fp8 values [M, K], fp32 scales [M, 1]) with x ~ values * scales, each row's amax at 448.

    The division runs in fp32 and is clamped to +-448 before the cast (e4m3fn has no infinity: an
    out-of-range cast gives NaN, and rounding can land a hair above 448).
    """
    amax = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True, dtype=torch.float32)  # [M, 1], one pass
    amax = amax.clamp_min(AMAX_FLOOR)
    scale = amax / FP8_MAX
    return (x / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8), scale


def quantize_weight(weight: torch.Tensor) -> QuantizedWeight:
    """W [N, K] -> fp8 with one scale per output channel (see :class:`QuantizedWeight`)."""
    check_device(weight.device)
    n, k = weight.shape
    if n % GEMM_MULTIPLE or k % GEMM_MULTIPLE:
        raise ConfigError(
            f"dtype='fp8': a linear layer of shape [{n}, {k}]; fp8 GEMMs need both sizes divisible by "
            f"{GEMM_MULTIPLE}: use dtype='bf16' for this architecture"
        )
    values, scale = quantize_rows(weight.detach())
    return QuantizedWeight(values, scale.view(1, n))


def quantized_weight(weight: torch.Tensor) -> QuantizedWeight:
    """``quantize_weight(weight)``, cached on the weight tensor itself while its storage and version are unchanged."""
    return folded(weight, "fp8", (weight,), lambda: quantize_weight(weight))


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None
) -> torch.Tensor:
    """The fp8 drop-in for :func:`stdd_fast.stca.pieces.linear`: ``activation(x W^T + b)`` in x's dtype.

    x [..., K] is quantised per token, W [N, K] per output channel (cached); the product accumulates
    in fp32 and is rounded to bf16, then the bias and the activation follow. Inference only.
    """
    if activation not in ACTIVATIONS:  # before any work: a bad name fails fast
        raise ValueError(f"linear: activation={activation!r}; expected one of {ACTIVATIONS}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        raise ConfigError(
            "dtype='fp8' is inference only (its GEMMs have no backward): run under torch.no_grad() or "
            "torch.inference_mode(), or train in dtype='bf16'"
        )
    w = quantized_weight(weight)
    xq, x_scale = quantize_rows(x.reshape(-1, x.shape[-1]))  # [M, K], [M, 1]
    out = torch._scaled_mm(xq, w.values.t(), scale_a=x_scale, scale_b=w.scale, out_dtype=torch.bfloat16)  # [M, N]
    if bias is not None:
        out += bias
    return activate(out, activation).view(*x.shape[:-1], -1).to(x.dtype)


def fp8_pieces(pieces: FusedPieces) -> FusedPieces:
    """``pieces`` with every linear layer in fp8 (the other pieces, PyTorch or Triton, unchanged)."""
    return pieces._replace(linear=linear)
