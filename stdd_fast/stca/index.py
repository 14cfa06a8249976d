"""Static index tables of STCA's window schedule and temporal channel shift (STDD-SPEC §1.2-1.4).

Everything STCA selects is expressed as integer index tensors computed once per (frame count T,
device) and cached: which patch tokens are visible in each frame, and from which frame each shifted
channel of each frame is read. ``forward`` then only gathers and scatters with them (no boolean
indexing, no tensors built from Python lists), which is what makes tracing and export possible
(ARCHITECTURE §4.1).

Geometry (patch grid Gh x Gw, stride (1, s1, s2), w = s1*s2 positions per window):

* patch ``n = i*Gw + j`` lies in window ``c = (i//s1)*(Gw//s2) + j//s2`` at in-window position
  ``q = (i % s1)*s2 + j % s2`` (q=0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right for 2x2);
* mask row ``r`` (r = 0..w-1) masks position q when ``beta[(q - r) mod w] == 1`` with
  ``beta = [1]*m + [0]*(w-m)`` (the cyclic right rotation of the released code);
* the visible tokens of a frame are taken in ascending window-major order ``u = w*c + q``.
"""

from __future__ import annotations

import torch

from stdd_fast.config import STCAConfig


def mask_row(row: int, window_size: int, masked: int) -> list[int]:
    """Mask of the in-window positions (1 = masked) for schedule row ``row``: rho_row(beta)."""
    beta = [1] * masked + [0] * (window_size - masked)
    return [beta[(q - row) % window_size] for q in range(window_size)]


def window_table(grid: tuple[int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Raster patch index of every (window c, in-window position q): LongTensor [n_win, w]."""
    gh, gw = grid
    _, s1, s2 = stride
    wins_per_row = gw // s2
    table = torch.empty((gh // s1) * wins_per_row, s1 * s2, dtype=torch.long)
    for i in range(gh):
        for j in range(gw):
            c = (i // s1) * wins_per_row + j // s2
            q = (i % s1) * s2 + j % s2
            table[c, q] = i * gw + j
    return table


def channel_source_map(num_frames: int, width: int, cfg: STCAConfig, scale: int) -> torch.Tensor:
    """Source frame of each shifted channel for each target frame at one temporal scale.

    Returns LongTensor [T, 2*c0]: entry ``[t, c]`` is the frame whose channel c frame t reads, or
    ``T`` for a zero fill. Iteration i (shift k = i+1, width d_i = c0 // 2**i) writes the leading
    d_i channels from frame t-k and the trailing d_i of the first 2*c0 from frame t+k, where those
    frames exist; later iterations overwrite narrower sub-slices (STDD-SPEC §1.4).
    """
    c0 = width // cfg.channel_fold
    src = torch.full((num_frames, 2 * c0), num_frames, dtype=torch.long)
    for i in range(scale):
        k, d = i + 1, c0 // 2**i
        for t in range(num_frames):
            if t - k >= 0:
                src[t, :d] = t - k
            if t + k < num_frames:
                src[t, 2 * c0 - d : 2 * c0] = t + k
    return src


class STCAIndex:
    """The index tables one STCA encoder needs, cached per (T, device).

    One instance is shared by all blocks of an encoder; ``layer`` selects the per-layer seeded
    permutation.
    """

    def __init__(self, cfg: STCAConfig, grid: tuple[int, int], width: int, num_layers: int) -> None:
        cfg.check_fits(width, grid)
        self.cfg = cfg
        self.grid = grid
        self.width = width
        self.num_layers = num_layers
        self.window_size = cfg.window_size
        self.masked = cfg.masked_per_window
        self.shifted_channels = 2 * (width // cfg.channel_fold)
        windows = window_table(grid, cfg.mask_stride)  # [n_win, w]
        self.num_windows = windows.shape[0]
        self.visible_per_window = self.window_size - self.masked
        self.num_visible = self.num_windows * self.visible_per_window
        rows = []
        for r in range(self.window_size):
            keep = [q for q, masked in enumerate(mask_row(r, self.window_size, self.masked)) if not masked]
            rows.append(windows[:, keep])  # [n_win, w-m], ascending q within each window
        # +1: token 0 of a frame is its class token
        self._row_table = torch.stack(rows) + 1  # [w, n_win, w-m]
        self._cache: dict[tuple, torch.Tensor] = {}

    def _cached(self, key: tuple, build) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def row_table(self, device: torch.device) -> torch.Tensor:
        """Token index of each visible slot per (row, window): LongTensor [w, n_win, w-m]."""
        return self._cached(("rows", device), lambda: self._row_table.to(device))

    def source_maps(self, num_frames: int, device: torch.device) -> torch.Tensor:
        """Channel source maps of every configured scale: LongTensor [S, T, 2*c0], ``T`` = zero."""
        return self._cached(
            ("src", num_frames, device),
            lambda: torch.stack(
                [channel_source_map(num_frames, self.width, self.cfg, s) for s in self.cfg.temporal_scale]
            ).to(device),
        )

    def seeded_permutations(self, num_frames: int) -> torch.Tensor:
        """The ``seeded`` mode's frame permutation of every layer: LongTensor [layers, T] (CPU)."""

        def build() -> torch.Tensor:
            gen = torch.Generator().manual_seed(self.cfg.seed)
            return torch.rand((self.num_layers, num_frames), generator=gen).argsort(-1)

        return self._cached(("perm", num_frames), build)

    def visible_tokens(self, rows: torch.Tensor) -> torch.Tensor:
        """Token indices of the visible patches for per-frame (or per-window) schedule rows.

        rows: LongTensor [B, T, 1] or [B, T, n_win] with values in [0, w).
        Returns LongTensor [B, T, V] of indices into a frame's tokens (1 .. Gh*Gw), ascending u order.
        """
        table = self.row_table(rows.device)
        b, t, _ = rows.shape
        rows = rows.expand(b, t, self.num_windows)
        windows = torch.arange(self.num_windows, device=rows.device)
        return table[rows, windows].reshape(b, t, self.num_visible)  # [B, T, n_win*(w-m)]

    def static_visible_tokens(self, num_frames: int, layer: int, device: torch.device) -> torch.Tensor:
        """Visible tokens of the deterministic eval modes (``none``, ``seeded``): LongTensor [1, T, V]."""
        mode = self.cfg.shuffle
        key = ("vis", mode, num_frames, layer if mode == "seeded" else -1, device)

        def build() -> torch.Tensor:
            frames = torch.arange(num_frames)
            if mode == "seeded":
                frames = self.seeded_permutations(num_frames)[layer]
            rows = (frames % self.window_size).view(1, num_frames, 1)
            return self.visible_tokens(rows.to(device))

        return self._cached(key, build)

    def random_rows(self, batch: int, num_frames: int, training: bool, device: torch.device) -> torch.Tensor:
        """Schedule rows drawn from the global torch RNG in the released order: LongTensor [B, T, 1|n_win].

        Training: offsets ``randint(w, (B, 1) | (B, n_win))`` then ``rand((B, T)).argsort``;
        row = (perm[t] + offset) mod w. Eval (``official``): only ``rand((B, T)).argsort``;
        row = perm[t] mod w.
        """
        if training:
            shape = (batch, 1) if self.cfg.spatial_repeat else (batch, self.num_windows)
            offset = torch.randint(self.window_size, shape, device=device)
            perm = torch.rand((batch, num_frames), device=device).argsort(-1)
            return (perm[:, :, None] + offset[:, None, :]) % self.window_size
        perm = torch.rand((batch, num_frames), device=device).argsort(-1)
        return (perm % self.window_size)[:, :, None]

    def visible_for_call(
        self, batch: int, num_frames: int, layer: int, training: bool, device: torch.device
    ) -> torch.Tensor:
        """The visible-token indices one block call uses: LongTensor [B or 1, T, V]."""
        if training or self.cfg.shuffle == "official":
            return self.visible_tokens(self.random_rows(batch, num_frames, training, device))
        return self.static_visible_tokens(num_frames, layer, device)
