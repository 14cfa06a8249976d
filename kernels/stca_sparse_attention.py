"""Triton kernel: STCA's sparse path in one launch. Reference: ``stdd_fast.stca_fused.sparse_attention_ref``.

One program per (frame, head, block of query rows). For every temporal scale it

1. gathers the visible tokens' full-path projections of its head (CLS first), and the shifted
   channels straight from the neighbouring frames' visible slots (no shifted copy in memory);
2. rebuilds the mixed tokens' LayerNorm statistics and projections with the rank-C update of
   ``stdd_fast.stca_fused`` (ratio * qkv_z + (1 - r) c - rstd_y dmu g + rstd_y delta W_g^T);
3. runs softmax attention over the 1 + V tokens of the frame;

and averages the outputs over scales in the epilogue. Statistics, the update and softmax are fp32;
in fp16/bf16 the dots take fp16/bf16 operands with fp32 accumulation, in fp32 they are exact
(``input_precision="ieee"``, no TF32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from stdd_fast.stca_fused import SparseProjection


@triton.jit
def _mixed_rows(
    rows,
    row_ok,
    tok,
    frame,
    vid,
    t,
    x_ptr,
    vis_ptr,
    src_ptr,
    mean_z,
    rstd_z,
    s,
    sx_f,
    sx_l,
    sv_b,
    sv_t,
    ss_s,
    ss_t,
    T: tl.constexpr,
    D: tl.constexpr,
    C: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per-row update coefficients of one scale: (ratio, rstd_y * dmu, rstd_y * delta [rows, BLOCK_C])."""
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < C
    patch = row_ok & (rows > 0)  # row 0 is the CLS token: never shifted
    slot = tl.where(patch, rows - 1, 0)
    m2 = patch[:, None] & col_ok[None, :]
    z = tl.load(x_ptr + frame * sx_f + tok[:, None] * sx_l + cols[None, :], mask=m2, other=0.0).to(tl.float32)
    src = tl.load(src_ptr + s * ss_s + t * ss_t + cols, mask=col_ok, other=T)  # source frame per channel
    has_src = (src < T) & col_ok
    src_c = tl.where(has_src, src, 0)
    m_src = patch[:, None] & has_src[None, :]
    src_tok = tl.load(vis_ptr + vid * sv_b + src_c[None, :] * sv_t + slot[:, None], mask=m_src, other=0)
    y = tl.load(x_ptr + (vid * T + src_c[None, :]) * sx_f + src_tok * sx_l + cols[None, :], mask=m_src, other=0.0).to(
        tl.float32
    )
    delta = tl.where(m2, y - z, 0.0)
    zc = tl.where(m2, z - mean_z[:, None], 0.0)
    yc = tl.where(m2, y - mean_z[:, None], 0.0)
    dmu = tl.sum(delta, axis=1) / D
    s_y = 1.0 / (rstd_z * rstd_z) + tl.sum(yc * yc - zc * zc, axis=1) / D - dmu * dmu
    rstd_y = 1.0 / tl.sqrt(s_y)
    return rstd_y / rstd_z, rstd_y * dmu, rstd_y[:, None] * delta


@triton.jit
def _head_rows(part: tl.constexpr, tok, row_ok, frame, head, qkv_ptr, sq_f, sq_l, D: tl.constexpr, HD: tl.constexpr):
    """Full-path projection rows of one head (``part`` 0 = q, 1 = k, 2 = v): fp32 [rows, HD]."""
    d = tl.arange(0, HD)
    cols = part * D + head * HD + d
    rows = tl.load(qkv_ptr + frame * sq_f + tok[:, None] * sq_l + cols[None, :], mask=row_ok[:, None], other=0.0)
    return rows.to(tl.float32)


@triton.jit
def _shifted(
    part: tl.constexpr,
    base,
    head,
    ratio,
    shift,
    coeff,
    const_ptr,
    gain_ptr,
    w_ptr,
    sw_o,
    D: tl.constexpr,
    C: tl.constexpr,
    HD: tl.constexpr,
    BLOCK_C: tl.constexpr,
    DOT_FP32: tl.constexpr,
):
    """q, k or v of one head after the shift: r base + (1 - r) c - rstd_y dmu g + rstd_y delta W_g^T."""
    d = tl.arange(0, HD)
    cols = tl.arange(0, BLOCK_C)
    out_col = part * D + head * HD + d
    const = tl.load(const_ptr + out_col)
    gain = tl.load(gain_ptr + out_col)
    # W_g[out_col, :C]^T as [BLOCK_C, HD]
    w = tl.load(w_ptr + out_col[None, :] * sw_o + cols[:, None], mask=(cols < C)[:, None], other=0.0)
    update = tl.dot(coeff, w, input_precision="ieee") if DOT_FP32 else tl.dot(coeff.to(w.dtype), w)
    r = ratio[:, None]
    return r * base + (1.0 - r) * const[None, :] - shift[:, None] * gain[None, :] + update


@triton.jit
def _stca_sparse_attention_kernel(
    qkv_ptr,
    x_ptr,
    mean_ptr,
    rstd_ptr,
    vis_ptr,
    src_ptr,
    const_ptr,
    gain_ptr,
    w_ptr,
    out_ptr,
    sq_f,
    sq_l,
    sx_f,
    sx_l,
    sm_f,
    sv_b,
    sv_t,
    ss_s,
    ss_t,
    sw_o,
    so_f,
    so_r,
    sm_scale,
    T: tl.constexpr,
    D: tl.constexpr,
    HD: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    S: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    DOT_FP32: tl.constexpr,
):
    frame = tl.program_id(0)
    head = tl.program_id(1)
    m_block = tl.program_id(2)
    vid = frame // T
    t = frame % T

    keys = tl.arange(0, BLOCK_N)
    key_ok = keys < V + 1
    key_tok = tl.load(
        vis_ptr + vid * sv_b + t * sv_t + tl.where(keys > 0, keys - 1, 0), mask=key_ok & (keys > 0), other=0
    )
    key_mean = tl.load(mean_ptr + frame * sm_f + key_tok, mask=key_ok, other=0.0)
    key_rstd = tl.load(rstd_ptr + frame * sm_f + key_tok, mask=key_ok, other=1.0)

    queries = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    query_ok = queries < V + 1
    query_tok = tl.load(
        vis_ptr + vid * sv_b + t * sv_t + tl.where(queries > 0, queries - 1, 0), mask=query_ok & (queries > 0), other=0
    )
    query_mean = tl.load(mean_ptr + frame * sm_f + query_tok, mask=query_ok, other=0.0)
    query_rstd = tl.load(rstd_ptr + frame * sm_f + query_tok, mask=query_ok, other=1.0)

    # the full-path rows are the same for every scale: load them once
    k_base = _head_rows(1, key_tok, key_ok, frame, head, qkv_ptr, sq_f, sq_l, D, HD)
    v_base = _head_rows(2, key_tok, key_ok, frame, head, qkv_ptr, sq_f, sq_l, D, HD)
    q_base = _head_rows(0, query_tok, query_ok, frame, head, qkv_ptr, sq_f, sq_l, D, HD)
    low = qkv_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_M, HD), dtype=tl.float32)
    for s in tl.static_range(S):
        ratio, shift, coeff = _mixed_rows(
            keys,
            key_ok,
            key_tok,
            frame,
            vid,
            t,
            x_ptr,
            vis_ptr,
            src_ptr,
            key_mean,
            key_rstd,
            s,
            sx_f,
            sx_l,
            sv_b,
            sv_t,
            ss_s,
            ss_t,
            T,
            D,
            C,
            BLOCK_C,
        )
        k = _shifted(
            1, k_base, head, ratio, shift, coeff, const_ptr, gain_ptr, w_ptr, sw_o, D, C, HD, BLOCK_C, DOT_FP32
        )
        v = _shifted(
            2, v_base, head, ratio, shift, coeff, const_ptr, gain_ptr, w_ptr, sw_o, D, C, HD, BLOCK_C, DOT_FP32
        )
        q_ratio, q_shift, q_coeff = _mixed_rows(
            queries,
            query_ok,
            query_tok,
            frame,
            vid,
            t,
            x_ptr,
            vis_ptr,
            src_ptr,
            query_mean,
            query_rstd,
            s,
            sx_f,
            sx_l,
            sv_b,
            sv_t,
            ss_s,
            ss_t,
            T,
            D,
            C,
            BLOCK_C,
        )
        q = _shifted(
            0, q_base, head, q_ratio, q_shift, q_coeff, const_ptr, gain_ptr, w_ptr, sw_o, D, C, HD, BLOCK_C, DOT_FP32
        )
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") if DOT_FP32 else tl.dot(q.to(low), tl.trans(k.to(low)))
        scores = tl.where(key_ok[None, :], scores * sm_scale, float("-inf"))
        p = tl.exp(scores - tl.max(scores, axis=1)[:, None])
        p = p / tl.sum(p, axis=1)[:, None]
        if DOT_FP32:
            acc += tl.dot(p, v, input_precision="ieee")
        else:
            acc += tl.dot(p.to(low), v.to(low))
    d = tl.arange(0, HD)
    out = acc / S
    tl.store(
        out_ptr + frame * so_f + queries[:, None] * so_r + head * HD + d[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=query_ok[:, None],
    )


def stca_sparse_attention(
    qkv: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
    proj: SparseProjection,
    num_heads: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton launch of ``sparse_attention_ref`` (same arguments, same result): [BT, 1+V, D] (into ``out`` if given)."""
    bt, length, d = x.shape
    t = visible.shape[1]
    v = visible.shape[2]
    s, _, c = source_maps.shape
    hd = d // num_heads
    if qkv.stride(-1) != 1 or x.stride(-1) != 1:
        raise ValueError("stca_sparse_attention needs the channel dimension contiguous")
    mean = mean.reshape(bt, length).contiguous()
    rstd = rstd.reshape(bt, length).contiguous()
    vis = visible.to(torch.int32).contiguous()
    src = source_maps.to(torch.int32).contiguous()
    head_w = proj.head.contiguous()  # [3D, C]
    if out is None:
        out = torch.empty(bt, v + 1, d, device=x.device, dtype=x.dtype)
    block_n = max(16, triton.next_power_of_2(v + 1))
    block_m = min(64, block_n)
    grid = (bt, num_heads, triton.cdiv(v + 1, block_m))
    _stca_sparse_attention_kernel[grid](
        qkv,
        x,
        mean,
        rstd,
        vis,
        src,
        proj.const,
        proj.gain_sum,
        head_w,
        out,
        qkv.stride(0),
        qkv.stride(1),
        x.stride(0),
        x.stride(1),
        mean.stride(0),
        vis.stride(0) if vis.shape[0] > 1 else 0,
        vis.stride(1),
        src.stride(0),
        src.stride(1),
        head_w.stride(0),
        out.stride(0),
        out.stride(1),
        hd**-0.5,
        T=t,
        D=d,
        HD=hd,
        V=v,
        C=c,
        S=s,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_C=max(16, triton.next_power_of_2(c)),
        DOT_FP32=x.dtype == torch.float32,
        num_warps=8 if block_n >= 128 else 4,
    )
    return out
