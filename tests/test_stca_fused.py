"""The fused STCA path against the reference: every mode, odd shapes, low precision, gradients."""

import pytest
import torch
from helpers import randomize_, report, small_arch

from stdd_fast import STCAConfig, create_model
from stdd_fast.numerics import FP32_MAX_REL, low_precision_bound, max_rel_err
from stdd_fast.stca.fused import stca_block_fused
from stdd_fast.stca.pieces import layer_norm
from stdd_fast.stca.reference import stca_block_reference

MODES = [
    ("none", False, True),
    ("seeded", False, True),
    ("official", False, True),
    ("none", True, True),
    ("none", True, False),
]


def _model(grid, shuffle="none", repeat=True, width=64, layers=2, scales=(1, 2), fold=32):
    cfg = STCAConfig(shuffle=shuffle, spatial_repeat=repeat, seed=5, temporal_scale=scales, channel_fold=fold)
    return randomize_(create_model(small_arch(grid, width=width, layers=layers), stca=cfg), seed=grid + width)


def _encode(model, frames, impl, seed=0):
    model.set_impl(impl)
    torch.manual_seed(seed)
    return model.encode_video(frames)


@pytest.mark.parametrize("shuffle, training, repeat", MODES)
@pytest.mark.parametrize("grid, T, B", [(14, 8, 3), (16, 3, 1), (8, 1, 5), (14, 5, 2)])
def test_fused_encoder_matches_reference(shuffle, training, repeat, grid, T, B):
    model = _model(grid, shuffle, repeat).train(training)
    frames = torch.randn(B, T, 3, 4 * grid, 4 * grid)
    with torch.no_grad():
        ref = _encode(model, frames, "reference")
        fused = _encode(model, frames, "fused")
    err = report(
        f"fused vs reference ({shuffle}, train={training}, repeat={repeat}, grid={grid}, T={T}, B={B})",
        max_rel_err(fused, ref),
    )
    assert err <= FP32_MAX_REL


@pytest.mark.parametrize("scales, fold, width", [((1,), 8, 64), ((1, 2, 3), 4, 96), ((2,), 16, 128)])
def test_fused_block_other_stca_configs(scales, fold, width):
    model = _model(8, scales=scales, fold=fold, width=width)
    block = model.blocks[1]
    x = torch.randn(6 * 4, 65, width)
    vis = block.visible_tokens(6, 4, x.device)
    src = block.index.source_maps(4, x.device)
    with torch.no_grad():
        err = max_rel_err(stca_block_fused(block, x, vis, src), stca_block_reference(block, x, vis, src))
    assert report(f"fused block, scales={scales}, fold={fold}, width={width}", err) <= FP32_MAX_REL


def test_fused_bf16_error_is_within_twice_the_reference_error():
    model = _model(14, width=128, layers=2)
    frames = torch.randn(2, 8, 3, 56, 56)
    with torch.no_grad():
        exact = _encode(model, frames, "reference")
        model.to(torch.bfloat16)
        ref_err = max_rel_err(_encode(model, frames, "reference"), exact)
        fused_err = max_rel_err(_encode(model, frames, "fused"), exact)
    report("bf16 reference vs fp32 reference", ref_err)
    report("bf16 fused vs fp32 reference", fused_err)
    assert fused_err <= low_precision_bound(ref_err)


@pytest.mark.parametrize("repeat", [True, False])
def test_fused_gradients_match_reference(repeat):
    model = _model(8, repeat=repeat, layers=2).train()
    frames = torch.randn(3, 4, 3, 32, 32)
    weights = torch.nn.functional.normalize(torch.randn(5, 32), dim=-1)
    grads = {}
    for impl in ("reference", "fused"):
        model.zero_grad()
        emb = _encode(model, frames, impl, seed=3)
        (emb @ weights.T).square().sum().backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["reference"].keys() == grads["fused"].keys() and len(grads["fused"]) > 20
    worst = max(max_rel_err(grads["fused"][n], g) for n, g in grads["reference"].items())
    assert report("fused vs reference parameter gradients (worst tensor)", worst) <= FP32_MAX_REL


def test_folded_weights_follow_parameter_updates():
    model = _model(8)
    frames = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        before = _encode(model, frames, "fused")
        for p in model.blocks[0].parameters():
            p.mul_(1.1)
        after = _encode(model, frames, "fused")
        ref = _encode(model, frames, "reference")
    assert not torch.allclose(before, after)
    assert report("fused after in-place weight update", max_rel_err(after, ref)) <= FP32_MAX_REL


@pytest.mark.parametrize("x_dtype, param_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)])
def test_layer_norm_piece_takes_parameters_of_another_dtype(x_dtype, param_dtype):
    """LayerNorm with statistics: input and parameters in different dtypes compute in fp32, output in x's dtype."""
    x = (3 * torch.randn(5, 7, 48) + 1).to(x_dtype)
    weight = (1 + 0.2 * torch.randn(48)).to(param_dtype)
    bias = (0.1 * torch.randn(48)).to(param_dtype)
    normed, mean, rstd = layer_norm(x, weight, bias, 1e-5)
    exact = torch.nn.functional.layer_norm(x.double(), (48,), weight.double(), bias.double(), 1e-5)
    assert normed.dtype == x_dtype and mean.dtype == rstd.dtype == torch.float32
    bound = FP32_MAX_REL if x_dtype == torch.float32 else torch.finfo(x_dtype).eps
    err = report(f"layer_norm piece x {x_dtype} params {param_dtype}", max_rel_err(normed, exact))
    assert err <= bound
    assert max_rel_err(mean, x.double().mean(-1, keepdim=True)) <= FP32_MAX_REL
