"""The sparse-attention kernels (one tile, blocked) against their PyTorch piece, and the policy around them.

CPU: Triton's interpreter, fp32. GPU (``-m gpu``): ViT-B/16 and ViT-L/14 block shapes in fp32, bf16
and fp16 against the fp32 piece. Outputs are NaN-poisoned before each launch: an element the kernel
does not write fails the test.
"""

import pytest
import torch
from helpers import report
from triton_fixtures import (
    DEVICE,
    GPU_DTYPES,
    MODES,
    block_inputs,
    cast_block,
    gpu_block,
    max_abs_difference,
    require_triton,
)

from stdd_fast.config import ArchConfig
from stdd_fast.errors import ConfigError
from stdd_fast.numerics import FP32_MAX_REL, low_precision_bound, max_rel_err
from stdd_fast.stca import pieces
from stdd_fast.stca.pieces import sparse_attention_inputs

require_triton()

from stdd_fast import kernels, triton_ops  # noqa: E402
from stdd_fast.kernels.sparse_attention import head_groups  # noqa: E402


def _inputs(block, x, vis, src):
    """The piece's arguments (proj: a SparseProjection) and the launcher's (its plain tensors), without autograd."""
    with torch.no_grad():
        args = sparse_attention_inputs(block, x, vis, src)
    qkv, x, mean, rstd, vis, src, proj, heads = args
    return args, (qkv, x, mean, rstd, vis, src, proj.const, proj.gain_sum, proj.head, heads)


def _poisoned(x, vis):
    """A NaN-filled output [BT, 1 + V, D] in x's dtype."""
    return torch.full((x.shape[0], vis.shape[2] + 1, x.shape[2]), float("nan"), device=x.device, dtype=x.dtype)


def _kind(vis) -> str:
    return "one tile" if kernels.fits_one_tile(vis.shape[2]) else "blocked"


@pytest.mark.parametrize("shuffle, training, repeat", MODES)
@pytest.mark.parametrize("grid, B, T", [(14, 1, 8), (12, 3, 3), (8, 5, 1), (8, 2, 5), (16, 1, 3)])
def test_sparse_attention_kernel(shuffle, training, repeat, grid, B, T):
    block, x, vis, src = block_inputs(grid, B, T, shuffle, training, repeat)
    args, plain = _inputs(block, x, vis, src)
    with torch.no_grad():
        ref = pieces.sparse_attention(*args)
        out = _poisoned(x, vis)
        kernels.sparse_attention(*plain, blocked=not kernels.fits_one_tile(vis.shape[2]), out=out)
    err = report(
        f"sparse_attention kernel, {_kind(vis)} ({shuffle}, train={training}, grid={grid}, B={B}, T={T})",
        max_rel_err(out, ref),
    )
    assert err <= FP32_MAX_REL


@pytest.mark.parametrize(
    "scales, fold, grid, B, T",
    [((1, 2), 32, 12, 2, 4), ((1,), 32, 12, 2, 4), ((1, 2, 3), 8, 12, 2, 4), ((1, 3), 8, 16, 1, 2)],
)
def test_head_groups_are_bit_identical(scales, fold, grid, B, T):
    """Every heads-per-program split (the tuned launch parameter) gives the same bits, for 1, 2 and 3 scales,
    in the one-tile kernel and in the blocked one (grid 16: 1 + 128 rows, the ViT-L/14 frame)."""
    block, x, vis, src = block_inputs(grid, B, T, "seeded", scales=scales, fold=fold)
    heads = block.attn.num_heads
    blocked = not kernels.fits_one_tile(vis.shape[2])
    args, plain = _inputs(block, x, vis, src)
    with torch.no_grad():
        ref = pieces.sparse_attention(*args)
        outs = {}
        for group in (1, 2, heads):
            outs[group] = _poisoned(x, vis)
            kernels.sparse_attention(*plain, blocked=blocked, out=outs[group], heads_per_program=group)
        with pytest.raises(ValueError, match="heads_per_program=3 does not divide num_heads=4"):
            kernels.sparse_attention(*plain, blocked=blocked, heads_per_program=3)
    err = report(
        f"sparse_attention kernel, {_kind(vis)}, {len(scales)} scale(s), head groups", max_rel_err(outs[1], ref)
    )
    assert err <= FP32_MAX_REL
    assert torch.equal(outs[1], outs[2]) and torch.equal(outs[1], outs[heads])


@pytest.mark.parametrize("grid, B, T", [(14, 1, 8), (8, 2, 5)])
def test_blocked_kernel_takes_any_frame_size(grid, B, T):
    """The blocked kernel (the fallback where one tile does not fit the GPU) is the same function at B/16 sizes."""
    block, x, vis, src = block_inputs(grid, B, T, "seeded")
    args, plain = _inputs(block, x, vis, src)
    with torch.no_grad():
        out = _poisoned(x, vis)
        kernels.sparse_attention(*plain, blocked=True, out=out)
        err = report(
            f"sparse_attention kernel, blocked, grid={grid} B={B} T={T}",
            max_rel_err(out, pieces.sparse_attention(*args)),
        )
    assert err <= FP32_MAX_REL


@pytest.mark.parametrize("grid", [8, 16], ids=["one tile", "blocked"])
def test_fp32_dot_precisions(grid):
    """Both fp32 dot precisions compute the piece (the interpreter's dots are exact either way: the GPU test
    measures tf32x3's rounding); anything else is refused by name."""
    block, x, vis, src = block_inputs(grid, 2, 3, "seeded")
    args, plain = _inputs(block, x, vis, src)
    blocked = not kernels.fits_one_tile(vis.shape[2])
    with torch.no_grad():
        ref = pieces.sparse_attention(*args)
        for fp32_dot in kernels.FP32_DOTS:
            out = _poisoned(x, vis)
            kernels.sparse_attention(*plain, blocked=blocked, out=out, fp32_dot=fp32_dot)
            assert report(f"sparse_attention kernel, {_kind(vis)}, fp32_dot={fp32_dot}", max_rel_err(out, ref)) <= (
                FP32_MAX_REL
            )
        with pytest.raises(ValueError, match=r"fp32_dot='tf32'; expected one of \('ieee', 'tf32x3'\)"):
            kernels.sparse_attention(*plain, blocked=blocked, fp32_dot="tf32")


def test_l14_frames_take_the_blocked_kernel():
    """1 + 128 rows (ViT-L/14) exceed the one-tile kernel: the blocked kernel runs them, through the triton path."""
    block, x, vis, src = block_inputs(16, 2, 2)
    assert not kernels.fits_one_tile(vis.shape[2]) and kernels.fits_one_tile(98)
    args, plain = _inputs(block, x, vis, src)
    with torch.no_grad():
        out = triton_ops.sparse_attention(*args)
        runs_kernel = triton_ops.kernel_runs_sparse_attention(x)  # fp32 on a GPU runs the PyTorch sparse path
        expected = kernels.sparse_attention(*plain, blocked=True) if runs_kernel else pieces.sparse_attention(*args)
        assert torch.equal(out, expected)
        with pytest.raises(ValueError, match="blocked=False: one tile takes <= 127 visible patches per frame, got 128"):
            kernels.sparse_attention(*plain, blocked=False)
        err = report("triton path at the L/14 frame vs piece", max_rel_err(out, pieces.sparse_attention(*args)))
    assert err <= FP32_MAX_REL


def test_a_tile_the_gpu_cannot_fit_runs_the_blocked_kernel(monkeypatch):
    """Where one tile exceeds the GPU's shared memory the blocked kernel runs; where that fails too, the piece."""
    from triton.runtime.errors import OutOfResources

    real = kernels.sparse_attention
    too_big = {"tile"}

    def launch(*args, blocked=False, fp32_dot="ieee"):
        if ("blocked" if blocked else "tile") in too_big:
            raise OutOfResources(300_000, 101_376, "shared memory")
        return real(*args, blocked=blocked, fp32_dot=fp32_dot)

    monkeypatch.setattr(kernels, "sparse_attention", launch)
    monkeypatch.setattr(triton_ops, "UNLAUNCHABLE", {})
    block, x, vis, src = block_inputs(8, 2, 3)
    if not triton_ops.kernel_runs_sparse_attention(x):
        pytest.skip("fp32 on a GPU runs the PyTorch sparse path: there is no kernel launch to fall back from")
    args, plain = _inputs(block, x, vis, src)
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match="running the blocked sparse kernel there instead"):
            out = triton_ops.sparse_attention(*args)
        assert torch.equal(out, real(*plain, blocked=True))
        too_big.add("blocked")  # the tile is known not to fit: the next call goes straight to the blocked kernel
        with pytest.warns(RuntimeWarning, match=r"\(blocked\) cannot launch.*running its PyTorch piece"):
            out = triton_ops.sparse_attention(*args)
        assert torch.equal(out, pieces.sparse_attention(*args))
    assert sorted(stem for stem, _, _ in triton_ops.UNLAUNCHABLE) == ["sparse_attention", "sparse_attention (blocked)"]


def test_fp32_sparse_attention_on_a_gpu_runs_pytorch():
    """The kernel's exact fp32 dot is slow on a GPU (FMA units, spills): fp32 CUDA input runs PyTorch."""
    from types import SimpleNamespace

    def on(device_type, dtype):
        return triton_ops.kernel_runs_sparse_attention(SimpleNamespace(dtype=dtype, is_cuda=device_type == "cuda"))

    assert not on("cuda", torch.float32)
    assert on("cuda", torch.bfloat16) and on("cuda", torch.float16)
    assert on("cpu", torch.float32)  # Triton's interpreter: the kernel's arithmetic is checked in fp32
    previous = triton_ops.use_fp32_sparse_attention("tf32x3")  # the kernel with three-TF32 dots, when chosen
    try:
        assert previous == "pytorch" and on("cuda", torch.float32)
        with pytest.raises(ConfigError, match=r"'ieee'.*'pytorch', 'tf32x3'"):
            triton_ops.use_fp32_sparse_attention("ieee")
    finally:
        triton_ops.use_fp32_sparse_attention(previous)
    assert not on("cuda", torch.float32)


def test_custom_op_passes_opcheck():
    block, x, vis, src = block_inputs(8, 2, 3)
    _, plain = _inputs(block, x, vis, src)
    torch.library.opcheck(
        torch.ops.stdd_fast.sparse_attention.default,
        tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in plain),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


# -- on a GPU: every dtype at ViT-B/16 (one tile) and ViT-L/14 (blocked) block shapes, 2 clips x 8 frames -------

# ViT-L/14's vision tower at one layer: 16x16 patches (1 + 128 sparse rows), width 1024, 16 heads
L14_ONE_BLOCK = ArchConfig(
    "L14-one-block", embed_dim=768, image_size=224, patch_size=14, vision_width=1024, vision_layers=1,
    vision_heads=16, text_width=64, text_heads=1, text_layers=1,
)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", GPU_DTYPES)
@pytest.mark.parametrize("arch", ["ViT-B-16", L14_ONE_BLOCK], ids=["B16-one-tile", "L14-blocked"])
def test_kernel_in_each_dtype_on_gpu(arch, dtype_name):
    """The kernel in ``dtype`` vs the fp32 piece, within the bound the piece's own error in ``dtype`` sets;
    every head grouping the tuner may pick gives the same bits."""
    dtype = GPU_DTYPES[dtype_name]
    block, x32 = gpu_block(arch, frames=8)
    vis, src = block.visible_tokens(2, 8, DEVICE), block.index.source_maps(8, DEVICE)
    blocked = not kernels.fits_one_tile(vis.shape[2])
    exact_args, _ = _inputs(block, x32, vis, src)
    args, plain = _inputs(cast_block(block, dtype), x32.to(dtype), vis, src)
    tag = f"sparse_attention kernel {'blocked' if blocked else 'one tile'} {dtype_name}"
    with torch.no_grad():
        exact = pieces.sparse_attention(*exact_args)
        out = _poisoned(args[1], vis)
        kernels.sparse_attention(*plain, blocked=blocked, out=out)
        piece_err = report(
            f"sparse_attention piece {dtype_name} vs fp32", max_rel_err(pieces.sparse_attention(*args), exact)
        )
        bound = FP32_MAX_REL if dtype == torch.float32 else low_precision_bound(piece_err)
        assert report(f"{tag} vs fp32 piece", max_rel_err(out, exact)) <= bound
        groups = {}
        for group in head_groups(block.attn.num_heads):
            groups[group] = _poisoned(args[1], vis)
            kernels.sparse_attention(*plain, blocked=blocked, out=groups[group], heads_per_program=group)
    report(f"{tag}: every head grouping, max abs difference", max_abs_difference(out, groups.values()))
    assert all(torch.equal(again, out) for again in groups.values())


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["ViT-B-16", L14_ONE_BLOCK], ids=["B16-one-tile", "L14-blocked"])
def test_tf32x3_kernel_is_exact_fp32_on_gpu(arch):
    """fp32 with ``fp32_dot="tf32x3"`` (three TF32 tensor-core products per dot) vs the fp32 piece, within the fp32
    row of the tolerance table; every head grouping gives the same bits."""
    block, x32 = gpu_block(arch, frames=8)
    vis, src = block.visible_tokens(2, 8, DEVICE), block.index.source_maps(8, DEVICE)
    blocked = not kernels.fits_one_tile(vis.shape[2])
    args, plain = _inputs(block, x32, vis, src)
    tag = f"sparse_attention kernel {'blocked' if blocked else 'one tile'} fp32 tf32x3"
    with torch.no_grad():
        exact = pieces.sparse_attention(*args)
        out = _poisoned(x32, vis)
        kernels.sparse_attention(*plain, blocked=blocked, out=out, fp32_dot="tf32x3")
        assert report(f"{tag} vs fp32 piece", max_rel_err(out, exact)) <= FP32_MAX_REL
        groups = []
        for group in head_groups(block.attn.num_heads, tf32x3_tile=not blocked):
            groups.append(_poisoned(x32, vis))
            kernels.sparse_attention(
                *plain, blocked=blocked, out=groups[-1], heads_per_program=group, fp32_dot="tf32x3"
            )
    assert all(torch.equal(again, out) for again in groups)
