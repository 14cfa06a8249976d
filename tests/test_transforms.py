"""Test-time transforms (STDD-SPEC §6.3-6.5): sizes, offsets, bilinear without corner alignment, CLIP stats."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import report

from stdd_fast import video
from stdd_fast.errors import ConfigError
from stdd_fast.numerics import EXACT_MAX_REL, max_rel_err


def test_short_side_and_crop_arithmetic():
    # Kinetics "se256" copies: 256 x 340 -> short side 224, long floor(340/256 * 224) = floor(297.5) = 297.
    assert video.short_side_shape(256, 340, 224) == (224, 297)
    assert video.crop_offsets(224, 297, 224) == (0, 37)  # ceil(73 / 2)
    # Portrait: 341 x 256 -> floor(341/256 * 224) = floor(298.375) = 298 rows.
    assert video.short_side_shape(341, 256, 224) == (298, 224)
    assert video.crop_offsets(298, 224, 224) == (37, 0)
    assert video.short_side_shape(100, 100, 224) == (224, 224)
    # Odd sizes, upscaling: 27 x 35 -> 32 x floor(35/27 * 32) = 32 x 41, crop at x ceil(9/2) = 5.
    assert video.short_side_shape(27, 35, 32) == (32, 41)
    assert video.crop_offsets(32, 41, 32) == (0, 5)


def test_normalisation_uses_clip_mean_and_std():
    # One row of three grey pixels, 0, 128 and 255: [H=1, W=3, C=3].
    frames = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3, 1).expand(1, 1, 1, 3, 3)
    out = video.normalize(frames)
    for c, (m, s) in enumerate(zip(video.CLIP_MEAN, video.CLIP_STD, strict=True)):
        for i, v in enumerate((0, 128, 255)):
            assert out[0, 0, 0, i, c].item() == pytest.approx((v / 255 - m) / s, abs=1e-6)


def test_bilinear_is_not_corner_aligned():
    # Halving with align_corners=False samples at 2j + 0.5: the mean of each 2 x 2 block.
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert video.resize_short_side(x, 2).tolist() == [[[[2.5, 4.5], [10.5, 12.5]]]]
    # Already at the target: returned untouched (the released loader skips the resize).
    y = torch.randn(2, 3, 32, 50)
    assert video.resize_short_side(y, 32) is y


def literal_preprocess(frames: torch.Tensor, size: int) -> torch.Tensor:
    """The spec's steps one frame at a time: /255, mean/std, short side, centre crop."""
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    out = []
    for frame in frames.flatten(0, 1):  # [H, W, 3]
        x = ((frame.float() / 255.0 - mean) / std).permute(2, 0, 1)[None]  # [1, 3, H, W]
        h, w = x.shape[-2:]
        if min(h, w) != size:
            nh, nw = (math.floor(h / w * size), size) if w < h else (size, math.floor(w / h * size))
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        h, w = x.shape[-2:]
        y0, x0 = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
        out.append(x[0, :, y0 : y0 + size, x0 : x0 + size])
    return torch.stack(out).view(*frames.shape[:2], 3, size, size)


@pytest.mark.parametrize(("h", "w"), [(27, 35), (48, 64), (64, 48), (32, 32), (31, 200), (256, 340)])
@pytest.mark.parametrize("size", [32, 224])
def test_preprocess_matches_the_literal_steps(h, w, size):
    g = torch.Generator().manual_seed(h * w + size)
    frames = torch.randint(0, 256, (2, 3, h, w, 3), dtype=torch.uint8, generator=g)
    got = video.preprocess(frames, size)
    assert got.shape == (2, 3, 3, size, size) and got.dtype == torch.float32 and got.is_contiguous()
    err = report(f"preprocess vs literal steps {h}x{w}->{size}", max_rel_err(got, literal_preprocess(frames, size)))
    assert err <= EXACT_MAX_REL


def test_input_validation():
    with pytest.raises(ConfigError, match=r"uint8 frames \[V, T, H, W, 3\]"):
        video.preprocess(torch.zeros(3, 8, 32, 32, dtype=torch.uint8), 32)
    with pytest.raises(ConfigError, match=r"got dtype torch\.float32"):
        video.preprocess(torch.zeros(1, 8, 32, 32, 3), 32)
    with pytest.raises(ConfigError, match="cannot crop 32x32 from 20x40"):
        video.center_crop(torch.zeros(1, 3, 20, 40), 32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    frames = torch.randint(0, 256, (3, 8, 240, 320, 3), dtype=torch.uint8)
    gpu = video.preprocess(frames, 224, device="cuda")
    assert gpu.device.type == "cuda"
    err = report("preprocess cuda vs cpu", max_rel_err(gpu.cpu(), video.preprocess(frames, 224)))
    assert err <= EXACT_MAX_REL
