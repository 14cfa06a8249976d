"""Frame tokens: the patch embedding as one GEMM instead of a strided convolution.

CLIP's ``conv1`` is a convolution whose stride equals its kernel, with no padding and no bias, so it is
a matrix product: cut each frame into ``p x p`` patches, flatten each patch in (channel, row, column)
order, and multiply by the kernel viewed as ``[D, 3 p^2]``. Same function as open_clip's
``VisionTransformer._embeds`` (the reference); only the summation order differs. On an H100 the
cuDNN convolution ran at ~45 TFLOP/s plus two layout conversions (1.9 ms of a 31.5 ms bf16 batch-32
encoder, benchmarks/results/gpu_check_h100_run2.json), while the same product as a GEMM runs near the
card's matrix peak.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patchify(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, (H/p)(W/p), C p p]: non-overlapping patches, row-major, each flattened (c, y, x)."""
    n, c, h, w = frames.shape
    gh, gw = h // patch, w // patch
    patches = frames[:, :, : gh * patch, : gw * patch].reshape(n, c, gh, patch, gw, patch)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * patch * patch)


def embeds_gemm(visual: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """``visual._embeds(frames)`` with the convolution as a GEMM: [N, 3, H, W] -> [N, 1 + grid^2, D]."""
    conv = visual.conv1
    patch = conv.kernel_size[0]
    if conv.stride != conv.kernel_size or conv.padding != (0, 0) or conv.kernel_size[0] != conv.kernel_size[1]:
        return visual._embeds(frames)  # not a patchifying convolution: nothing to rewrite
    tokens = F.linear(patchify(frames, patch), conv.weight.reshape(conv.out_channels, -1), conv.bias)
    cls = visual.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
    x = torch.cat([cls, tokens], dim=1) + visual.positional_embedding.to(tokens.dtype)
    return visual.ln_pre(visual.patch_dropout(x))
