"""Triton kernel: the STDD scoring head for prompt-level classifiers. PyTorch piece: ``stdd_fast.head.score``.

score[b, k] = tau/2 (mean_n max_t S + mean_t max_n S), S[b, t, k, n] = <f_bt, w_kn>, computed per
(class, block of clips) over blocks of prompts with running reductions, so [B, T, K, N] is never
materialised (at K = 400, N = 224 and batch 32 x 8 frames it would be 92 M floats).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _score_kernel(
    f_ptr,
    w_ptr,
    out_ptr,
    tau_ptr,
    sf_b,
    sf_t,
    sw_k,
    sw_n,
    so_b,
    B,
    T: tl.constexpr,
    N: tl.constexpr,
    D: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    k = tl.program_id(0)
    b0 = tl.program_id(1) * BLOCK_B
    m = tl.arange(0, BLOCK_B * BLOCK_T)  # row = clip * BLOCK_T + frame
    clip = b0 + m // BLOCK_T
    frame = m % BLOCK_T
    row_ok = (clip < B) & (frame < T)
    frame_ok = tl.reshape(frame < T, (BLOCK_B, BLOCK_T))

    sum_max_t = tl.zeros((BLOCK_B,), dtype=tl.float32)  # sum_n max_t S
    max_n = tl.full((BLOCK_B * BLOCK_T,), float("-inf"), dtype=tl.float32)  # running max_n S per frame
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = n < N
        s = tl.zeros((BLOCK_B * BLOCK_T, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            d_ok = d < D
            f = tl.load(
                f_ptr + clip[:, None] * sf_b + frame[:, None] * sf_t + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :],
                other=0.0,
            )
            w = tl.load(
                w_ptr + k * sw_k + n[None, :] * sw_n + d[:, None], mask=n_ok[None, :] & d_ok[:, None], other=0.0
            )
            s += tl.dot(f, w, input_precision="ieee")  # exact fp32: the head decides the top-1
        s3 = tl.reshape(s, (BLOCK_B, BLOCK_T, BLOCK_N))
        over_t = tl.max(tl.where(frame_ok[:, :, None], s3, float("-inf")), axis=1)  # [BLOCK_B, BLOCK_N]
        sum_max_t += tl.sum(tl.where(n_ok[None, :], over_t, 0.0), axis=1)
        max_n = tl.maximum(max_n, tl.max(tl.where(n_ok[None, :], s, float("-inf")), axis=1))
    per_frame = tl.reshape(tl.where(row_ok, max_n, 0.0), (BLOCK_B, BLOCK_T))
    tau = tl.load(tau_ptr)
    score = 0.5 * tau * (sum_max_t / N + tl.sum(per_frame, axis=1) / T)
    clips = b0 + tl.arange(0, BLOCK_B)
    tl.store(out_ptr + clips * so_b + k, score, mask=clips < B)


def score(
    embeddings: torch.Tensor,
    weights: torch.Tensor,
    logit_scale: torch.Tensor | float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The PyTorch piece ``score`` for a prompt-level classifier: [B, T, D] x [K, N, D] -> float32 [B, K]."""
    b, t, d = embeddings.shape
    k, n, _ = weights.shape
    f = embeddings.float().contiguous()
    w = weights.to(device=f.device, dtype=torch.float32).contiguous()
    tau = torch.as_tensor(logit_scale, dtype=torch.float32, device=f.device).exp().reshape(1)  # no host sync
    if out is None:
        out = torch.empty(b, k, device=f.device, dtype=torch.float32)
    block_t = max(2, triton.next_power_of_2(t))
    block_b = max(1, 128 // block_t)
    grid = (k, triton.cdiv(b, block_b))
    _score_kernel[grid](
        f,
        w,
        out,
        tau,
        f.stride(0),
        f.stride(1),
        w.stride(0),
        w.stride(1),
        out.stride(0),
        b,
        T=t,
        N=n,
        D=d,
        BLOCK_B=block_b,
        BLOCK_T=block_t,
        BLOCK_N=64,
        BLOCK_D=64,
        num_warps=4,
    )
    return out
