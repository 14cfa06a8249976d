"""The fused STCA block (``impl="fused"``): the function of :mod:`stdd_fast.stca.reference`, less work.

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
from typing import NamedTuple

import torch
from open_clip.transformer import QuickGELU
from torch import nn

from stdd_fast.errors import ConfigError
from stdd_fast.stca.pieces import (
    attention,
    fold_sparse_projection,
    layer_norm,
    linear,
    residual_layer_norm,
    scatter_residual,
    sparse_attention,
)

QUICK_GELU_ALPHA = 1.702


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


class FusedPieces(NamedTuple):
    """The replaceable pieces of the fused block, by stem (:mod:`stdd_fast.stca.pieces`; Triton, fp8 replace them)."""

    linear: Callable = linear
    layer_norm: Callable = layer_norm
    residual_layer_norm: Callable = residual_layer_norm
    sparse_attention: Callable = sparse_attention
    scatter_residual: Callable = scatter_residual


TORCH_PIECES = FusedPieces()


def block_mlp(mlp: nn.Module, x: torch.Tensor, pieces: FusedPieces) -> torch.Tensor:
    """A CLIP MLP through ``pieces.linear``: QuickGELU as ``c_proj'(silu(c_fc'(x)))`` (1.702 folded into the
    weights), exact GELU as it is; any other activation runs as the module."""
    fc, proj = mlp.c_fc, mlp.c_proj
    if isinstance(mlp.gelu, QuickGELU):
        fc_w, fc_b, proj_w = folded(
            mlp,
            "silu",
            (fc.weight, fc.bias, proj.weight),
            lambda: (fc.weight * QUICK_GELU_ALPHA, fc.bias * QUICK_GELU_ALPHA, proj.weight / QUICK_GELU_ALPHA),
        )
        return pieces.linear(pieces.linear(x, fc_w, fc_b, "silu"), proj_w, proj.bias)
    if type(mlp.gelu) is nn.GELU and mlp.gelu.approximate == "none":
        return pieces.linear(pieces.linear(x, fc.weight, fc.bias, "gelu"), proj.weight, proj.bias)
    return mlp(x)


def stca_block_fused(
    block: nn.Module,
    x: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
    pieces: FusedPieces = TORCH_PIECES,
) -> torch.Tensor:
    """One STCA block with the algebraic rewrite; same arguments and result as ``stca_block_reference``."""
    if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
        raise ConfigError("the fused STCA path supports CLIP blocks without LayerScale; use impl='reference'")
    heads = block.attn.num_heads
    attn, ln_1, ln_2 = block.attn, block.ln_1, block.ln_2
    h, mean, rstd = pieces.layer_norm(x, ln_1.weight, ln_1.bias, ln_1.eps)
    qkv = pieces.linear(h, attn.in_proj_weight, attn.in_proj_bias)  # [BT, L, 3D]
    attn_proj = pieces.linear(attention(qkv, heads), attn.out_proj.weight, attn.out_proj.bias)
    full, normed = pieces.residual_layer_norm(attn_proj, x, ln_2.weight, ln_2.bias, ln_2.eps)  # F, LN2(F)
    mlp = block_mlp(block.mlp, normed, pieces)

    params = (attn.in_proj_weight, attn.in_proj_bias, ln_1.weight, ln_1.bias)
    channels = source_maps.shape[-1]
    proj = folded(block, f"sparse{channels}", params, lambda: fold_sparse_projection(block, channels, x.dtype))
    sparse = pieces.sparse_attention(qkv, x, mean, rstd, visible, source_maps, proj, heads)  # [BT, 1+V, D]
    sparse_proj = pieces.linear(sparse, attn.out_proj.weight, attn.out_proj.bias)  # one out-projection for all scales
    return pieces.scatter_residual(full, mlp, x, sparse_proj, visible, source_maps)
