"""Space-time Cross Attention (STCA) as the specification states it: ``impl="reference"`` (STDD-SPEC §1).

Layout is batch-first: a block sees ``x`` of shape [B*T, L, D] with frame index ``f = b*T + t``
(video-major, frame-minor) and L = 1 + Gh*Gw tokens per frame (class token first).

Per block (one call of :func:`stca_block_reference`)::

    Z    = [CLS, visible patches of X]                       # gathered by the window schedule
    Y_s  = Z with channels [0, 2*c0) read from other frames  # per temporal scale s
    A_s  = Y_s + Attn(LN1(Y_s))                              # per-frame attention over 1+V tokens
    Abar = mean_s A_s
    F    = X + Attn(LN1(X))                                  # the ordinary CLIP path, all L tokens
    Xpad = F with visible patches and CLS replaced by Abar   # scatter
    out  = Xpad + MLP(LN2(F))                                # NB: the MLP reads F (SPEC §1.7)

Masked patches therefore come out exactly as a vanilla CLIP block computes them. This is the
readable statement of the function; :mod:`stdd_fast.stca.fused` computes the same with less work, in
pieces (:mod:`stdd_fast.stca.pieces`) that the Triton kernels replace.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mix_channels(patches: torch.Tensor, source_maps: torch.Tensor) -> torch.Tensor:
    """Temporal channel shift of the visible patches at every scale (SPEC §1.4).

    patches: [B, T, V, D]; source_maps: LongTensor [S, T, C] (C = 2*c0, value T = zero fill).
    Returns [S, B, T, V, D]: channels [0, C) read from the mapped frame (same visible slot),
    channels [C, D) unchanged.
    """
    b, t, v, d = patches.shape
    s, _, c = source_maps.shape
    head = F.pad(patches[..., :c], (0, 0, 0, 0, 0, 1))  # [B, T+1, V, C]; frame T is the zero fill
    index = source_maps.view(s, 1, t, 1, c).expand(s, b, t, v, c)
    shifted = torch.gather(head.unsqueeze(0).expand(s, b, t + 1, v, c), 2, index)  # [S, B, T, V, C]
    tail = patches[..., c:].unsqueeze(0).expand(s, b, t, v, d - c)
    return torch.cat([shifted, tail], dim=-1)


def _self_attention(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``ls_1(Attn(LN1(x)))`` for [N, L, D] tokens, with the block's own modules."""
    h = block.ln_1(x)
    return block.ls_1(block.attn(h, h, h, need_weights=False)[0])


def stca_block_reference(
    block: nn.Module, x: torch.Tensor, visible: torch.Tensor, source_maps: torch.Tensor
) -> torch.Tensor:
    """One STCA block, reference implementation.

    block: a CLIP residual block (``ln_1``, ``attn``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``).
    x: [B*T, L, D]. visible: LongTensor [B or 1, T, V] token indices of the visible patches.
    source_maps: LongTensor [S, T, 2*c0] from :meth:`STCAIndex.source_maps`.
    Returns [B*T, L, D].
    """
    bt, _, d = x.shape
    t = visible.shape[1]
    b = bt // t
    num_scales = source_maps.shape[0]
    vis = visible.expand(b, t, -1).reshape(bt, -1)  # [BT, V]
    v = vis.shape[1]
    vis_d = vis.unsqueeze(-1).expand(bt, v, d)

    patches = torch.gather(x, 1, vis_d).view(b, t, v, d)
    mixed = mix_channels(patches, source_maps).reshape(num_scales, bt, v, d)
    cls = x[:, :1].unsqueeze(0).expand(num_scales, bt, 1, d)
    z = torch.cat([cls, mixed], dim=2).reshape(num_scales * bt, 1 + v, d)  # every scale in one batch
    sparse = (z + _self_attention(block, z)).view(num_scales, bt, 1 + v, d).mean(0)  # Abar

    full = x + _self_attention(block, x)  # F
    padded = full.scatter(1, vis_d, sparse[:, 1:])
    padded = torch.cat([sparse[:, :1], padded[:, 1:]], dim=1)  # CLS from the sparse path
    return padded + block.ls_2(block.mlp(block.ln_2(full)))
