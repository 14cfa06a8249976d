"""Benchmark weights with the activation outliers of trained CLIP towers, for judging quantisation honestly.

Random init spreads activations evenly over channels; trained CLIP ViTs (like LLMs, "LLM.int8()",
"SmoothQuant") carry a few residual channels whose LayerNorm outputs are one to two orders of
magnitude above the rest, and the weights reading them are correspondingly small. Per-tensor int8
activation scales are set by those channels, so the others keep only a few levels: that is what
makes dynamic int8 lose accuracy on real weights, and random weights would hide it.

:func:`add_outlier_channels_` plants that structure without changing the function: each block's
``ln_1`` / ``ln_2`` gain and bias are multiplied by ``factor`` on a few fixed channels and the input
columns of the projection that reads them are divided by it. The fp32 outputs are those of the
weights before (up to rounding); only the activation statistics change.
"""

from __future__ import annotations

import torch

from stdd_fast.model import STDDModel


@torch.no_grad()
def add_outlier_channels_(model: STDDModel, channels: int = 6, factor: float = 40.0, seed: int = 0) -> list[int]:
    """Plant ``channels`` outlier channels, ``factor`` times the rest, in every visual block; returns them.

    The same channels in every block, as in trained towers (the outliers live in the residual stream).
    """
    width = model.arch.vision_width
    if not 0 < channels < width or factor <= 0:
        raise ValueError(f"channels={channels}, factor={factor}: need 0 < channels < {width} and factor > 0")
    picked = torch.randperm(width, generator=torch.Generator().manual_seed(seed))[:channels]
    for block in model.visual.transformer.resblocks:
        for norm, reader in ((block.ln_1, block.attn.in_proj_weight), (block.ln_2, block.mlp.c_fc.weight)):
            norm.weight[picked] *= factor
            norm.bias[picked] *= factor
            reader[:, picked] /= factor
    return sorted(picked.tolist())
