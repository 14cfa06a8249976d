"""Triton kernels against their PyTorch references (CPU: Triton's interpreter, fp32; GPU: native).

Outputs are NaN-poisoned before each launch: an element the kernel does not write fails the test.
"""

import warnings

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
from stdd_fast.kernels.stca_sparse_attention import single_tile, stca_sparse_attention  # noqa: E402
from stdd_fast.kernels.stdd_head import stdd_score  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MODES = [("none", False, True), ("seeded", False, True), ("official", False, True), ("none", True, False)]


def _block_inputs(grid, B, T, shuffle="none", training=False, repeat=True, width=64, heads=4, scales=(1, 2), fold=32):
    cfg = STCAConfig(shuffle=shuffle, spatial_repeat=repeat, seed=1, temporal_scale=scales, channel_fold=fold)
    model = randomize_(create_model(small_arch(grid, width=width, heads=heads), stca=cfg), seed=grid).to(DEVICE)
    block = model.blocks[0].train(training)
    x = torch.randn(B * T, grid * grid + 1, width, device=DEVICE)
    torch.manual_seed(B * 100 + T)
    vis = block.visible_tokens(B, T, x.device)
    src = block.index.source_maps(T, x.device)
    return block, x, vis, src


@pytest.mark.parametrize("shuffle, training, repeat", MODES)
@pytest.mark.parametrize("grid, B, T", [(14, 1, 8), (12, 3, 3), (8, 5, 1), (8, 2, 5), (16, 1, 3)])
def test_sparse_attention_kernel(shuffle, training, repeat, grid, B, T):
    block, x, vis, src = _block_inputs(grid, B, T, shuffle, training, repeat)
    with torch.no_grad():
        h, mean, rstd = layer_norm_with_stats(block.ln_1, x)
        qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias)
        proj = fold_sparse_projection(block, src.shape[-1], x.dtype)
        ref = sparse_attention_ref(qkv, x, mean, rstd, vis, src, proj, block.attn.num_heads)
        out = torch.full_like(ref, float("nan"))
        stca_sparse_attention(qkv, x, mean, rstd, vis, src, proj, block.attn.num_heads, out=out)
    kind = "one tile" if single_tile(vis.shape[2]) else "blocked"
    err = report(
        f"sparse-attention kernel, {kind} ({shuffle}, train={training}, grid={grid}, B={B}, T={T})",
        max_rel_err(out, ref),
    )
    assert err <= FP32_MAX_REL


@pytest.mark.parametrize(
    "scales, fold, grid, B, T",
    [((1, 2), 32, 12, 2, 4), ((1,), 32, 12, 2, 4), ((1, 2, 3), 8, 12, 2, 4), ((1, 3), 8, 16, 1, 2)],
)
def test_sparse_kernel_head_groups_are_bit_identical(scales, fold, grid, B, T):
    """Every heads-per-program split (the tuned launch parameter) gives the same bits, for 1, 2 and 3 scales,
    in the one-tile kernel and in the blocked one (grid 16: 1 + 128 rows, the ViT-L/14 frame)."""
    block, x, vis, src = _block_inputs(grid, B, T, "seeded", scales=scales, fold=fold)
    heads = block.attn.num_heads
    with torch.no_grad():
        h, mean, rstd = layer_norm_with_stats(block.ln_1, x)
        qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias)
        proj = fold_sparse_projection(block, src.shape[-1], x.dtype)
        args = (qkv, x, mean, rstd, vis, src, proj, heads)
        ref = sparse_attention_ref(*args)
        outs = {}
        for group in (1, 2, heads):
            outs[group] = torch.full_like(ref, float("nan"))
            stca_sparse_attention(*args, out=outs[group], heads_per_program=group)
        with pytest.raises(ValueError, match="heads_per_program=3 does not divide num_heads=4"):
            stca_sparse_attention(*args, heads_per_program=3)
    kind = "one tile" if single_tile(vis.shape[2]) else "blocked"
    err = report(f"sparse-attention kernel, {kind}, {len(scales)} scale(s), head groups", max_rel_err(outs[1], ref))
    assert err <= FP32_MAX_REL
    assert torch.equal(outs[1], outs[2]) and torch.equal(outs[1], outs[heads])


@pytest.mark.parametrize("grid, B, T", [(14, 1, 8), (8, 2, 5)])
def test_blocked_kernel_takes_any_frame_size(grid, B, T):
    """The blocked kernel (the fallback where one tile does not fit the GPU) is the same function at B/16 sizes."""
    block, x, vis, src = _block_inputs(grid, B, T, "seeded")
    with torch.no_grad():
        h, mean, rstd = layer_norm_with_stats(block.ln_1, x)
        qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias)
        proj = fold_sparse_projection(block, src.shape[-1], x.dtype)
        args = (qkv, x, mean, rstd, vis, src, proj, block.attn.num_heads)
        out = torch.full((x.shape[0], vis.shape[2] + 1, x.shape[2]), float("nan"), device=DEVICE)
        stca_sparse_attention(*args, out=out, blocked=True)
        err = report(
            f"sparse-attention kernel, blocked, grid={grid} B={B} T={T}", max_rel_err(out, sparse_attention_ref(*args))
        )
    assert err <= FP32_MAX_REL


def test_l14_frames_take_the_blocked_kernel():
    """1 + 128 rows (ViT-L/14) exceed the one-tile kernel: the blocked kernel runs them, through the triton path."""
    from stdd_fast.kernels import kernel_runs_sparse_attention, sparse_attention_triton

    block, x, vis, src = _block_inputs(16, 2, 2)
    assert not single_tile(vis.shape[2]) and single_tile(98)
    with torch.no_grad():
        h, mean, rstd = layer_norm_with_stats(block.ln_1, x)
        qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias)
        proj = fold_sparse_projection(block, src.shape[-1], x.dtype)
        args = (qkv, x, mean, rstd, vis, src, proj, block.attn.num_heads)
        out = sparse_attention_triton(*args)
        runs_kernel = kernel_runs_sparse_attention(x)  # fp32 on a GPU runs the PyTorch sparse path
        assert torch.equal(out, stca_sparse_attention(*args) if runs_kernel else sparse_attention_ref(*args))
        with pytest.raises(ValueError, match="blocked=False: one tile takes <= 127 visible patches per frame, got 128"):
            stca_sparse_attention(*args, blocked=False)
    assert report("triton path at the L/14 frame vs reference", max_rel_err(out, sparse_attention_ref(*args))) <= (
        FP32_MAX_REL
    )


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


@pytest.mark.parametrize("shape", [(3, 17, 64), (5, 48), (2, 7, 100), (1, 1, 768)])
@pytest.mark.parametrize("residual", [False, True])
def test_layer_norm_kernel(shape, residual):
    """LN1 (normed rows + fp32 stats) and LN2 (residual add, then LN of the stored sum) against the references."""
    from stdd_fast.kernels.layer_norm import layer_norm_rows
    from stdd_fast.stca_fused import layer_norm_stats, residual_layer_norm_ref

    d = shape[-1]
    gen = torch.Generator().manual_seed(d)
    x = (3 * torch.randn(shape, generator=gen) + 1).to(DEVICE)
    update = torch.randn(shape, generator=gen).to(DEVICE)
    weight = (1 + 0.2 * torch.randn(d, generator=gen)).to(DEVICE)
    bias = (0.1 * torch.randn(d, generator=gen)).to(DEVICE)
    if residual:
        total, normed, mean, rstd = layer_norm_rows(update, weight, bias, 1e-5, residual=x)
        ref_total, ref_normed = residual_layer_norm_ref(update, x, weight, bias, 1e-5)
        _, ref_mean, ref_rstd = layer_norm_stats(ref_total, weight, bias, 1e-5)
        assert torch.equal(total, ref_total)
    else:
        total, normed, mean, rstd = layer_norm_rows(x, weight, bias, 1e-5)
        ref_normed, ref_mean, ref_rstd = layer_norm_stats(x, weight, bias, 1e-5)
        assert total is x
    assert mean.shape == rstd.shape == (*shape[:-1], 1) and mean.dtype == rstd.dtype == torch.float32
    err = max(max_rel_err(normed, ref_normed), max_rel_err(mean, ref_mean), max_rel_err(rstd, ref_rstd))
    assert report(f"LayerNorm kernel {shape} residual={residual}", err) <= FP32_MAX_REL


def test_scatter_kernel_tiles_are_bit_identical():
    """Every tile shape the launch may be tuned to writes the same bits; out may not alias an input."""
    from stdd_fast.kernels.stca_scatter import TILES

    _, x, vis, src = _block_inputs(12, 2, 3, "seeded")
    full, mlp = torch.randn_like(x), torch.randn_like(x)
    sparse_proj = torch.randn(x.shape[0], vis.shape[2] + 1, x.shape[2], device=DEVICE)
    outs = []
    for tile in TILES:
        outs.append(torch.full_like(x, float("nan")))
        stca_scatter(full, mlp, x, sparse_proj, vis, src, out=outs[-1], tile=tile)
    ref = scatter_residual_ref(full, mlp, x, sparse_proj, vis, src)
    assert report("scatter kernel, every tile", max(max_rel_err(o, ref) for o in outs)) <= FP32_MAX_REL
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    with pytest.raises(ValueError, match="must not share memory"):
        stca_scatter(full, mlp, x, sparse_proj, vis, src, out=full)


@pytest.mark.parametrize("B, T, K, N, D", [(3, 8, 7, 9, 32), (1, 1, 4, 70, 48), (17, 3, 5, 5, 64), (2, 5, 3, 130, 16)])
def test_head_kernel(B, T, K, N, D):
    f = F.normalize(torch.randn(B, T, D, device=DEVICE), dim=-1)
    w = F.normalize(torch.randn(K, N, D, device=DEVICE), dim=-1)
    scale = torch.tensor(4.6, device=DEVICE)
    out = torch.full((B, K), float("nan"), device=DEVICE)
    stdd_score(f, w, scale, out=out)
    err = report(f"head kernel B={B} T={T} K={K} N={N} D={D}", max_rel_err(out, score_ref(f, w, scale)))
    assert err <= FP32_MAX_REL


@pytest.mark.parametrize(
    "shuffle, training, grid, B",
    [("none", False, 8, 3), ("seeded", False, 8, 3), ("none", True, 8, 3), ("seeded", False, 16, 1)],
)
def test_triton_encoder_matches_reference(shuffle, training, grid, B):
    """B/16-like grids take the one-tile sparse kernel, the L/14-like grid (16x16) the blocked one."""
    model = randomize_(create_model(small_arch(grid, layers=2), stca=STCAConfig(shuffle=shuffle)), 4).to(DEVICE)
    model.train(training)
    frames = torch.randn(B, 4, 3, 4 * grid, 4 * grid, device=DEVICE)
    out = {}
    with torch.no_grad():
        for impl in ("reference", "triton"):
            model.set_impl(impl)
            torch.manual_seed(0)
            out[impl] = model.encode_video(frames)
    err = report(
        f"triton encoder vs reference ({shuffle}, train={training}, grid={grid})",
        max_rel_err(out["triton"], out["reference"]),
    )
    assert err <= FP32_MAX_REL


def test_compiled_triton_encoder_has_no_graph_breaks():
    """torch.compile(fullgraph=True) traces the triton path whole: every kernel is an opaque custom op."""
    model = randomize_(create_model(small_arch(8, layers=2), stca=STCAConfig(shuffle="seeded")), 5).to(DEVICE).eval()
    frames = torch.randn(2, 3, 3, 32, 32, device=DEVICE)
    with torch.no_grad():
        ref = model.encode_video(frames)
        model.set_impl("triton")
        out = torch.compile(model.encode_video, fullgraph=True)(frames)
    assert report("compiled triton encoder vs reference", max_rel_err(out, ref)) <= FP32_MAX_REL


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
    ln = block.ln_2
    torch.library.opcheck(
        torch.ops.stdd_fast.layer_norm_stats.default,
        (x, ln.weight.detach(), ln.bias.detach(), ln.eps),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )
    torch.library.opcheck(
        torch.ops.stdd_fast.residual_layer_norm.default,
        (qkv[..., : x.shape[-1]].contiguous(), x, ln.weight.detach(), ln.bias.detach(), ln.eps),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )
    f = F.normalize(torch.randn(2, 3, 16, device=DEVICE), dim=-1)
    w = F.normalize(torch.randn(3, 5, 16, device=DEVICE), dim=-1)
    torch.library.opcheck(
        torch.ops.stdd_fast.stdd_score.default,
        (f, w, torch.tensor(4.6, device=DEVICE)),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_a_kernel_the_gpu_cannot_launch_falls_back_to_its_reference(monkeypatch):
    """OutOfResources (a GPU smaller than the kernels were sized for) runs the reference, warning once."""
    from triton.runtime.errors import OutOfResources

    import stdd_fast.kernels as kernels

    def too_big(*args, **kwargs):
        raise OutOfResources(300_000, 101_376, "shared memory")

    monkeypatch.setattr(kernels, "stca_scatter", too_big)
    monkeypatch.setattr(kernels, "UNLAUNCHABLE", {})
    _, x, vis, src = _block_inputs(8, 2, 3)
    full, mlp = torch.randn_like(x), torch.randn_like(x)
    sparse_proj = torch.randn(x.shape[0], vis.shape[2] + 1, x.shape[2], device=DEVICE)
    ref = scatter_residual_ref(full, mlp, x, sparse_proj, vis, src)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="stca_scatter cannot launch on this GPU"):
        out = kernels.scatter_residual_triton(full, mlp, x, sparse_proj, vis, src)
    assert torch.equal(out, ref)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call for the shape goes straight to the reference
        assert torch.equal(kernels.scatter_residual_triton(full, mlp, x, sparse_proj, vis, src), ref)
    assert list(kernels.UNLAUNCHABLE) == [("stca_scatter", x.dtype, tuple(x.shape))]


def test_a_sparse_tile_the_gpu_cannot_fit_runs_the_blocked_kernel(monkeypatch):
    """Where one tile exceeds the GPU's shared memory the blocked kernel runs; where that fails too, the reference."""
    from triton.runtime.errors import OutOfResources

    import stdd_fast.kernels as kernels

    real = kernels.stca_sparse_attention
    too_big = {"tile"}

    def launch(*args, blocked=None):
        if ("blocked" if blocked else "tile") in too_big:
            raise OutOfResources(300_000, 101_376, "shared memory")
        return real(*args, blocked=blocked)

    monkeypatch.setattr(kernels, "stca_sparse_attention", launch)
    monkeypatch.setattr(kernels, "UNLAUNCHABLE", {})
    block, x, vis, src = _block_inputs(8, 2, 3)
    if not kernels.kernel_runs_sparse_attention(x):
        pytest.skip("fp32 on a GPU runs the PyTorch sparse path: there is no kernel launch to fall back from")
    with torch.no_grad():
        h, mean, rstd = layer_norm_with_stats(block.ln_1, x)
        qkv = F.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias)
        proj = fold_sparse_projection(block, src.shape[-1], x.dtype)
        args = (qkv, x, mean, rstd, vis, src, proj, block.attn.num_heads)
        with pytest.warns(RuntimeWarning, match="running the blocked sparse kernel there instead"):
            out = kernels.sparse_attention_triton(*args)
        assert torch.equal(out, real(*args, blocked=True))
        too_big.add("blocked")  # the tile is known not to fit: the next call goes straight to the blocked kernel
        with pytest.warns(RuntimeWarning, match=r"\(blocked\) cannot launch.*running its PyTorch reference"):
            out = kernels.sparse_attention_triton(*args)
        assert torch.equal(out, sparse_attention_ref(*args))
    assert sorted(name for name, _, _ in kernels.UNLAUNCHABLE) == [
        "stca_sparse_attention",
        "stca_sparse_attention (blocked)",
    ]


def test_fp32_sparse_attention_on_a_gpu_runs_pytorch():
    """The kernel's exact fp32 dot is slow on a GPU (FMA units, spills): fp32 CUDA input runs PyTorch."""
    from types import SimpleNamespace

    from stdd_fast.kernels import kernel_runs_sparse_attention

    def on(device_type, dtype):
        return kernel_runs_sparse_attention(SimpleNamespace(dtype=dtype, is_cuda=device_type == "cuda"))

    assert not on("cuda", torch.float32)
    assert on("cuda", torch.bfloat16) and on("cuda", torch.float16)
    assert on("cpu", torch.float32)  # Triton's interpreter: the kernel's arithmetic is checked in fp32
