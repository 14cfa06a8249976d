"""Triton kernel: STCA's sparse path in one launch. PyTorch piece: ``stdd_fast.stca.pieces.sparse_attention``.

One program per frame and group of heads (how many heads a program takes is tuned per shape on
CUDA: :mod:`stdd_fast.kernels.launch_tuning`). For every temporal scale it

1. gathers the shifted channels of the frame's visible slots straight from the neighbouring
   frames (no shifted copy in memory) and rebuilds the mixed tokens' LayerNorm statistics: the
   update coefficients of ``stdd_fast.stca.fused``, once per program and scale, shared by its heads;
2. for each of its heads, gathers the visible tokens' full-path projections (CLS first), applies the
   rank-C update (ratio * qkv_z + (1 - r) c - rstd_y dmu g + rstd_y delta W_g^T) and runs softmax
   attention over the 1 + V tokens of the frame;

and accumulates the mean over scales in fp32 (the last scale writes the output dtype). Splitting
a frame's heads over several programs recomputes step 1 once per program: more parallelism (a
batch-1 clip is only 8 frames) for more gathers. An earlier design with one program per (frame,
head, query block) re-gathered the shifted channels for every head and query block (36x the
scattered loads at B/16) and ran no faster than the PyTorch fused path on an H100
(benchmarks/results/gpu_check_h100_run1.json); all heads in one program (the first candidate, the
untuned default) ran the B/16 encoder at 1.78x the reference (gpu_check_h100_run2.json).

Frames of more than ``MAX_TILE_ROWS`` rows (ViT-L/14: 1 + 128) do not fit one tile and take the
**blocked kernel**, two launches: step 1 writes each row's update coefficients (ratio, shift, and
the C-wide delta row in the compute dtype: the dots' operand precision, so no bit is lost) to a
scratch buffer, once per frame, scale and block of ``BLOCKED_ROWS`` rows; step 2 runs one program
per frame and group of heads that walks query blocks against key blocks with an online softmax
(flash attention), rebuilding each block's q, k or v from the full-path rows and the scratch
coefficients. Its launch shape (64-row blocks, 4 warps) is chosen for the L/14 frame (3 blocks of
64 waste 63 rows where one 256-row tile wasted 127); heads per program are tuned as above.

Statistics, the update and softmax are fp32; in fp16/bf16 the dots take fp16/bf16 operands
with fp32 accumulation. In fp32 the dots' input precision is the launcher's ``fp32_dot``
(the constexpr ``FP32_DOT``; empty in fp16/bf16): ``"ieee"`` is exact fp32 on FMA units (the
interpreter's arithmetic, and slow on a GPU: 4.05 ms against bf16's 0.072 ms for 16 B/16 frames on
an H100), ``"tf32x3"`` splits each operand into a TF32 high part and residual and sums three
tensor-core products, fp32-accurate (~1e-6 relative) at tensor-core speed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch_tuning import LaunchTuner

# One program holds a frame's CLS + visible rows in one power-of-two tile when they number at most
# 128 (ViT-B/16: 1 + 98). 256 rows (ViT-L/14: 1 + 128) would need 480 KB of shared memory, more than
# an H100 has (measured, benchmarks/results/gpu_check_h100_run2.json): larger frames take the
# blocked kernel below, which walks the rows in blocks of BLOCKED_ROWS with an online softmax.
MAX_TILE_ROWS = 128
BLOCKED_ROWS = 64
FP32_DOTS = ("ieee", "tf32x3")  # the fp32 dots' input precisions (see the module docstring)


def fits_one_tile(num_visible: int) -> bool:
    """Whether frames of ``num_visible`` visible patches (plus CLS) fit the one-tile kernel (else: the blocked one)."""
    return num_visible + 1 <= MAX_TILE_ROWS


@triton.jit
def _row_tokens(rows, row_ok, vis_ptr, vid, t, sv_b, sv_t):
    """Token index of each sparse row: row 0 is the CLS token (token 0), row 1 + k the frame's visible slot k."""
    slot = tl.where(rows > 0, rows - 1, 0)
    return tl.load(vis_ptr + vid * sv_b + t * sv_t + slot, mask=row_ok & (rows > 0), other=0).to(tl.int32)


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
    src = tl.load(src_ptr + s * ss_s + t * ss_t + cols, mask=col_ok, other=T).to(tl.int32)  # source frame per channel
    has_src = (src < T) & col_ok
    src_c = tl.where(has_src, src, 0)
    m_src = patch[:, None] & has_src[None, :]
    src_tok = tl.load(vis_ptr + vid * sv_b + src_c[None, :] * sv_t + slot[:, None], mask=m_src, other=0).to(tl.int32)
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
    FP32_DOT: tl.constexpr,
):
    """q, k or v of one head after the shift: r base + (1 - r) c - rstd_y dmu g + rstd_y delta W_g^T."""
    d = tl.arange(0, HD)
    cols = tl.arange(0, BLOCK_C)
    out_col = part * D + head * HD + d
    const = tl.load(const_ptr + out_col)
    gain = tl.load(gain_ptr + out_col)
    # W_g[out_col, :C]^T as [BLOCK_C, HD]
    w = tl.load(w_ptr + out_col[None, :] * sw_o + cols[:, None], mask=(cols < C)[:, None], other=0.0)
    update = tl.dot(coeff, w, input_precision=FP32_DOT) if FP32_DOT != "" else tl.dot(coeff.to(w.dtype), w)
    r = ratio[:, None]
    return r * base + (1.0 - r) * const[None, :] - shift[:, None] * gain[None, :] + update


@triton.jit
def _store_scale(
    o, rows, row_ok, cols, frame, acc_ptr, out_ptr, sa_f, sa_r, so_f, so_r, s: tl.constexpr, S: tl.constexpr
):
    """Adds scale ``s``'s share ``o`` of the mean over scales: fp32 partial sums in acc, the last scale writes out."""
    acc_ptrs = acc_ptr + frame * sa_f + rows[:, None] * sa_r + cols[None, :]
    out_ptrs = out_ptr + frame * so_f + rows[:, None] * so_r + cols[None, :]
    if s > 0:
        o += tl.load(acc_ptrs, mask=row_ok[:, None], other=0.0)
    if s == S - 1:
        tl.store(out_ptrs, o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
    else:
        tl.store(acc_ptrs, o, mask=row_ok[:, None])


@triton.jit
def _sparse_attention_kernel(
    qkv_ptr,
    x_ptr,
    mean_ptr,
    rstd_ptr,
    vis_ptr,
    src_ptr,
    const_ptr,
    gain_ptr,
    w_ptr,
    acc_ptr,
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
    sa_f,
    sa_r,
    so_f,
    so_r,
    sm_scale,
    T: tl.constexpr,
    D: tl.constexpr,
    HD: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    S: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    FP32_DOT: tl.constexpr,
    HEADS: tl.constexpr,
):
    frame = tl.program_id(0)
    first_head = tl.program_id(1) * HEADS
    vid = frame // T
    t = frame % T
    rows = tl.arange(0, BLOCK_N)  # row 0: CLS, rows 1..V: visible slots, the rest padding
    row_ok = rows < V + 1
    tok = _row_tokens(rows, row_ok, vis_ptr, vid, t, sv_b, sv_t)
    mean_z = tl.load(mean_ptr + frame * sm_f + tok, mask=row_ok, other=0.0)
    rstd_z = tl.load(rstd_ptr + frame * sm_f + tok, mask=row_ok, other=1.0)
    d = tl.arange(0, HD)
    low = qkv_ptr.dtype.element_ty
    for s in tl.static_range(S):
        # the shift's coefficients depend on the rows only: computed once per frame and scale, for all heads
        ratio, shift, coeff = _mixed_rows(
            rows, row_ok, tok, frame, vid, t, x_ptr, vis_ptr, src_ptr, mean_z, rstd_z, s,
            sx_f, sx_l, sv_b, sv_t, ss_s, ss_t, T, D, C, BLOCK_C,
        )  # fmt: skip
        for group_head in range(HEADS):
            head = first_head + group_head
            q = _shifted(0, _head_rows(0, tok, row_ok, frame, head, qkv_ptr, sq_f, sq_l, D, HD), head, ratio, shift,
                         coeff, const_ptr, gain_ptr, w_ptr, sw_o, D, C, HD, BLOCK_C, FP32_DOT)  # fmt: skip
            k = _shifted(1, _head_rows(1, tok, row_ok, frame, head, qkv_ptr, sq_f, sq_l, D, HD), head, ratio, shift,
                         coeff, const_ptr, gain_ptr, w_ptr, sw_o, D, C, HD, BLOCK_C, FP32_DOT)  # fmt: skip
            v = _shifted(2, _head_rows(2, tok, row_ok, frame, head, qkv_ptr, sq_f, sq_l, D, HD), head, ratio, shift,
                         coeff, const_ptr, gain_ptr, w_ptr, sw_o, D, C, HD, BLOCK_C, FP32_DOT)  # fmt: skip
            scores = (
                tl.dot(q, tl.trans(k), input_precision=FP32_DOT)
                if FP32_DOT != ""
                else tl.dot(q.to(low), tl.trans(k.to(low)))
            )
            scores = tl.where(row_ok[None, :], scores * sm_scale, float("-inf"))
            p = tl.exp(scores - tl.max(scores, axis=1)[:, None])
            p = p / tl.sum(p, axis=1)[:, None]
            o = (tl.dot(p, v, input_precision=FP32_DOT) if FP32_DOT != "" else tl.dot(p.to(low), v.to(low))) / S
            _store_scale(o, rows, row_ok, head * HD + d, frame, acc_ptr, out_ptr, sa_f, sa_r, so_f, so_r, s, S)


@triton.jit
def _mixed_rows_kernel(
    x_ptr,
    mean_ptr,
    rstd_ptr,
    vis_ptr,
    src_ptr,
    ratio_ptr,
    shift_ptr,
    coeff_ptr,
    sx_f,
    sx_l,
    sm_f,
    sv_b,
    sv_t,
    ss_s,
    ss_t,
    sr_s,
    sr_f,
    sc_s,
    sc_f,
    sc_r,
    T: tl.constexpr,
    D: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Blocked kernel, step 1: the update coefficients of one block of a frame's rows at one scale, to scratch."""
    frame = tl.program_id(0)
    s = tl.program_id(1)
    rows = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    vid = frame // T
    t = frame % T
    row_ok = rows < V + 1
    tok = _row_tokens(rows, row_ok, vis_ptr, vid, t, sv_b, sv_t)
    mean_z = tl.load(mean_ptr + frame * sm_f + tok, mask=row_ok, other=0.0)
    rstd_z = tl.load(rstd_ptr + frame * sm_f + tok, mask=row_ok, other=1.0)
    ratio, shift, coeff = _mixed_rows(
        rows, row_ok, tok, frame, vid, t, x_ptr, vis_ptr, src_ptr, mean_z, rstd_z, s,
        sx_f, sx_l, sv_b, sv_t, ss_s, ss_t, T, D, C, BLOCK_C,
    )  # fmt: skip
    tl.store(ratio_ptr + s * sr_s + frame * sr_f + rows, ratio, mask=row_ok)
    tl.store(shift_ptr + s * sr_s + frame * sr_f + rows, shift, mask=row_ok)
    cols = tl.arange(0, BLOCK_C)
    coeff_ptrs = coeff_ptr + s * sc_s + frame * sc_f + rows[:, None] * sc_r + cols[None, :]
    tl.store(coeff_ptrs, coeff.to(coeff_ptr.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _blocked_rows(
    part: tl.constexpr,
    rows,
    row_ok,
    frame,
    vid,
    t,
    head,
    s,
    qkv_ptr,
    vis_ptr,
    ratio_ptr,
    shift_ptr,
    coeff_ptr,
    const_ptr,
    gain_ptr,
    w_ptr,
    sq_f,
    sq_l,
    sv_b,
    sv_t,
    sr_s,
    sr_f,
    sc_s,
    sc_f,
    sc_r,
    sw_o,
    D: tl.constexpr,
    C: tl.constexpr,
    HD: tl.constexpr,
    BLOCK_C: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    """q, k or v of one head for one block of rows, from the full-path rows and the scratch coefficients."""
    tok = _row_tokens(rows, row_ok, vis_ptr, vid, t, sv_b, sv_t)
    base = _head_rows(part, tok, row_ok, frame, head, qkv_ptr, sq_f, sq_l, D, HD)
    ratio = tl.load(ratio_ptr + s * sr_s + frame * sr_f + rows, mask=row_ok, other=1.0)
    shift = tl.load(shift_ptr + s * sr_s + frame * sr_f + rows, mask=row_ok, other=0.0)
    cols = tl.arange(0, BLOCK_C)
    coeff_ptrs = coeff_ptr + s * sc_s + frame * sc_f + rows[:, None] * sc_r + cols[None, :]
    coeff = tl.load(coeff_ptrs, mask=row_ok[:, None], other=0.0)
    return _shifted(
        part, base, head, ratio, shift, coeff, const_ptr, gain_ptr, w_ptr, sw_o, D, C, HD, BLOCK_C, FP32_DOT
    )


@triton.jit
def _sparse_attention_blocked_kernel(
    qkv_ptr,
    vis_ptr,
    ratio_ptr,
    shift_ptr,
    coeff_ptr,
    const_ptr,
    gain_ptr,
    w_ptr,
    acc_ptr,
    out_ptr,
    sq_f,
    sq_l,
    sv_b,
    sv_t,
    sr_s,
    sr_f,
    sc_s,
    sc_f,
    sc_r,
    sw_o,
    sa_f,
    sa_r,
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
    BLOCK_C: tl.constexpr,
    FP32_DOT: tl.constexpr,
    HEADS: tl.constexpr,
):
    """Blocked kernel, step 2: per head, query blocks against key blocks with an online softmax (flash attention)."""
    frame = tl.program_id(0)
    first_head = tl.program_id(1) * HEADS
    vid = frame // T
    t = frame % T
    offs = tl.arange(0, BLOCK_M)
    d = tl.arange(0, HD)
    low = qkv_ptr.dtype.element_ty
    for s in tl.static_range(S):
        for group_head in range(HEADS):
            head = first_head + group_head
            for q_start in range(0, V + 1, BLOCK_M):
                rows = q_start + offs
                row_ok = rows < V + 1
                q = _blocked_rows(0, rows, row_ok, frame, vid, t, head, s, qkv_ptr, vis_ptr, ratio_ptr, shift_ptr,
                                  coeff_ptr, const_ptr, gain_ptr, w_ptr, sq_f, sq_l, sv_b, sv_t, sr_s, sr_f, sc_s,
                                  sc_f, sc_r, sw_o, D, C, HD, BLOCK_C, FP32_DOT)  # fmt: skip
                row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
                row_sum = tl.zeros([BLOCK_M], tl.float32)
                o = tl.zeros([BLOCK_M, HD], tl.float32)
                for k_start in range(0, V + 1, BLOCK_M):  # every key block holds at least one real row
                    keys = k_start + offs
                    key_ok = keys < V + 1
                    k = _blocked_rows(1, keys, key_ok, frame, vid, t, head, s, qkv_ptr, vis_ptr, ratio_ptr,
                                      shift_ptr, coeff_ptr, const_ptr, gain_ptr, w_ptr, sq_f, sq_l, sv_b, sv_t, sr_s,
                                      sr_f, sc_s, sc_f, sc_r, sw_o, D, C, HD, BLOCK_C, FP32_DOT)  # fmt: skip
                    v = _blocked_rows(2, keys, key_ok, frame, vid, t, head, s, qkv_ptr, vis_ptr, ratio_ptr,
                                      shift_ptr, coeff_ptr, const_ptr, gain_ptr, w_ptr, sq_f, sq_l, sv_b, sv_t, sr_s,
                                      sr_f, sc_s, sc_f, sc_r, sw_o, D, C, HD, BLOCK_C, FP32_DOT)  # fmt: skip
                    scores = (
                        tl.dot(q, tl.trans(k), input_precision=FP32_DOT)
                        if FP32_DOT != ""
                        else tl.dot(q.to(low), tl.trans(k.to(low)))
                    )
                    scores = tl.where(key_ok[None, :], scores * sm_scale, float("-inf"))
                    new_max = tl.maximum(row_max, tl.max(scores, axis=1))
                    rescale = tl.exp(row_max - new_max)
                    p = tl.exp(scores - new_max[:, None])
                    row_sum = row_sum * rescale + tl.sum(p, axis=1)
                    pv = tl.dot(p, v, input_precision=FP32_DOT) if FP32_DOT != "" else tl.dot(p.to(low), v.to(low))
                    o = o * rescale[:, None] + pv
                    row_max = new_max
                o = o / row_sum[:, None] / S
                _store_scale(o, rows, row_ok, head * HD + d, frame, acc_ptr, out_ptr, sa_f, sa_r, so_f, so_r, s, S)


def head_groups(num_heads: int, tf32x3_tile: bool = False) -> list[int]:
    """Heads per program the launch may use: all heads (one program per frame, the default) first, then 4, 2, 1.

    Each is a separate compilation (a second or so on first use), so the candidates stay few. The
    one-tile kernel with tf32x3 dots (``tf32x3_tile``) takes one head per program only: its split
    operands need 419 KB of shared memory for 2 or more heads at ViT-B/16, 96 KB for one (compiled
    for sm_90a, ``benchmarks/kernel_resources.py``; an H100/H200 allows 227 KB).
    """
    if tf32x3_tile:
        return [1]
    return [num_heads, *(g for g in (4, 2, 1) if g < num_heads and num_heads % g == 0)]


TUNER = LaunchTuner("sparse_attention")


def sparse_attention(
    qkv: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
    const: torch.Tensor,
    gain_sum: torch.Tensor,
    head: torch.Tensor,
    num_heads: int,
    blocked: bool = False,
    out: torch.Tensor | None = None,
    heads_per_program: int | None = None,
    fp32_dot: str = "ieee",
) -> torch.Tensor:
    """The PyTorch piece ``sparse_attention`` on plain tensors: [BT, 1+V, D] (into ``out`` if given).

    ``const``, ``gain_sum``, ``head``: the folded projection (``SparseProjection`` fields: c [3D]
    fp32, g [3D] fp32, W_g[:, :C] [3D, C]). ``blocked`` picks the kernel: the one-tile kernel
    (frames that :func:`fits_one_tile`) or the blocked kernel (any size; much less shared memory).
    Each program takes ``heads_per_program`` of a frame's heads (a divisor of ``num_heads``);
    ``None`` lets :mod:`launch_tuning` pick it per shape on CUDA. The result is bit-identical for
    every choice: each head's arithmetic is the same. ``fp32_dot``: the fp32 dots' input precision,
    ``"ieee"`` or ``"tf32x3"`` (:data:`FP32_DOTS`; ignored in fp16/bf16).
    """
    bt, length, d = x.shape
    t = visible.shape[1]
    v = visible.shape[2]
    s, _, c = source_maps.shape
    hd = d // num_heads
    if qkv.stride(-1) != 1 or x.stride(-1) != 1:
        raise ValueError("sparse_attention needs the channel dimension contiguous")
    if fp32_dot not in FP32_DOTS:
        raise ValueError(f"sparse_attention: fp32_dot={fp32_dot!r}; expected one of {FP32_DOTS}")
    if heads_per_program is not None and num_heads % heads_per_program:
        raise ValueError(f"heads_per_program={heads_per_program} does not divide num_heads={num_heads}")
    mean = mean.reshape(bt, length).contiguous()
    rstd = rstd.reshape(bt, length).contiguous()
    vis = visible.contiguous()  # int64 as the index builds it: no conversion launch per call
    src = source_maps.contiguous()
    head_w = head.contiguous()  # [3D, C]
    if out is None:
        out = torch.empty(bt, v + 1, d, device=x.device, dtype=x.dtype)
    elif out.shape != (bt, v + 1, d) or out.stride(-1) != 1:
        raise ValueError(f"sparse_attention: out must be [{bt}, {v + 1}, {d}] with contiguous channels")
    # fp32 partial sums of the mean over scales (none needed for one scale, or when out is fp32)
    acc = out if s == 1 or out.dtype == torch.float32 else torch.empty(out.shape, device=x.device, dtype=torch.float32)
    block_c = max(16, triton.next_power_of_2(c))
    vis_b = vis.stride(0) if vis.shape[0] > 1 else 0
    common = dict(
        T=t, D=d, HD=hd, V=v, C=c, S=s, BLOCK_C=block_c, FP32_DOT=fp32_dot if x.dtype == torch.float32 else ""
    )

    if not blocked and not fits_one_tile(v):
        raise ValueError(f"blocked=False: one tile takes <= {MAX_TILE_ROWS - 1} visible patches per frame, got {v}")
    if not blocked:
        block_n = max(16, triton.next_power_of_2(v + 1))

        def launch(config: dict) -> None:
            heads = config["heads"]
            _sparse_attention_kernel[(bt, num_heads // heads)](
                qkv, x, mean, rstd, vis, src, const, gain_sum, head_w, acc, out,
                qkv.stride(0), qkv.stride(1), x.stride(0), x.stride(1), mean.stride(0), vis_b, vis.stride(1),
                src.stride(0), src.stride(1), head_w.stride(0), acc.stride(0), acc.stride(1), out.stride(0),
                out.stride(1), hd**-0.5, **common, BLOCK_N=block_n, HEADS=heads, num_warps=8,
            )  # fmt: skip
    else:
        # step 1 once per frame, scale and row block; step 2 reads its coefficients from scratch
        ratio = torch.empty(s, bt, v + 1, device=x.device, dtype=torch.float32)
        shift = torch.empty_like(ratio)
        coeff = torch.empty(s, bt, v + 1, block_c, device=x.device, dtype=head_w.dtype)
        scratch = (ratio.stride(0), ratio.stride(1), coeff.stride(0), coeff.stride(1), coeff.stride(2))
        _mixed_rows_kernel[(bt, s, triton.cdiv(v + 1, BLOCKED_ROWS))](
            x, mean, rstd, vis, src, ratio, shift, coeff, x.stride(0), x.stride(1), mean.stride(0), vis_b,
            vis.stride(1), src.stride(0), src.stride(1), *scratch,
            T=t, D=d, V=v, C=c, BLOCK_M=BLOCKED_ROWS, BLOCK_C=block_c, num_warps=4,
        )  # fmt: skip

        def launch(config: dict) -> None:
            heads = config["heads"]
            _sparse_attention_blocked_kernel[(bt, num_heads // heads)](
                qkv, vis, ratio, shift, coeff, const, gain_sum, head_w, acc, out,
                qkv.stride(0), qkv.stride(1), vis_b, vis.stride(1), *scratch, head_w.stride(0),
                acc.stride(0), acc.stride(1), out.stride(0), out.stride(1), hd**-0.5,
                **common, BLOCK_M=BLOCKED_ROWS, HEADS=heads, num_warps=4,
            )  # fmt: skip

    if heads_per_program is not None:
        config = {"heads": heads_per_program}
    else:
        key = (bt, t, v, d, num_heads, s, c, x.dtype, qkv.stride(1), x.stride(1), blocked, fp32_dot)
        tf32x3_tile = not blocked and fp32_dot == "tf32x3" and x.dtype == torch.float32
        config = TUNER.pick(key, [{"heads": g} for g in head_groups(num_heads, tf32x3_tile)], launch, x.device)
    launch(config)
    return out
