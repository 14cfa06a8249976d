"""Analytic multiply-accumulate counts of the encoder per frame, per implementation.

Counts the matrix work (GEMMs and attention products); elementwise work is left out. FLOPs = 2 x MACs.
"""

from __future__ import annotations

from stdd_fast.config import ArchConfig, STCAConfig


def block_macs(arch: ArchConfig, stca: STCAConfig | None, impl: str = "reference") -> int:
    """MACs of one transformer block for one frame."""
    d = arch.vision_width
    tokens = arch.tokens_per_frame
    plain = tokens * d * 3 * d + 2 * tokens * tokens * d + tokens * d * d + 2 * tokens * d * 4 * d
    if stca is None:
        return plain
    gh, gw = arch.grid
    visible = gh * gw * (stca.window_size - stca.masked_per_window) // stca.window_size
    sparse = 1 + visible
    scales = len(stca.temporal_scale)
    if impl == "reference":
        return plain + scales * (sparse * d * 3 * d + 2 * sparse * sparse * d + sparse * d * d)
    shifted = 2 * (d // stca.channel_fold)
    return plain + scales * (visible * (shifted + 2) * 3 * d + 2 * sparse * sparse * d) + sparse * d * d


def encoder_macs(arch: ArchConfig, stca: STCAConfig | None, impl: str = "reference") -> int:
    """MACs of the whole vision encoder (patch embedding, blocks, projection) for one frame."""
    gh, gw = arch.grid
    patch = gh * gw * arch.vision_width * 3 * arch.patch_size**2
    return patch + arch.vision_layers * block_macs(arch, stca, impl) + arch.vision_width * arch.embed_dim
