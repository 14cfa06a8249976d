"""The STCA block module: a CLIP residual block whose forward is Space-time Cross Attention.

What it computes is :func:`stdd_fast.stca_ref.stca_block_ref`; how is chosen by :mod:`stdd_fast.ops`.
"""

from __future__ import annotations

import torch
from torch import nn

from stdd_fast import ops
from stdd_fast.stca_index import STCAIndex


class STCABlock(nn.Module):
    """A CLIP residual block run as STCA. Adds no parameters: its state-dict names are CLIP's.

    ``impl`` picks the implementation through :mod:`stdd_fast.ops`; every implementation computes
    :func:`stca_block_ref`.
    """

    def __init__(self, clip_block: nn.Module, index: STCAIndex, layer: int, impl: str = "reference") -> None:
        super().__init__()
        self.ln_1 = clip_block.ln_1
        self.attn = clip_block.attn
        self.ls_1 = clip_block.ls_1
        self.ln_2 = clip_block.ln_2
        self.mlp = clip_block.mlp
        self.ls_2 = clip_block.ls_2
        # A plain attribute, not a submodule: the index holds no parameters and is shared by all blocks.
        self.__dict__["index"] = index
        self.layer = layer
        self.impl = impl

    def visible_tokens(self, batch: int, num_frames: int, device: torch.device) -> torch.Tensor:
        """This call's visible-token indices (draws from the global RNG in train/official modes)."""
        return self.index.visible_for_call(batch, num_frames, self.layer, self.training, device)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        visible = self.visible_tokens(x.shape[0] // num_frames, num_frames, x.device)
        source_maps = self.index.source_maps(num_frames, x.device)
        return ops.stca_block(self, x, visible, source_maps)
