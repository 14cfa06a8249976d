"""The LayerNorm kernels (``layer_norm``, ``residual_layer_norm``) against their PyTorch pieces.

CPU: Triton's interpreter, fp32. GPU (``-m gpu``): ViT-B/16 rows in fp32, bf16 and fp16 against the
fp32 LayerNorm.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import report
from triton_fixtures import DEVICE, GPU_DTYPES, block_inputs, require_triton

from stdd_fast.numerics import FP32_MAX_REL, low_precision_bound, max_rel_err
from stdd_fast.stca import pieces

require_triton()

import stdd_fast.triton_ops  # noqa: E402, F401  (registers the custom ops)
from stdd_fast import kernels  # noqa: E402

SHAPES = [(3, 17, 64), (5, 48), (2, 7, 100), (1, 1, 768)]
OPCHECK = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")


def _rows(shape, device=DEVICE):
    """x (mean ~1, std ~3), an update, and LayerNorm weight and bias for rows of ``shape``, fp32."""
    d = shape[-1]
    gen = torch.Generator().manual_seed(d)
    x = 3 * torch.randn(shape, generator=gen) + 1
    update = torch.randn(shape, generator=gen)
    weight = 1 + 0.2 * torch.randn(d, generator=gen)
    bias = 0.1 * torch.randn(d, generator=gen)
    return [t.to(device) for t in (x, update, weight, bias)]


@pytest.mark.parametrize("shape", SHAPES)
def test_layer_norm_kernel(shape):
    """LN1: normed rows in x's dtype and fp32 statistics [..., 1], as the piece computes them."""
    x, _, weight, bias = _rows(shape)
    normed, mean, rstd = kernels.layer_norm(x, weight, bias, 1e-5)
    ref_normed, ref_mean, ref_rstd = pieces.layer_norm(x, weight, bias, 1e-5)
    assert mean.shape == rstd.shape == (*shape[:-1], 1) and mean.dtype == rstd.dtype == torch.float32
    err = max(max_rel_err(normed, ref_normed), max_rel_err(mean, ref_mean), max_rel_err(rstd, ref_rstd))
    assert report(f"layer_norm kernel {shape}", err) <= FP32_MAX_REL


@pytest.mark.parametrize("shape", SHAPES)
def test_residual_layer_norm_kernel(shape):
    """LN2: the residual sum F = update + x (stored exactly as the piece rounds it), then LN of F."""
    x, update, weight, bias = _rows(shape)
    full, normed = kernels.residual_layer_norm(update, x, weight, bias, 1e-5)
    ref_full, ref_normed = pieces.residual_layer_norm(update, x, weight, bias, 1e-5)
    assert torch.equal(full, ref_full)
    assert report(f"residual_layer_norm kernel {shape}", max_rel_err(normed, ref_normed)) <= FP32_MAX_REL


def test_custom_ops_pass_opcheck():
    block, x, _, _ = block_inputs(8, 2, 3)
    ln = block.ln_2
    weight, bias = ln.weight.detach(), ln.bias.detach()
    torch.library.opcheck(torch.ops.stdd_fast.layer_norm.default, (x, weight, bias, ln.eps), test_utils=OPCHECK)
    update = torch.randn_like(x)
    torch.library.opcheck(
        torch.ops.stdd_fast.residual_layer_norm.default, (update, x, weight, bias, ln.eps), test_utils=OPCHECK
    )


# -- on a GPU: every dtype at ViT-B/16 shapes (16 frames of 197 tokens, width 768) ------------------------

B16_ROWS = (16, 197, 768)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", GPU_DTYPES)
def test_layer_norm_kernel_in_each_dtype_on_gpu(dtype_name):
    """The kernel in ``dtype`` vs the fp32 LayerNorm, within the bound the piece's own error in ``dtype`` sets."""
    dtype = GPU_DTYPES[dtype_name]
    x32, _, weight, bias = _rows(B16_ROWS)
    exact = F.layer_norm(x32, x32.shape[-1:], weight, bias, 1e-5)
    x, w, b = x32.to(dtype), weight.to(dtype), bias.to(dtype)  # as in a model cast to the dtype
    normed, mean, rstd = kernels.layer_norm(x, w, b, 1e-5)
    ref_normed, ref_mean, ref_rstd = pieces.layer_norm(x, w, b, 1e-5)
    piece_err = report(f"layer_norm piece {dtype_name} vs fp32", max_rel_err(ref_normed, exact))
    bound = FP32_MAX_REL if dtype == torch.float32 else low_precision_bound(piece_err)
    assert report(f"layer_norm kernel {dtype_name} vs fp32", max_rel_err(normed, exact)) <= bound
    # both take fp32 statistics of the same rounded input
    stats_err = max(max_rel_err(mean, ref_mean), max_rel_err(rstd, ref_rstd))
    assert report(f"layer_norm kernel {dtype_name} statistics vs piece", stats_err) <= FP32_MAX_REL


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", GPU_DTYPES)
def test_residual_layer_norm_kernel_in_each_dtype_on_gpu(dtype_name):
    dtype = GPU_DTYPES[dtype_name]
    x32, update32, weight, bias = _rows(B16_ROWS)
    exact = F.layer_norm(update32 + x32, x32.shape[-1:], weight, bias, 1e-5)
    update, x, w, b = (t.to(dtype) for t in (update32, x32, weight, bias))
    full, normed = kernels.residual_layer_norm(update, x, w, b, 1e-5)
    ref_full, ref_normed = pieces.residual_layer_norm(update, x, w, b, 1e-5)
    piece_err = report(f"residual_layer_norm piece {dtype_name} vs fp32", max_rel_err(ref_normed, exact))
    bound = FP32_MAX_REL if dtype == torch.float32 else low_precision_bound(piece_err)
    assert report(f"residual_layer_norm kernel {dtype_name} vs fp32", max_rel_err(normed, exact)) <= bound
    # the sum is rounded once to the dtype, as PyTorch's add rounds it (within one rounding step)
    ulp = 0.0 if dtype == torch.float32 else torch.finfo(dtype).eps
    assert report(f"residual_layer_norm kernel {dtype_name}: the stored sum", max_rel_err(full, ref_full)) <= ulp
