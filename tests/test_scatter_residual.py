"""The scatter-residual kernel against its PyTorch piece, and the fallback where the GPU cannot launch it.

CPU: Triton's interpreter, fp32. GPU (``-m gpu``): ViT-B/16 block shapes in fp32, bf16 and fp16 against
the fp32 piece. Outputs are NaN-poisoned before each launch: an element the kernel does not write fails
the test.
"""

import warnings

import pytest
import torch
from helpers import report
from triton_fixtures import DEVICE, GPU_DTYPES, MODES, block_inputs, gpu_block, max_abs_difference, require_triton

from stdd_fast.numerics import FP32_MAX_REL, low_precision_bound, max_rel_err
from stdd_fast.stca import pieces

require_triton()

from stdd_fast import kernels, triton_ops  # noqa: E402
from stdd_fast.kernels.scatter_residual import TILES  # noqa: E402


def _random_inputs(x, vis):
    """full (F) and mlp like x [BT, L, D], and the projected sparse attention [BT, 1 + V, D]."""
    sparse_proj = torch.randn(x.shape[0], vis.shape[2] + 1, x.shape[2], device=x.device)
    return torch.randn_like(x), torch.randn_like(x), sparse_proj


@pytest.mark.parametrize("shuffle, training, repeat", MODES)
@pytest.mark.parametrize("grid, B, T", [(14, 1, 8), (16, 3, 3), (8, 5, 1)])
def test_scatter_residual_kernel(shuffle, training, repeat, grid, B, T):
    _, x, vis, src = block_inputs(grid, B, T, shuffle, training, repeat)
    full, mlp, sparse_proj = _random_inputs(x, vis)
    ref = pieces.scatter_residual(full, mlp, x, sparse_proj, vis, src)
    out = torch.full_like(ref, float("nan"))
    kernels.scatter_residual(full, mlp, x, sparse_proj, vis, src, out=out)
    err = report(
        f"scatter_residual kernel ({shuffle}, train={training}, grid={grid}, B={B}, T={T})", max_rel_err(out, ref)
    )
    assert err <= FP32_MAX_REL


def test_tiles_are_bit_identical():
    """Every tile shape the launch may be tuned to writes the same bits; out may not alias an input."""
    _, x, vis, src = block_inputs(12, 2, 3, "seeded")
    full, mlp, sparse_proj = _random_inputs(x, vis)
    outs = []
    for tile in TILES:
        outs.append(torch.full_like(x, float("nan")))
        kernels.scatter_residual(full, mlp, x, sparse_proj, vis, src, out=outs[-1], tile=tile)
    ref = pieces.scatter_residual(full, mlp, x, sparse_proj, vis, src)
    assert report("scatter_residual kernel, every tile", max(max_rel_err(o, ref) for o in outs)) <= FP32_MAX_REL
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    with pytest.raises(ValueError, match="must not share memory"):
        kernels.scatter_residual(full, mlp, x, sparse_proj, vis, src, out=full)


def test_a_kernel_the_gpu_cannot_launch_falls_back_to_its_piece(monkeypatch):
    """OutOfResources (a GPU smaller than the kernels were sized for) runs the piece, warning once."""
    from triton.runtime.errors import OutOfResources

    def too_big(*args, **kwargs):
        raise OutOfResources(300_000, 101_376, "shared memory")

    monkeypatch.setattr(kernels, "scatter_residual", too_big)
    monkeypatch.setattr(triton_ops, "UNLAUNCHABLE", {})
    _, x, vis, src = block_inputs(8, 2, 3)
    full, mlp, sparse_proj = _random_inputs(x, vis)
    args = (full, mlp, x, sparse_proj, vis, src)
    ref = pieces.scatter_residual(*args)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="scatter_residual cannot launch on this GPU"):
        out = triton_ops.scatter_residual(*args)
    assert torch.equal(out, ref)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call for the shape goes straight to the piece
        assert torch.equal(triton_ops.scatter_residual(*args), ref)
    assert list(triton_ops.UNLAUNCHABLE) == [("scatter_residual", x.dtype, tuple(x.shape))]


def test_custom_op_passes_opcheck():
    _, x, vis, src = block_inputs(8, 2, 3)
    full, mlp, sparse_proj = _random_inputs(x, vis)
    torch.library.opcheck(
        torch.ops.stdd_fast.scatter_residual.default,
        (full, mlp, x, sparse_proj, vis, src),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


# -- on a GPU: every dtype at ViT-B/16 block shapes, 2 clips x 8 frames ----------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", GPU_DTYPES)
def test_kernel_in_each_dtype_on_gpu(dtype_name):
    """The kernel in ``dtype`` vs the fp32 piece, within the bound the piece's own error in ``dtype`` sets;
    every tile the tuner may pick gives the same bits."""
    dtype = GPU_DTYPES[dtype_name]
    block, x32 = gpu_block("ViT-B-16", frames=8)
    vis, src = block.visible_tokens(2, 8, DEVICE), block.index.source_maps(8, DEVICE)
    full, mlp, sparse_proj = _random_inputs(x32, vis)
    exact = pieces.scatter_residual(full, mlp, x32, sparse_proj, vis, src)
    args = [t.to(dtype) for t in (full, mlp, x32, sparse_proj)]
    out = torch.full_like(args[0], float("nan"))
    kernels.scatter_residual(*args, vis, src, out=out)
    piece_err = report(
        f"scatter_residual piece {dtype_name} vs fp32", max_rel_err(pieces.scatter_residual(*args, vis, src), exact)
    )
    bound = FP32_MAX_REL if dtype == torch.float32 else low_precision_bound(piece_err)
    assert report(f"scatter_residual kernel {dtype_name} vs fp32 piece", max_rel_err(out, exact)) <= bound
    tiles = []
    for tile in TILES:
        tiles.append(torch.full_like(out, float("nan")))
        kernels.scatter_residual(*args, vis, src, out=tiles[-1], tile=tile)
    report(f"scatter_residual kernel {dtype_name}: every tile, max abs difference", max_abs_difference(out, tiles))
    assert all(torch.equal(again, out) for again in tiles)
