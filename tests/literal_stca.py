"""An independent, literal transcription of STDD-SPEC §1 for cross-checking the package.

Written from the spec's prose only, in its own layout (sequence-first [L, B*T, D]), with Python
loops, boolean masks and slice assignment: no code shared with stdd_fast's index tables or gathers.
Slow and simple on purpose.
"""

import math

import torch


def _rho(beta: list[int], o: int) -> list[int]:
    return beta[-o:] + beta[:-o] if o else list(beta)


def literal_masks(B, T, grid, cfg, training, layer, num_layers, device):
    """sel [B, T, n_win*w] bool in window-major order (True = masked), drawing RNG as released."""
    gh, gw = grid
    _, s1, s2 = cfg.mask_stride
    w = s1 * s2
    n_win = (gh // s1) * (gw // s2)
    m = int(cfg.mask_rate * T * gh * gw) // (T * n_win)
    beta = [1] * m + [0] * (w - m)
    if training:
        shape = (B, 1) if cfg.spatial_repeat else (B, n_win)
        offs = torch.randint(w, shape, device=device).cpu()
        perm = torch.rand((B, T), device=device).argsort(-1).cpu()
        masks = torch.zeros(B, T, n_win, w, dtype=torch.bool)
        for b in range(B):
            for t in range(T):
                for c in range(n_win):
                    i = int(offs[b, 0 if cfg.spatial_repeat else c])
                    masks[b, t, c] = torch.tensor(_rho(beta, (t + i) % w), dtype=torch.bool)
        masks = torch.stack([masks[b, perm[b]] for b in range(B)])
    else:
        masks = torch.zeros(B, T, n_win, w, dtype=torch.bool)
        for t in range(T):
            masks[:, t] = torch.tensor(_rho(beta, t % w), dtype=torch.bool)
        if cfg.shuffle == "official":
            perm = torch.rand((B, T), device=device).argsort(-1).cpu()
            masks = torch.stack([masks[b, perm[b]] for b in range(B)])
        elif cfg.shuffle == "seeded":
            gen = torch.Generator().manual_seed(cfg.seed)
            perm = torch.rand((num_layers, T), generator=gen).argsort(-1)[layer]
            masks = masks[:, perm]
    return masks.reshape(B, T, n_win * w).to(device)


def _window_order(grid, stride):
    """u (window-major index) of each raster patch n."""
    gh, gw = grid
    _, s1, s2 = stride
    u_of = []
    for i in range(gh):
        for j in range(gw):
            c = (i // s1) * (gw // s2) + j // s2
            q = (i % s1) * s2 + j % s2
            u_of.append(s1 * s2 * c + q)
    return torch.tensor(u_of)


def _attn(block, x_seq):
    """Attn(LN1(x)) for sequence-first x [L, N, D] with the block's (batch-first) modules."""
    h = block.ln_1(x_seq).transpose(0, 1)
    return block.ls_1(block.attn(h, h, h, need_weights=False)[0]).transpose(0, 1)


def _channel_mixing(z, B, T, width, cfg, scale):
    """z [1+V, B*T, D] -> mixed tokens at one scale (CLS copied)."""
    c0 = width // cfg.channel_fold
    cls, patches = z[:1], z[1:]
    V = patches.shape[0]
    p = patches.view(V, B, T, -1)
    out = p.clone()
    out[..., : 2 * c0] = 0
    for i in range(scale):
        k, d = i + 1, c0 // 2**i
        out[:, :, k:, :d] = p[:, :, : T - k, :d]
        out[:, :, : T - k, 2 * c0 - d : 2 * c0] = p[:, :, k:, 2 * c0 - d : 2 * c0]
    return torch.cat([cls, out.reshape(V, B * T, -1)], dim=0)


def literal_block(block, x_seq, B, T, grid, cfg, training, layer, num_layers):
    """One STCA block; x_seq [L, B*T, D] -> [L, B*T, D]; also returns the mask used."""
    L, BT, D = x_seq.shape
    sel = literal_masks(B, T, grid, cfg, training, layer, num_layers, x_seq.device)
    u_of = _window_order(grid, cfg.mask_stride)
    # window view: Xw[b, t, u] = X[1 + n] with u = u_of[n]
    xw = torch.empty(B, T, L - 1, D, dtype=x_seq.dtype, device=x_seq.device)
    xw[:, :, u_of] = x_seq[1:].permute(1, 0, 2).reshape(B, T, L - 1, D)
    visible = xw[~sel].view(B * T, -1, D).transpose(0, 1)  # [V, BT, D]
    z = torch.cat([x_seq[:1], visible], dim=0)
    outs = []
    for s in cfg.temporal_scale:
        y = _channel_mixing(z, B, T, D, cfg, s)
        outs.append(y + _attn(block, y))
    abar = sum(outs) / len(outs)
    f = x_seq + _attn(block, x_seq)
    fw = torch.empty_like(xw)
    fw[:, :, u_of] = f[1:].permute(1, 0, 2).reshape(B, T, L - 1, D)
    fw[~sel] = abar[1:].transpose(0, 1).reshape(-1, D)
    padded_patches = fw[:, :, u_of].reshape(BT, L - 1, D).transpose(0, 1)
    xpad = torch.cat([abar[:1], padded_patches], dim=0)
    h = block.ln_2(f)
    return xpad + block.ls_2(block.mlp(h)), sel


def literal_encode(model, frames):
    """Whole STDD vision encoder with literal blocks: frames [B, T, 3, H, W] -> unit-norm [B, T, E]."""
    B, T = frames.shape[:2]
    grid = model.arch.grid
    x = model.visual._embeds(frames.flatten(0, 1)).transpose(0, 1)  # [L, BT, D]
    n = len(model.blocks)
    for layer, block in enumerate(model.blocks):
        x, _ = literal_block(block, x, B, T, grid, model.stca, model.training, layer, n)
    pooled = model.visual.ln_post(x[0]) @ model.visual.proj
    e = pooled.view(B, T, -1)
    return e / e.norm(dim=-1, keepdim=True)


def literal_score(f, w, logit_scale):
    """STDD-SPEC §3.4 by loops over (b, k): f [B, T, D], w [K, N, D] or [K, D]."""
    tau = math.exp(float(logit_scale))
    B, K = f.shape[0], w.shape[0]
    out = torch.empty(B, K, dtype=torch.float64)
    for b in range(B):
        for k in range(K):
            if w.ndim == 2:
                out[b, k] = (tau * (f[b].double() @ w[k].double())).mean()
            else:
                s = tau * (f[b].double() @ w[k].double().T)  # [T, N]
                out[b, k] = 0.5 * (s.max(0).values.mean() + s.max(1).values.mean())
    return out
