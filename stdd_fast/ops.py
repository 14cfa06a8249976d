"""The one place that chooses how STCA and the scoring head run.

``impl`` is ``"reference"`` (readable PyTorch, the specification), ``"fused"`` or ``"triton"``;
``"auto"`` resolves to the best available on the device.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from stdd_fast.errors import choice_error
from stdd_fast.stca_ref import stca_block_ref

Impl = Literal["reference", "fused", "triton", "auto"]
IMPLS: tuple[str, ...] = get_args(Impl)


def check_impl(impl: str) -> str:
    """Validate an impl name (``auto`` stays ``auto``)."""
    if impl not in IMPLS:
        raise choice_error("impl", impl, IMPLS)
    return impl


def stca_block(block: nn.Module, x: torch.Tensor, visible: torch.Tensor, source_maps: torch.Tensor) -> torch.Tensor:
    """Run one STCA block with the implementation ``block.impl`` names."""
    return stca_block_ref(block, x, visible, source_maps)
