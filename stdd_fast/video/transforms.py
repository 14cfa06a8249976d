"""Test-time frame transforms (STDD-SPEC §6.3-6.5), on whatever device the frames are on.

The released order is kept so fp32 rounding matches: /255 and CLIP mean/std first, then the short
side to ``size`` (bilinear, ``align_corners=False``; skipped when it already is ``size``), then the
centre crop at ``ceil((H − size)/2), ceil((W − size)/2)``.

Frames are converted to float a few at a time (:data:`CHUNK_BYTES` of float32 at once), so a 4K or
corrupt-header video costs one chunk of float frames, not all of them; every frame's arithmetic is
the same as in one batched call (each output pixel depends on its own frame only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stdd_fast.errors import ConfigError, VideoError

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
# float32 bytes converted at once by transform_frames
CHUNK_BYTES = 64 * 2**20


def short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H', W') with the short side at ``size`` and the long side ``floor(long/short·size)`` (as released)."""
    if width < height:
        return math.floor((float(height) / width) * size), size
    return size, math.floor((float(width) / height) * size)


def crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """Top-left corner (y0, x0) of the centre ``size`` crop: ``ceil((H − size)/2), ceil((W − size)/2)``."""
    return math.ceil((height - size) / 2), math.ceil((width - size) / 2)


def normalize(
    frames: torch.Tensor, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """uint8 RGB [..., H, W, 3] -> float32 [..., H, W, 3]: ``(x/255 − mean)/std`` per channel.

    In place on one float copy: a frame costs one float32 copy (12 bytes a pixel), not one per step.
    """
    m = torch.tensor(mean, dtype=torch.float32, device=frames.device)
    s = torch.tensor(std, dtype=torch.float32, device=frames.device)
    return frames.to(torch.float32, copy=True).div_(255.0).sub_(m).div_(s)


def resize_short_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] float -> [N, C, H', W'] with the short side at ``size`` (bilinear, align_corners False)."""
    height, width = images.shape[-2:]
    if min(height, width) == size:
        return images
    return F.interpolate(images, size=short_side_shape(height, width, size), mode="bilinear", align_corners=False)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """[..., H, W] -> [..., size, size] at the released centre offsets."""
    height, width = images.shape[-2:]
    if height < size or width < size:
        raise ConfigError(f"cannot crop {size}x{size} from {height}x{width} frames; resize the short side first")
    y0, x0 = crop_offsets(height, width, size)
    return images[..., y0 : y0 + size, x0 : x0 + size]


def preprocess(
    frames: torch.Tensor,
    size: int,
    device: str | torch.device | None = None,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
) -> torch.Tensor:
    """Decoded clips to model input: uint8 [V, T, H, W, 3] -> float32 [V, T, 3, size, size], CLIP-normalised.

    ``size``: the model's input side (``model.arch.image_size``: 224 for B/16). ``device``: where
    to compute (None: where ``frames`` are); the uint8 frames move there before any arithmetic.
    """
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ConfigError(f"preprocess expects uint8 frames [V, T, H, W, 3]; got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ConfigError(f"preprocess expects uint8 frames (0-255); got dtype {frames.dtype}")
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"size={size!r}: must be a positive int (the model's image size)")
    v, t, h, w, _ = frames.shape
    return transform_frames(frames.reshape(v * t, h, w, 3), size, device, mean, std).view(v, t, 3, size, size)


def transform_frames(
    frames: torch.Tensor,
    size: int,
    device: str | torch.device | None = None,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, size, size], :data:`CHUNK_BYTES` of float frames at a time."""
    n, h, w, _ = frames.shape
    if h == 0 or w == 0:
        raise VideoError(f"frames of {w}x{h} pixels cannot be resized to {size}x{size}; the video has empty frames")
    step = max(1, CHUNK_BYTES // (h * w * 3 * 4))
    out = [_transform_chunk(frames[start : start + step], size, device, mean, std) for start in range(0, n, step)]
    if not out:
        dev = frames.device if device is None else torch.device(device)
        return torch.empty(0, 3, size, size, device=dev)
    return torch.cat(out) if len(out) > 1 else out[0]


def _transform_chunk(chunk: torch.Tensor, size: int, device, mean, std) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> float32 [n, 3, size, size]; its float frames are freed on return, before the next chunk."""
    x = normalize(chunk.to(device) if device is not None else chunk, mean, std)  # [n, H, W, 3]
    x = x.permute(0, 3, 1, 2)  # [n, 3, H, W] (channels-last strides)
    return center_crop(resize_short_side(x, size), size).contiguous()  # [n, 3, size, size]
