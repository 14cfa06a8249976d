"""The optimised STCA block: the same function as :func:`stdd_fast.stca_ref.stca_block_ref`, less work.

Derivation (ARCHITECTURE §4.5). Write LN1(x) = (x - mu_x) * rstd_x * gamma + beta, fold the gain
into the in-projection, W_g = W * gamma, and let c = W beta + b and g = W gamma ([3D]). The full
path computes ``qkv_z = LN1(z) W^T + b = (z - mu_z) W_g^T * rstd_z + c`` for every token. A visible
token after the temporal shift is ``y = z + delta``, with ``delta`` non-zero only on the first
C = 2*D/fold channels, so (all statistics in fp32, s = var + eps = 1 / rstd^2)

    mu_y - mu_z = sum(delta) / D
    s_y         = s_z + sum_{c<C} [(y_c - mu_z)^2 - (z_c - mu_z)^2] / D - (mu_y - mu_z)^2
    qkv_y       = r * qkv_z + (1 - r) c + rstd_y (delta_C W_g[:, :C]^T - (mu_y - mu_z) g),  r = rstd_y / rstd_z

The mixed tokens' projections are the full path's rows (already computed) rescaled by a per-token
r ~ 1, plus one GEMM with C + 2 = 50 inner channels (for B/16) instead of 768: the last two terms
are one product ``[1 - r, -rstd_y dmu, rstd_y delta] @ [c; g; W_g[:, :C]^T]``. The CLS token is
never shifted and reuses its full-path row. Rescaling ``qkv_z`` (rounded once, like the reference's
own ``qkv_y``) by r keeps the relative error of the reference in low precision; nothing subtracts a
large mean from a small variance, because the update is taken about mu_z.

By linearity, the mean over scales of ``Y_s + Attn_s Wo^T + bo`` is ``mean_s Y_s + (mean_s Attn_s)
Wo^T + bo``: one out-projection serves every scale, and both scales share one
``scaled_dot_product_attention`` call. For ViT-B/16 this removes ~78 % of STCA's extra FLOPs (per
frame and block, QKV of 2 x 99 tokens plus two out-projections, 0.50 GMAC, become a 50-channel
correction and one out-projection, 0.11 GMAC).

QuickGELU(h) = h * sigmoid(1.702 h) = silu(1.702 h) / 1.702, so the MLP runs as
``c_proj'(silu(c_fc'(x)))`` with 1.702 folded into c_fc and 1/1.702 into c_proj: one elementwise
pass over the 4D-wide hidden activations instead of three.

The output is ``out = F + MLP(LN2 F)`` with the CLS and visible rows overwritten by
``Abar + MLP(LN2 F)`` (gather and in-place scatter with the static index tables).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from stdd_fast.errors import ConfigError
from stdd_fast.stca_ref import mix_channels_ref

QUICK_GELU_ALPHA = 1.702


@dataclass
class SparseProjection:
    """Per-block constants of the sparse path's QKV update (see the module docstring)."""

    update: torch.Tensor  # [C+2, 3D] rows: c, g, W_g[:, :C]^T; compute dtype
    const: torch.Tensor  # c [3D], fp32
    gain_sum: torch.Tensor  # g [3D], fp32
    head: torch.Tensor  # W_g[:, :C] [3D, C], compute dtype


def fold_sparse_projection(block: nn.Module, channels: int, dtype: torch.dtype) -> SparseProjection:
    """c = W beta + b, g = W gamma and W_g[:, :C] = (W * gamma)[:, :C] for the block's ln_1 / in-projection."""
    w = block.attn.in_proj_weight.float()
    gamma, beta = block.ln_1.weight.float(), block.ln_1.bias.float()
    const = w @ beta + block.attn.in_proj_bias.float()
    gain_sum = w @ gamma
    head = w[:, :channels] * gamma[:channels]  # [3D, C]
    update = torch.cat([const[None], gain_sum[None], head.t()]).to(dtype)  # [C+2, 3D]
    return SparseProjection(update, const, gain_sum, head.to(dtype))


def layer_norm_stats(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm over the last dim in fp32, cast back (OpenAI CLIP semantics), and its fp32 mean and rstd [..., 1].

    CUDA's LayerNorm already computes in fp32 and returns fp32 statistics for fp16/bf16 input, so it
    runs in one pass there; elsewhere low-precision input is upcast first (CPU keeps input-dtype
    statistics), and so is any input whose weight or bias has another dtype (PyTorch's LayerNorm
    takes no mixed dtypes outside autocast, e.g. bf16 activations with fp32 parameters). Under
    autograd the statistics are recomputed differentiably (``native_layer_norm`` returns them as
    non-differentiable outputs, and the sparse path's projections depend on them).
    The Triton kernel ``stdd_fast.kernels.layer_norm`` computes this function.
    """
    same_dtype = all(p is None or p.dtype == x.dtype for p in (weight, bias))
    one_pass = same_dtype and (x.is_cuda or x.dtype == torch.float32)
    xin = x if one_pass else x.float()
    if not one_pass:
        weight = weight.float() if weight is not None else None
        bias = bias.float() if bias is not None else None
    out, mean, rstd = torch.native_layer_norm(xin, x.shape[-1:], weight, bias, eps)
    if torch.is_grad_enabled() and x.requires_grad:
        var, mean = torch.var_mean(x.float(), dim=-1, correction=0, keepdim=True)
        rstd = torch.rsqrt(var + eps)
    return out.to(x.dtype), mean.float(), rstd.float()


def layer_norm_with_stats(norm: nn.LayerNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`layer_norm_stats` with the parameters of ``norm``."""
    return layer_norm_stats(x, norm.weight, norm.bias, norm.eps)


def residual_layer_norm_ref(
    update: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F = update + x`` (rounded to x's dtype) and the LayerNorm of the stored ``F``: (F, LN(F)).

    The Triton kernel ``stdd_fast.kernels.layer_norm`` computes both in one pass.
    """
    full = update + x
    return full, layer_norm_stats(full, weight, bias, eps)[0]


def attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Per-sequence softmax attention of packed projections: [N, L, 3D] -> [N, L, D] (before out-proj)."""
    n, length, three_d = qkv.shape
    q, k, v = qkv.view(n, length, 3, num_heads, three_d // (3 * num_heads)).permute(2, 0, 3, 1, 4)  # [N, H, L, hd]
    out = F.scaled_dot_product_attention(q, k, v)  # [N, H, L, hd]
    return out.transpose(1, 2).reshape(n, length, three_d // 3)


def _rows_with_cls(visible: torch.Tensor, batch_frames: int) -> torch.Tensor:
    """[B|1, T, V] visible token indices -> [BT, 1+V] rows of the sparse path (CLS = token 0 first)."""
    t = visible.shape[1]
    vis = visible.expand(batch_frames // t, t, -1).reshape(batch_frames, -1)
    return F.pad(vis, (1, 0))


def sparse_attention_ref(
    qkv: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
    proj: SparseProjection,
    num_heads: int,
) -> torch.Tensor:
    """Mean over scales of the sparse path's attention outputs, before the out-projection.

    qkv: full-path projections [BT, L, 3D]; x: block input [BT, L, D]; mean, rstd: fp32 LN1
    statistics [BT, L, 1]; visible: [B|1, T, V] token indices; source_maps: [S, T, C].
    Returns [BT, 1+V, D] in x's dtype (row 0: CLS). The Triton kernel
    ``stdd_fast.kernels.stca_sparse_attention`` computes this function.
    """
    bt, _, d = x.shape
    t = visible.shape[1]
    b = bt // t
    s, _, c = source_maps.shape
    rows = _rows_with_cls(visible, bt)  # [BT, 1+V]
    n = rows.shape[1]

    z_head = x[..., :c].gather(1, rows[:, 1:, None].expand(bt, n - 1, c))  # [BT, V, C]
    y_head = mix_channels_ref(z_head.view(b, t, n - 1, c), source_maps).reshape(s, bt, n - 1, c)
    mean_v = mean.gather(1, rows[:, 1:, None])  # [BT, V, 1]
    rstd_v = rstd.gather(1, rows[:, 1:, None])
    zc, yc = z_head.float() - mean_v, y_head.float() - mean_v  # [BT, V, C], [S, BT, V, C]
    dmu = (yc - zc).sum(-1, keepdim=True) / d  # mu_y - mu_z: [S, BT, V, 1]
    s_y = rstd_v.pow(-2) + (yc.square() - zc.square()).sum(-1, keepdim=True) / d - dmu.square()
    rstd_y = torch.rsqrt(s_y)
    ratio = rstd_y / rstd_v  # r: [S, BT, V, 1]
    coeffs = torch.cat([1 - ratio, -rstd_y * dmu, rstd_y * (yc - zc)], dim=-1)  # [S, BT, V, C+2]

    one = torch.ones(s, bt, 1, 1, device=x.device)
    ratio = torch.cat([one, ratio], dim=2)  # the CLS row keeps its full-path projections
    coeffs = F.pad(coeffs, (0, 0, 1, 0))  # [S, BT, 1+V, C+2]
    packed = qkv.gather(1, rows[..., None].expand(bt, n, qkv.shape[-1])) * ratio.to(qkv.dtype)  # [S, BT, 1+V, 3D]
    packed.view(-1, packed.shape[-1]).addmm_(coeffs.to(qkv.dtype).view(-1, c + 2), proj.update)
    return attention(packed.view(s * bt, n, -1), num_heads).view(s, bt, n, d).mean(0)


def scatter_residual_ref(
    full: torch.Tensor,
    mlp: torch.Tensor,
    x: torch.Tensor,
    sparse_proj: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
) -> torch.Tensor:
    """The block output: ``F + MLP`` with the CLS and visible rows replaced by ``Abar + MLP``.

    full (F), mlp, x: [BT, L, D]; sparse_proj: (mean_s Attn_s) Wo^T + bo, [BT, 1+V, D]. For visible
    rows Abar = mean_s Y_s + sparse_proj (the mixed tokens averaged over scales); for CLS,
    Abar = x_cls + sparse_proj[0]. Returns [BT, L, D]. The Triton kernel
    ``stdd_fast.kernels.stca_scatter`` computes this function in one pass.
    """
    bt, _, d = x.shape
    t = visible.shape[1]
    c = source_maps.shape[-1]
    rows = _rows_with_cls(visible, bt)  # [BT, 1+V]
    rows_d = rows[..., None].expand(bt, rows.shape[1], d)
    base = x.gather(1, rows_d)  # [BT, 1+V, D]: CLS and the visible tokens before the shift
    mixed = mix_channels_ref(base[:, 1:, :c].reshape(bt // t, t, -1, c), source_maps).float().mean(0)
    base = torch.cat([base[:, :1], torch.cat([mixed.view(bt, -1, c).to(x.dtype), base[:, 1:, c:]], -1)], 1)
    return (full + mlp).scatter_(1, rows_d, base + sparse_proj + mlp.gather(1, rows_d))


def folded(owner: nn.Module, name: str, params: tuple[torch.Tensor, ...], build):
    """``build()``, cached on ``owner`` while no gradient is recorded and ``params`` are unchanged.

    Folded weights are a pure function of parameters; inference reuses them across calls, training
    (or any call under autograd) rebuilds them so gradients flow to the parameters.
    """
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
        return build()  # traced: the graph computes it (data_ptr is not traceable); autograd: must be rebuilt
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    cache = owner.__dict__.setdefault("_folded_cache", {})
    if name not in cache or cache[name][0] != key:
        cache[name] = (key, build())
    return cache[name][1]


def silu_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A CLIP MLP with QuickGELU as ``c_proj'(silu(c_fc'(x)))`` (1.702 folded into the weights)."""
    fc, proj = mlp.c_fc, mlp.c_proj
    fc_w, fc_b, proj_w = folded(
        mlp,
        "silu",
        (fc.weight, fc.bias, proj.weight),
        lambda: (fc.weight * QUICK_GELU_ALPHA, fc.bias * QUICK_GELU_ALPHA, proj.weight / QUICK_GELU_ALPHA),
    )
    hidden = F.linear(x, fc_w, fc_b)
    hidden = F.silu(hidden, inplace=not hidden.requires_grad)  # in place only where autograd needs no input
    return F.linear(hidden, proj_w, proj.bias)


class FusedPieces(NamedTuple):
    """The fusable pieces of the fused block, each a function of plain tensors (Triton replaces them)."""

    layer_norm: Callable = layer_norm_stats
    residual_layer_norm: Callable = residual_layer_norm_ref
    sparse_attention: Callable = sparse_attention_ref
    scatter_residual: Callable = scatter_residual_ref


PYTORCH_PIECES = FusedPieces()


def stca_block_fused(
    block: nn.Module,
    x: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
    pieces: FusedPieces = PYTORCH_PIECES,
) -> torch.Tensor:
    """One STCA block with the algebraic rewrite; same arguments and result as ``stca_block_ref``."""
    if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
        raise ConfigError("the fused STCA path supports CLIP blocks without LayerScale; use impl='reference'")
    heads = block.attn.num_heads
    attn, ln_1, ln_2 = block.attn, block.ln_1, block.ln_2
    h, mean, rstd = pieces.layer_norm(x, ln_1.weight, ln_1.bias, ln_1.eps)
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)  # [BT, L, 3D]
    attn_proj = F.linear(attention(qkv, heads), attn.out_proj.weight, attn.out_proj.bias)
    full, normed = pieces.residual_layer_norm(attn_proj, x, ln_2.weight, ln_2.bias, ln_2.eps)  # F, LN2(F)
    mlp = silu_mlp(block.mlp, normed) if isinstance(block.mlp.gelu, QuickGELU) else block.mlp(normed)

    params = (attn.in_proj_weight, attn.in_proj_bias, ln_1.weight, ln_1.bias)
    channels = source_maps.shape[-1]
    proj = folded(block, f"sparse{channels}", params, lambda: fold_sparse_projection(block, channels, x.dtype))
    sparse = pieces.sparse_attention(qkv, x, mean, rstd, visible, source_maps, proj, heads)  # [BT, 1+V, D]
    sparse_proj = F.linear(sparse, attn.out_proj.weight, attn.out_proj.bias)  # one out-projection for all scales
    return pieces.scatter_residual(full, mlp, x, sparse_proj, visible, source_maps)
