"""Triton kernel: a GEMM with its epilogue, ``x W^T + b`` then the activation. PyTorch piece: ``stca.pieces.linear``.

One program per BLOCK_M x BLOCK_N tile of the output accumulates in fp32 over K in blocks of
BLOCK_K, then adds the bias and applies the activation (SiLU, erf GELU) to the fp32 accumulator
and rounds once to the output dtype: the piece rounds the product, then runs the activation as a
second pass over the rounded tensor (on an H100, the triton encoder at bf16 B=32 spent 2.40 of its
26.92 ms of kernels in that SiLU pass: benchmarks/results/gpu_check_h100_run3.json, ``profiles``).
bf16 and fp16 dots run on tensor cores; fp32 dots are exact (``input_precision="ieee"``, no TF32),
on FMA units.

Programs are ordered in groups of GROUP_M tile rows (every tile of a group's rows before the next
group), so that neighbouring programs share row blocks of x and column blocks of W in L2. Out of
range rows and columns load wrapped-around (valid) ones and are never stored; only K is masked,
and only when BLOCK_K does not divide it.

The tile shape, warps and pipeline stages are tuned per problem shape on CUDA
(:mod:`stdd_fast.kernels.launch_tuning`) among ``TILES[dtype]``; BLOCK_K is fixed per dtype, so
every candidate sums each output's K products in the same blocks and order: the same bits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch_tuning import LaunchTuner

ACTIVATIONS = (None, "silu", "gelu")  # the epilogues: none, SiLU, exact (erf) GELU
GROUP_M = 8
# fixed per dtype (not tuned): each output's K reduction order depends on it
BLOCK_K = {torch.float32: 32, torch.bfloat16: 64, torch.float16: 64}
# Candidates for Hopper (H100 / H200, wgmma), the first the untuned default. bf16/fp16: 128 x 256
# for the large batch's GEMMs, 64-row tiles to fill 132 SMs at batch 1 (1576 rows); 4 to 8 warps
# (one or two warpgroups), 3 or 4 stages within 232 KB of shared memory. fp32 (FMA dots): tiles
# whose accumulator and operands fit 255 registers without spilling (benchmarks/kernel_resources.py).
TILES: dict[torch.dtype, list[dict]] = {
    torch.bfloat16: [
        {"block_m": 128, "block_n": 128, "warps": 8, "stages": 3},
        {"block_m": 128, "block_n": 256, "warps": 8, "stages": 3},
        {"block_m": 128, "block_n": 128, "warps": 4, "stages": 4},
        {"block_m": 64, "block_n": 128, "warps": 4, "stages": 4},
        {"block_m": 64, "block_n": 64, "warps": 4, "stages": 4},
    ],
    torch.float32: [
        {"block_m": 64, "block_n": 64, "warps": 4, "stages": 3},
        {"block_m": 128, "block_n": 64, "warps": 4, "stages": 3},
        {"block_m": 64, "block_n": 128, "warps": 4, "stages": 3},
        {"block_m": 128, "block_n": 128, "warps": 8, "stages": 3},
    ],
}
TILES[torch.float16] = TILES[torch.bfloat16]
TUNER = LaunchTuner("linear")


@triton.jit
def _linear_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    M,
    N,
    K,
    sx_m,
    sw_n,
    so_m,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    DOT_FP32: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(tiles_m - first_m, GROUP_M)  # the last group may have fewer tile rows
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # wrapped rows / columns: every load in bounds and unmasked; the store drops them. int64 row
    # offsets: M x K can pass 2^31 elements at large batches
    x_ptrs = x_ptr + (rows % M).to(tl.int64)[:, None] * sx_m + ks[None, :]  # [BLOCK_M, BLOCK_K]
    w_ptrs = w_ptr + (cols % N).to(tl.int64)[None, :] * sw_n + ks[:, None]  # W^T tile: [BLOCK_K, BLOCK_N]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            a = tl.load(x_ptrs, mask=ks[None, :] < K - k0, other=0.0)
            b = tl.load(w_ptrs, mask=ks[:, None] < K - k0, other=0.0)
        acc = tl.dot(a, b, acc, input_precision="ieee") if DOT_FP32 else tl.dot(a, b, acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    if HAS_BIAS:
        acc += tl.load(b_ptr + cols % N).to(tl.float32)[None, :]
    if ACTIVATION == "silu":
        acc = acc * tl.sigmoid(acc)
    elif ACTIVATION == "gelu":
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    out_ptrs = out_ptr + rows.to(tl.int64)[:, None] * so_m + cols[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(rows < M)[:, None] & (cols < N)[None, :])


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear: activation={activation!r}; expected one of {ACTIVATIONS}")
    if x.dtype not in TILES:
        raise ValueError(f"linear: x is {x.dtype}; the kernel takes {sorted(str(d) for d in TILES)}")
    if x.ndim < 1 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not make [..., K] x [N, K]")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear: bias {tuple(bias.shape)} for weight {tuple(weight.shape)}: expected [N]")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise ValueError(f"linear: {name} is {t.dtype} on {t.device}, x {x.dtype} on {x.device}: they must match")


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None = None,
    out: torch.Tensor | None = None,
    tile: dict | None = None,
) -> torch.Tensor:
    """The PyTorch piece ``linear`` (same arguments, same result, rounded once): [..., K] x [N, K] -> [..., N].

    ``x``, ``weight`` and ``bias`` share one dtype (fp32, bf16 or fp16); the output has it. ``out``
    (contiguous [..., N], not sharing memory with an input) receives the result if given. ``tile``
    (one of ``TILES[x.dtype]``) fixes the launch shape; ``None`` lets :mod:`launch_tuning` pick it
    per shape on CUDA.
    """
    _check(x, weight, bias, activation)
    n, k = weight.shape
    x2 = x.reshape(-1, k)  # [M, K]
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    w = weight if weight.stride(-1) == 1 else weight.contiguous()
    m = x2.shape[0]
    shape = (*x.shape[:-1], n)
    if out is None:
        out = torch.empty(shape, device=x.device, dtype=x.dtype)
    elif tuple(out.shape) != shape or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(f"linear: out is {out.dtype} {tuple(out.shape)}; expected contiguous {x.dtype} {shape}")
    elif any(t is not None and out.data_ptr() == t.data_ptr() for t in (x, weight, bias)):
        raise ValueError("linear: out must not share memory with x, weight or bias")
    if m == 0 or n == 0:
        return out
    block_k = BLOCK_K[x.dtype]

    def launch(config: dict) -> None:
        block_m, block_n = config["block_m"], config["block_n"]
        grid = (triton.cdiv(m, block_m) * triton.cdiv(n, block_n),)
        _linear_kernel[grid](
            x2, w, bias if bias is not None else w, out, m, n, k, x2.stride(0), w.stride(0), n,
            HAS_BIAS=bias is not None, ACTIVATION=activation, DOT_FP32=x.dtype == torch.float32,
            EVEN_K=k % block_k == 0, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=GROUP_M,
            num_warps=config["warps"], num_stages=config["stages"],
        )  # fmt: skip

    key = (m, n, k, x.dtype, activation, bias is None, x2.stride(0), w.stride(0))
    launch(tile if tile is not None else TUNER.pick(key, TILES[x.dtype], launch, x.device))
    return out
