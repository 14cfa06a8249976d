"""Triton kernel: STCA's scatter-back fused with the residual. PyTorch piece: ``stca.pieces.scatter_residual``.

One pass writes the whole block output: masked patches get ``F + MLP``; the CLS and visible rows get
``Abar + MLP`` with ``Abar = mean_s Y_s + sparse_proj`` (CLS: ``x_cls + sparse_proj[0]``), the shifted
channels of ``mean_s Y_s`` read straight from the neighbouring frames' visible slots. The tile
shape is tuned per problem shape on CUDA (:mod:`stdd_fast.kernels.launch_tuning`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch_tuning import LaunchTuner


@triton.jit
def _scatter_residual_kernel(
    full_ptr,
    mlp_ptr,
    x_ptr,
    sp_ptr,
    vis_ptr,
    src_ptr,
    out_ptr,
    s_f,
    s_l,
    ssp_f,
    ssp_r,
    sv_b,
    sv_t,
    ss_s,
    ss_t,
    T: tl.constexpr,
    L: tl.constexpr,
    D: tl.constexpr,
    C: tl.constexpr,
    S: tl.constexpr,
    V: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    frame = tl.program_id(0)
    tok = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    cols = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    vid = frame // T
    t = frame % T
    tok_ok = tok < L
    col_ok = cols < D
    m2 = tok_ok[:, None] & col_ok[None, :]
    offs = frame * s_f + tok[:, None] * s_l + cols[None, :]

    # each token's row in the sparse path (0: CLS, 1 + slot: visible patch, -1: masked patch), found by
    # matching the tile's tokens against the frame's visible list (distinct tokens, so max picks the match)
    slots = tl.arange(0, BLOCK_V)
    visible = tl.load(vis_ptr + vid * sv_b + t * sv_t + slots, mask=slots < V, other=-1).to(tl.int32)
    row = tl.max(tl.where(visible[None, :] == tok[:, None], slots[None, :] + 1, -1), axis=1)
    row = tl.where(tok == 0, 0, row)
    sparse = (row >= 0) & tok_ok
    mlp = tl.load(mlp_ptr + offs, mask=m2, other=0.0).to(tl.float32)
    full = tl.load(full_ptr + offs, mask=m2 & ~sparse[:, None], other=0.0).to(tl.float32)

    m_sparse = m2 & sparse[:, None]
    proj = tl.load(
        sp_ptr + frame * ssp_f + tl.where(sparse, row, 0)[:, None] * ssp_r + cols[None, :], mask=m_sparse, other=0.0
    ).to(tl.float32)
    shifted = (row > 0)[:, None] & (cols < C)[None, :]  # visible patches' first C channels
    base = tl.load(x_ptr + offs, mask=m_sparse & ~shifted, other=0.0).to(tl.float32)
    slot = tl.where(row > 0, row - 1, 0)
    for s in tl.static_range(S):
        src = tl.load(src_ptr + s * ss_s + t * ss_t + cols, mask=col_ok & (cols < C), other=T).to(tl.int32)
        has_src = src < T
        src_c = tl.where(has_src, src, 0)
        m_src = m2 & shifted & has_src[None, :]
        src_tok = tl.load(vis_ptr + vid * sv_b + src_c[None, :] * sv_t + slot[:, None], mask=m_src, other=0).to(
            tl.int32
        )
        y = tl.load(x_ptr + (vid * T + src_c[None, :]) * s_f + src_tok * s_l + cols[None, :], mask=m_src, other=0.0)
        base += y.to(tl.float32) / S
    out = tl.where(sparse[:, None], base + proj, full) + mlp
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=m2)


# elementwise: every tiling writes the same bits; the first is the untuned default
TILES = [
    {"block_l": 32, "block_d": 128, "warps": 4},
    {"block_l": 16, "block_d": 256, "warps": 4},
    {"block_l": 64, "block_d": 128, "warps": 8},
    {"block_l": 8, "block_d": 512, "warps": 4},
    {"block_l": 32, "block_d": 256, "warps": 8},
]
TUNER = LaunchTuner("scatter_residual")


def scatter_residual(
    full: torch.Tensor,
    mlp: torch.Tensor,
    x: torch.Tensor,
    sparse_proj: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
    out: torch.Tensor | None = None,
    tile: dict | None = None,
) -> torch.Tensor:
    """The PyTorch piece ``scatter_residual`` (same arguments, same result): [BT, L, D] (into ``out`` if given).

    ``out`` must not share memory with an input. ``tile`` (one of ``TILES``) fixes the launch shape;
    ``None`` lets :mod:`launch_tuning` pick it per shape on CUDA.
    """
    bt, length, d = x.shape
    t, v = visible.shape[1], visible.shape[2]
    s, _, c = source_maps.shape
    full, mlp, x = full.contiguous(), mlp.contiguous(), x.contiguous()
    sparse_proj = sparse_proj.contiguous()
    vis = visible.contiguous()  # int64 as the index builds it: no conversion launch per call
    src = source_maps.contiguous()
    if out is None:
        out = torch.empty_like(full)
    elif any(out.data_ptr() == t.data_ptr() for t in (full, mlp, x)):
        raise ValueError("scatter_residual: out must not share memory with full, mlp or x")

    def launch(config: dict) -> None:
        block_l, block_d = config["block_l"], config["block_d"]
        grid = (bt, triton.cdiv(length, block_l), triton.cdiv(d, block_d))
        _scatter_residual_kernel[grid](
            full, mlp, x, sparse_proj, vis, src, out,
            x.stride(0), x.stride(1), sparse_proj.stride(0), sparse_proj.stride(1),
            vis.stride(0) if vis.shape[0] > 1 else 0, vis.stride(1), src.stride(0), src.stride(1),
            T=t, L=length, D=d, C=c, S=s, V=v, BLOCK_L=block_l, BLOCK_D=block_d,
            BLOCK_V=max(16, triton.next_power_of_2(v)), num_warps=config["warps"],
        )  # fmt: skip

    key = (bt, t, v, length, d, s, c, x.dtype)
    launch(tile if tile is not None else TUNER.pick(key, TILES, launch, x.device))
    return out
