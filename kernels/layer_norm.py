"""Triton kernel: LayerNorm in fp32 with its statistics, optionally after a residual add.

Two launchers, two stems: :func:`layer_norm` (PyTorch piece ``stdd_fast.stca.pieces.layer_norm``, LN1:
normalised rows plus the fp32 mean and rstd the sparse path needs) and :func:`residual_layer_norm`
(``stdd_fast.stca.pieces.residual_layer_norm``, LN2: ``F = u + x`` rounded to the input dtype, then LN2
of the stored ``F``, in one pass instead of an add kernel and a LayerNorm kernel).

One program per row: the row is read once in the input dtype, the sum (when there is a residual) is
rounded like PyTorch's own add and written back, and the statistics are fp32 (OpenAI CLIP's
LayerNorm). The launch shape is fixed (not tuned): the row reductions' order depends on it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _layer_norm_kernel(
    x_ptr,
    res_ptr,
    sum_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    mean_ptr,
    rstd_ptr,
    eps,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    ok = cols < D
    v = tl.load(x_ptr + row * D + cols, mask=ok, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        total = (v + tl.load(res_ptr + row * D + cols, mask=ok, other=0.0).to(tl.float32)).to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * D + cols, total, mask=ok)
        v = total.to(tl.float32)  # LN of the stored (rounded) sum, as the unfused path computes it
    mean = tl.sum(v, axis=0) / D
    centred = tl.where(ok, v - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / D + eps)
    w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * D + cols, (centred * rstd * w + b).to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm over the last dim: (normed in ``x``'s dtype, fp32 mean [..., 1], fp32 rstd [..., 1])."""
    return _launch(x, weight, bias, eps)[1:]


def residual_layer_norm(
    update: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F = update + x`` (rounded to ``update``'s dtype) and the LayerNorm of the stored ``F``: (F, LN(F))."""
    return _launch(update, weight, bias, eps, residual=x)[:2]


def _launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm over the last dim of ``x`` (or of ``x + residual``): (input or sum, normed, mean, rstd)."""
    d = x.shape[-1]
    x = x.contiguous()
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"residual_layer_norm: x {tuple(residual.shape)} != update {tuple(x.shape)}")
        residual = residual.to(x.dtype).contiguous()
        total = torch.empty_like(x)
    else:
        total = x
    rows = x.numel() // d
    normed = torch.empty_like(x)
    mean = torch.empty(*x.shape[:-1], 1, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    block_d = triton.next_power_of_2(d)
    if rows:
        _layer_norm_kernel[(rows,)](
            x, residual if residual is not None else x, total, weight.contiguous(), bias.contiguous(),
            normed, mean, rstd, eps,
            D=d, BLOCK_D=block_d, HAS_RESIDUAL=residual is not None, num_warps=min(max(block_d // 256, 1), 8),
        )  # fmt: skip
    return total, normed, mean, rstd
