"""The fused STCA block's pieces in PyTorch: the functions the Triton kernels compute, one per stem.

Five stems live here: ``linear``, ``layer_norm``, ``residual_layer_norm``, ``sparse_attention``,
``scatter_residual`` (the sixth, ``score``, is the head: :func:`stdd_fast.head.score`). For a stem X,
:func:`X` here is the PyTorch piece, ``stdd_fast.kernels.X`` its Triton launcher, ``stdd_fast::X``
its custom op (:mod:`stdd_fast.triton_ops`), ``tests/test_X.py`` its test and
``benchmarks/bench_X.py`` its benchmark. How the pieces compose
into the block, and why the algebra is exact, is :mod:`stdd_fast.stca.fused`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stdd_fast.stca.reference import mix_channels


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


ACTIVATIONS = (None, "silu", "gelu")  # the epilogues of ``linear``: none, SiLU (fc1 of the SiLU MLP), exact GELU


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None
) -> torch.Tensor:
    """``x W^T + b``, then ``activation`` (None, ``"silu"`` or ``"gelu"``, erf form) on the result.

    Every matrix product of the fused block goes through this piece (QKV, the out-projections, the
    MLP), so a GEMM with its epilogue (the Triton kernel ``stdd_fast.kernels.linear``) or a
    quantised GEMM (:mod:`stdd_fast.fp8`) replaces all of them in one place. Here the activation is
    a second pass over the rounded product, in place where autograd needs no input.
    """
    return activate(F.linear(x, weight, bias), activation)


def activate(out: torch.Tensor, activation: str | None) -> torch.Tensor:
    """``activation`` (one of :data:`ACTIVATIONS`) applied to a linear layer's result, in place where autograd
    needs no input (every GEMM that leaves its activation as a second pass shares this)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear: activation={activation!r}; expected one of {ACTIVATIONS}")
    if activation == "silu":
        return F.silu(out, inplace=not out.requires_grad)
    if activation == "gelu":
        return F.gelu(out)
    return out


def layer_norm(
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


def residual_layer_norm(
    update: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F = update + x`` (rounded to x's dtype) and the LayerNorm of the stored ``F``: (F, LN(F)).

    The Triton kernel ``stdd_fast.kernels.residual_layer_norm`` computes both in one pass.
    """
    full = update + x
    return full, layer_norm(full, weight, bias, eps)[0]


def attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Per-sequence softmax attention of packed projections: [N, L, 3D] -> [N, L, D] (before out-proj)."""
    n, length, three_d = qkv.shape
    q, k, v = qkv.view(n, length, 3, num_heads, three_d // (3 * num_heads)).permute(2, 0, 3, 1, 4)  # [N, H, L, hd]
    out = F.scaled_dot_product_attention(q, k, v)  # [N, H, L, hd]
    return out.transpose(1, 2).reshape(n, length, three_d // 3)


def rows_with_cls(visible: torch.Tensor, batch_frames: int) -> torch.Tensor:
    """[B|1, T, V] visible token indices -> [BT, 1+V] rows of the sparse path (CLS = token 0 first)."""
    t = visible.shape[1]
    vis = visible.expand(batch_frames // t, t, -1).reshape(batch_frames, -1)
    return F.pad(vis, (1, 0))


def flat_rows(rows: torch.Tensor, length: int) -> torch.Tensor:
    """[BT, N] token indices per frame -> [BT*N] row indices into the frames' tokens flattened to [BT*L, ...].

    Whole rows move with ``index_select`` / ``index_copy_`` (one contiguous copy per row) instead of
    ``gather`` / ``scatter`` with an index expanded over the channels (one index per element): the
    same values, bit for bit, at a quarter of the time on a CPU, and ONNX Gather / ScatterND rows
    instead of GatherElements / ScatterElements in the exported graph.
    """
    frames = torch.arange(rows.shape[0], device=rows.device)[:, None]
    return (rows + frames * length).flatten()


def sparse_attention(
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
    ``stdd_fast.kernels.sparse_attention`` computes this function.
    """
    bt, _, d = x.shape
    t = visible.shape[1]
    b = bt // t
    s, _, c = source_maps.shape
    rows = rows_with_cls(visible, bt)  # [BT, 1+V]
    n = rows.shape[1]

    z_head = x[..., :c].gather(1, rows[:, 1:, None].expand(bt, n - 1, c))  # [BT, V, C]
    y_head = mix_channels(z_head.view(b, t, n - 1, c), source_maps).reshape(s, bt, n - 1, c)
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
    picked = qkv.flatten(0, 1).index_select(0, flat_rows(rows, qkv.shape[1])).view(bt, n, -1)  # [BT, 1+V, 3D]
    packed = picked * ratio.to(qkv.dtype)  # [S, BT, 1+V, 3D]
    packed.view(-1, packed.shape[-1]).addmm_(coeffs.to(qkv.dtype).view(-1, c + 2), proj.update)
    return attention(packed.view(s * bt, n, -1), num_heads).view(s, bt, n, d).mean(0)


def scatter_residual(
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
    ``stdd_fast.kernels.scatter_residual`` computes this function in one pass.
    """
    bt, _, d = x.shape
    t = visible.shape[1]
    c = source_maps.shape[-1]
    rows = flat_rows(rows_with_cls(visible, bt), x.shape[1])  # [BT*(1+V)]
    base = x.flatten(0, 1).index_select(0, rows).view(bt, -1, d)  # [BT, 1+V, D]: CLS and the visible tokens
    mixed = mix_channels(base[:, 1:, :c].reshape(bt // t, t, -1, c), source_maps).float().mean(0)
    base = torch.cat([base[:, :1], torch.cat([mixed.view(bt, -1, c).to(x.dtype), base[:, 1:, c:]], -1)], 1)
    kept = base + sparse_proj + mlp.flatten(0, 1).index_select(0, rows).view_as(base)
    out = full + mlp
    out.view(-1, d).index_copy_(0, rows, kept.view(-1, d))
    return out


def sparse_attention_inputs(
    block: nn.Module, x: torch.Tensor, visible: torch.Tensor, source_maps: torch.Tensor
) -> tuple:
    """The arguments of :func:`sparse_attention` for ``block`` on ``x``, as the fused block computes them.

    Returns ``(qkv, x, mean, rstd, visible, source_maps, proj, num_heads)`` (for tests and benchmarks
    of the piece on its own).
    """
    ln = block.ln_1
    h, mean, rstd = layer_norm(x, ln.weight, ln.bias, ln.eps)
    qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias)
    proj = fold_sparse_projection(block, source_maps.shape[-1], x.dtype)
    return qkv, x, mean, rstd, visible, source_maps, proj, block.attn.num_heads
