"""The patch embedding as a GEMM (stdd_fast.patch_embed) against open_clip's convolution."""

import pytest
import torch
from helpers import randomize_, report, small_arch

from stdd_fast import create_model
from stdd_fast.numerics import FP32_MAX_REL, max_rel_err
from stdd_fast.ops import embed_frames
from stdd_fast.patch_embed import embeds_gemm, patchify


@pytest.mark.parametrize("grid, frames", [(14, 3), (8, 1), (16, 5)])
def test_gemm_embedding_matches_the_convolution(grid, frames):
    visual = randomize_(create_model(small_arch(grid), stca=None), seed=grid).visual
    x = torch.randn(frames, 3, 4 * grid, 4 * grid)
    with torch.no_grad():
        ref = visual._embeds(x)
        out = embeds_gemm(visual, x)
    assert out.shape == ref.shape == (frames, grid * grid + 1, visual.conv1.out_channels)
    assert report(f"GEMM patch embedding (grid={grid}, frames={frames})", max_rel_err(out, ref)) <= FP32_MAX_REL


def test_patchify_order_matches_the_convolution_kernel():
    frames = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    patches = patchify(frames, 4)  # [2, 4, 48]
    assert patches.shape == (2, 4, 48)
    # patch (row 1, column 0) of frame 1, channel 2: pixels [4:8, 0:4]
    assert torch.equal(patches[1, 2].view(3, 4, 4)[2], frames[1, 2, 4:8, 0:4])


def test_gemm_embedding_gradients_match_the_convolution():
    visual = randomize_(create_model(small_arch(8), stca=None), seed=3).visual
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for fn in (visual._embeds, lambda t: embeds_gemm(visual, t)):
        visual.zero_grad()
        fn(x).square().sum().backward()
        grads.append(visual.conv1.weight.grad.clone())
    assert report("GEMM patch embedding: conv1 weight gradient", max_rel_err(grads[1], grads[0])) <= FP32_MAX_REL


def test_cpu_runs_the_convolution_for_every_impl():
    visual = randomize_(create_model(small_arch(8), stca=None), seed=4).visual
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = visual._embeds(x)
        for impl in ("reference", "fused", "auto"):
            assert torch.equal(embed_frames(visual, x, impl), ref)
