"""Triton kernels against their PyTorch references (CPU: Triton's interpreter, fp32; GPU: native).

Outputs are NaN-poisoned before each launch: an element the kernel does not write fails the test.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_, small_arch
from tolerances import FP32_MAX_REL, max_rel_err, report

from stdd_fast import STCAConfig, create_model
from stdd_fast.head import score_ref
from stdd_fast.ops import resolve_impl
from stdd_fast.stca_fused import (
    fold_sparse_projection,
    layer_norm_with_stats,
    scatter_residual_ref,
    sparse_attention_ref,
)

triton = pytest.importorskip("triton")
try:
    resolve_impl("triton", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
except Exception as e:  # no CUDA and no interpreter: nothing to run here
    pytest.skip(f"Triton kernels cannot run here: {e}", allow_module_level=True)

from stdd_fast.kernels.stca_scatter import stca_scatter  # noqa: E402
from stdd_fast.kernels.stca_sparse_attention import stca_sparse_attention  # noqa: E402
from stdd_fast.kernels.stdd_head import stdd_score  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MODES = [("none", False, True), ("seeded", False, True), ("official", False, True), ("none", True, False)]


def _block_inputs(grid, B, T, shuffle="none", training=False, repeat=True, width=64, heads=4):
    cfg = STCAConfig(shuffle=shuffle, spatial_repeat=repeat, seed=1)
    model = randomize_(create_model(small_arch(grid, width=width, heads=heads), stca=cfg), seed=grid).to(DEVICE)
    block = model.blocks[0].train(training)
    x = torch.randn(B * T, grid * grid + 1, width, device=DEVICE)
    torch.manual_seed(B * 100 + T)
    vis = block.visible_tokens(B, T, x.device)
    src = block.index.source_maps(T, x.device)
    return block, x, vis, src


@pytest.mark.parametrize("shuffle, training, repeat", MODES)
@pytest.mark.parametrize("grid, B, T", [(14, 1, 8), (12, 3, 3), (8, 5, 1), (8, 2, 5)])
def test_sparse_attention_kernel(shuffle, training, repeat, grid, B, T):
    block, x, vis, src = _block_inputs(grid, B, T, shuffle, training, repeat)
    with torch.no_grad():
        h, mean, rstd = layer_norm_with_stats(block.ln_1, x)
        qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias)
        proj = fold_sparse_projection(block, src.shape[-1], x.dtype)
        ref = sparse_attention_ref(qkv, x, mean, rstd, vis, src, proj, block.attn.num_heads)
        out = torch.full_like(ref, float("nan"))
        stca_sparse_attention(qkv, x, mean, rstd, vis, src, proj, block.attn.num_heads, out=out)
    err = report(
        f"sparse-attention kernel ({shuffle}, train={training}, grid={grid}, B={B}, T={T})", max_rel_err(out, ref)
    )
    assert err <= FP32_MAX_REL


def test_l14_grid_takes_the_pytorch_sparse_path():
    """1 + 128 rows exceed the kernel's tile: the launcher refuses, the triton path dispatches to the reference."""
    from stdd_fast.kernels import sparse_attention_triton

    block, x, vis, src = _block_inputs(16, 2, 3)
    with torch.no_grad():
        h, mean, rstd = layer_norm_with_stats(block.ln_1, x)
        qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias)
        proj = fold_sparse_projection(block, src.shape[-1], x.dtype)
        args = (qkv, x, mean, rstd, vis, src, proj, block.attn.num_heads)
        with pytest.raises(ValueError, match="<= 127 visible patches per frame, got 128"):
            stca_sparse_attention(*args)
        assert torch.equal(sparse_attention_triton(*args), sparse_attention_ref(*args))


@pytest.mark.parametrize("shuffle, training, repeat", MODES)
@pytest.mark.parametrize("grid, B, T", [(14, 1, 8), (16, 3, 3), (8, 5, 1)])
def test_scatter_kernel(shuffle, training, repeat, grid, B, T):
    _, x, vis, src = _block_inputs(grid, B, T, shuffle, training, repeat)
    full, mlp = torch.randn_like(x), torch.randn_like(x)
    sparse_proj = torch.randn(x.shape[0], vis.shape[2] + 1, x.shape[2], device=DEVICE)
    ref = scatter_residual_ref(full, mlp, x, sparse_proj, vis, src)
    out = torch.full_like(ref, float("nan"))
    stca_scatter(full, mlp, x, sparse_proj, vis, src, out=out)
    err = report(f"scatter kernel ({shuffle}, train={training}, grid={grid}, B={B}, T={T})", max_rel_err(out, ref))
    assert err <= FP32_MAX_REL


@pytest.mark.parametrize("B, T, K, N, D", [(3, 8, 7, 9, 32), (1, 1, 4, 70, 48), (17, 3, 5, 5, 64), (2, 5, 3, 130, 16)])
def test_head_kernel(B, T, K, N, D):
    f = F.normalize(torch.randn(B, T, D, device=DEVICE), dim=-1)
    w = F.normalize(torch.randn(K, N, D, device=DEVICE), dim=-1)
    scale = torch.tensor(4.6, device=DEVICE)
    out = torch.full((B, K), float("nan"), device=DEVICE)
    stdd_score(f, w, scale, out=out)
    err = report(f"head kernel B={B} T={T} K={K} N={N} D={D}", max_rel_err(out, score_ref(f, w, scale)))
    assert err <= FP32_MAX_REL


@pytest.mark.parametrize("shuffle, training", [("none", False), ("seeded", False), ("none", True)])
def test_triton_encoder_matches_reference(shuffle, training):
    model = randomize_(create_model(small_arch(8, layers=2), stca=STCAConfig(shuffle=shuffle)), 4).to(DEVICE)
    model.train(training)
    frames = torch.randn(3, 4, 3, 32, 32, device=DEVICE)
    out = {}
    with torch.no_grad():
        for impl in ("reference", "triton"):
            model.set_impl(impl)
            torch.manual_seed(0)
            out[impl] = model.encode_video(frames)
    err = report(
        f"triton encoder vs reference ({shuffle}, train={training})", max_rel_err(out["triton"], out["reference"])
    )
    assert err <= FP32_MAX_REL


def test_triton_gradients_match_reference():
    model = randomize_(create_model(small_arch(8, layers=2)), 6).to(DEVICE).train()
    frames = torch.randn(2, 3, 3, 32, 32, device=DEVICE)
    weights = F.normalize(torch.randn(4, 6, 32, device=DEVICE), dim=-1)
    grads = {}
    for impl in ("reference", "triton"):
        model.set_impl(impl)
        model.zero_grad()
        torch.manual_seed(2)
        emb = model.encode_video(frames)
        from stdd_fast import score

        score(emb, weights, model.logit_scale, impl=impl).logsumexp(-1).sum().backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    worst = max(max_rel_err(grads["triton"][n], g) for n, g in grads["reference"].items())
    assert report("triton vs reference parameter gradients (worst tensor)", worst) <= FP32_MAX_REL
    assert grads["triton"].keys() == grads["reference"].keys()


def test_custom_ops_pass_opcheck():
    block, x, vis, src = _block_inputs(8, 2, 3)
    h, mean, rstd = layer_norm_with_stats(block.ln_1, x)
    qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias).detach()
    proj = fold_sparse_projection(block, src.shape[-1], x.dtype)
    args = (
        qkv,
        x,
        mean.detach(),
        rstd.detach(),
        vis,
        src,
        proj.const.detach(),
        proj.gain_sum.detach(),
        proj.head.detach(),
        block.attn.num_heads,
    )
    torch.library.opcheck(
        torch.ops.stdd_fast.stca_sparse_attention.default,
        args,
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )
    f = F.normalize(torch.randn(2, 3, 16, device=DEVICE), dim=-1)
    w = F.normalize(torch.randn(3, 5, 16, device=DEVICE), dim=-1)
    torch.library.opcheck(
        torch.ops.stdd_fast.stdd_score.default,
        (f, w, torch.tensor(4.6, device=DEVICE)),
        test_utils=("test_schema", "test_faketensor"),
    )
