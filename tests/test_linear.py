"""The GEMM kernel (``linear``: bias and activation in its epilogue) against its PyTorch piece, and the GEMM policy.

CPU: Triton's interpreter, fp32. GPU (``-m gpu``): ViT-B/16 GEMM shapes in bf16 and fp16 against the
fp32 piece, every launch shape the tuner may pick (the same bits), and the encoder on the Triton
GEMM. Outputs are NaN-poisoned before each launch: an element the kernel does not write fails the test.
"""

import copy
import functools

import pytest
import torch
from helpers import report
from triton_fixtures import (
    DEVICE,
    GPU_DTYPES,
    LOW_PRECISION,
    MODES,
    block_inputs,
    exact_fp32,
    max_abs_difference,
    realistic_,
    require_triton,
)

from stdd_fast import create_model
from stdd_fast.errors import ConfigError
from stdd_fast.numerics import FP32_MAX_REL, cosine_min, low_precision_bound, max_rel_err, min_cosine
from stdd_fast.stca import pieces
from stdd_fast.stca.fused import stca_block_fused
from stdd_fast.stca.reference import stca_block_reference

require_triton()

from stdd_fast import kernels, triton_ops  # noqa: E402
from stdd_fast.kernels.linear import TILES  # noqa: E402

OPCHECK = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
# (x shape, N, bias): ragged M, N and K (K = 45, 33: not a multiple of BLOCK_K), 3-D x, no bias
CASES = [((37, 45), 70, True), ((3, 17, 64), 96, True), ((2, 5, 33), 19, False), ((1, 16), 8, True)]


def _operands(x_shape, n, bias=True, device=DEVICE):
    """x (unit normal, like LayerNorm output), weight [N, K] scaled like a trained layer's, and a bias [N], fp32."""
    k = x_shape[-1]
    x = torch.randn(x_shape, device=device)
    weight = torch.randn(n, k, device=device) / k**0.5
    return x, weight, 0.5 * torch.randn(n, device=device) if bias else None


def _poisoned(x, n):
    return torch.full((*x.shape[:-1], n), float("nan"), device=x.device, dtype=x.dtype)


@pytest.fixture
def triton_gemm():
    """``linear`` runs the Triton GEMM inside the test; the previous choice is restored after it."""
    previous = triton_ops.use_gemm("triton")
    yield
    triton_ops.use_gemm(previous)


@pytest.mark.parametrize("activation", pieces.ACTIVATIONS)
@pytest.mark.parametrize("x_shape, n, bias", CASES)
def test_linear_kernel(x_shape, n, bias, activation):
    x, weight, b = _operands(x_shape, n, bias)
    out = _poisoned(x, n)
    kernels.linear(x, weight, b, activation, out=out)
    err = max_rel_err(out, pieces.linear(x, weight, b, activation))
    assert report(f"linear kernel {x_shape} x [{n}, {x_shape[-1]}] bias={bias} {activation}", err) <= FP32_MAX_REL


def test_every_tile_matches_the_piece():
    """Each launch shape the tuner may pick, on more tile rows than one program group (GROUP_M) and ragged edges."""
    x, weight, bias = _operands((600, 70), 150)
    ref = pieces.linear(x, weight, bias, "silu")
    worst = 0.0
    for tile in TILES[torch.float32]:
        out = _poisoned(x, 150)
        kernels.linear(x, weight, bias, "silu", out=out, tile=tile)
        worst = max(worst, max_rel_err(out, ref))
    assert report("linear kernel, every fp32 tile", worst) <= FP32_MAX_REL


def test_strided_inputs():
    """x with a row stride (a column slice), a transposed weight: the piece's result, in the piece's shape."""
    wide = torch.randn(40, 100, device=DEVICE)
    x = wide[:, 10:60]  # [40, 50], row stride 100
    weight_t = torch.randn(50, 30, device=DEVICE) / 50**0.5
    bias = torch.randn(30, device=DEVICE)
    out = kernels.linear(x, weight_t.t(), bias, "gelu")
    assert out.shape == (40, 30) and out.is_contiguous()
    err = max_rel_err(out, pieces.linear(x, weight_t.t(), bias, "gelu"))
    assert report("linear kernel, strided x and weight", err) <= FP32_MAX_REL


def test_bad_inputs_raise():
    x, weight, bias = _operands((4, 8), 6)
    bad = [
        ((x, weight, bias, "relu"), "activation='relu'"),
        ((x, weight[:, :7], bias, None), r"x \(4, 8\) and weight \(6, 7\)"),
        ((x, weight[0], bias, None), r"weight \(8,\)"),
        ((x, weight, bias[:5], None), r"bias \(5,\)"),
        ((x, weight.double(), bias, None), "weight is torch.float64"),
        ((x, weight, bias.half(), None), "bias is torch.float16"),
        ((x.long(), weight, bias, None), "x is torch.int64"),
    ]
    for args, match in bad:
        with pytest.raises(ValueError, match=match):
            kernels.linear(*args)
    with pytest.raises(ValueError, match=r"out is torch.float32 \(4, 5\)"):
        kernels.linear(x, weight, bias, out=torch.empty(4, 5, device=DEVICE))
    with pytest.raises(ValueError, match="must not share memory"):
        square = torch.randn(8, 8, device=DEVICE)
        kernels.linear(x, square, None, out=x)


def test_custom_op_passes_opcheck():
    x, weight, bias = _operands((2, 9, 24), 40)
    torch.library.opcheck(torch.ops.stdd_fast.linear.default, (x, weight, bias, "silu"), test_utils=OPCHECK)
    torch.library.opcheck(torch.ops.stdd_fast.linear.default, (x, weight, None, None), test_utils=OPCHECK)


@pytest.mark.parametrize("bias", [True, False])
def test_gradients_through_the_custom_op(triton_gemm, bias):
    """Under autograd the drop-in calls the op: its backward recomputes the piece (an optional bias may be None)."""
    x, weight, b = _operands((5, 12), 7, bias)
    leaves = [t.requires_grad_() for t in (x, weight, b) if t is not None]
    grads = {}
    for name, fn in (("piece", pieces.linear), ("op", triton_ops.linear)):
        out = fn(x, weight, b, "gelu")
        grads[name] = torch.autograd.grad(out.square().sum(), leaves)
    worst = max(max_rel_err(g, r) for g, r in zip(grads["op"], grads["piece"], strict=True))
    assert report(f"linear op gradients vs the piece's (bias={bias})", worst) <= FP32_MAX_REL


def test_gemm_choice(monkeypatch):
    """STDD_GEMM and use_gemm: "cublas" (the default) or "triton"; anything else names itself and the valid values."""
    monkeypatch.delenv("STDD_GEMM", raising=False)
    assert triton_ops.gemm_from_environment() == "cublas"
    monkeypatch.setenv("STDD_GEMM", "triton")
    assert triton_ops.gemm_from_environment() == "triton"
    monkeypatch.setenv("STDD_GEMM", "cutlass")
    with pytest.raises(ConfigError, match="unknown STDD_GEMM 'cutlass'; valid values: 'cublas', 'triton'"):
        triton_ops.gemm_from_environment()
    previous = triton_ops.use_gemm("triton")
    try:
        assert triton_ops.use_gemm("cublas") == "triton"
        with pytest.raises(ConfigError, match="'cuBLAS'; valid values: 'cublas', 'triton'"):
            triton_ops.use_gemm("cuBLAS")
        assert triton_ops.use_gemm("cublas") == "cublas"  # a rejected choice changes nothing
    finally:
        triton_ops.use_gemm(previous)


def test_the_drop_in_runs_the_chosen_gemm(monkeypatch):
    """cuBLAS (the piece) by default; the kernel once chosen; the piece again while torch.compile traces."""
    launched = []
    monkeypatch.setattr(kernels, "linear", lambda *args: launched.append(args) or pieces.linear(*args))
    x, weight, bias = _operands((3, 8), 5)
    previous = triton_ops.use_gemm("cublas")
    try:
        with torch.no_grad():
            triton_ops.linear(x, weight, bias, "silu")
            assert not launched
            triton_ops.use_gemm("triton")
            triton_ops.linear(x, weight, bias, "silu")
            assert len(launched) == 1
            monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
            triton_ops.linear(x, weight, bias, "silu")
            assert len(launched) == 1
    finally:
        triton_ops.use_gemm(previous)


@pytest.mark.parametrize("shuffle, training, repeat", [MODES[1], MODES[3]])
def test_triton_block_on_the_triton_gemm(triton_gemm, shuffle, training, repeat):
    """The whole triton-impl STCA block, every matrix product on the kernel, vs the fused path and the reference."""
    block, x, vis, src = block_inputs(8, 2, 3, shuffle, training, repeat)
    with torch.no_grad():
        out = stca_block_fused(block, x, vis, src, triton_ops.TRITON_PIECES)
        fused = stca_block_fused(block, x, vis, src)
        ref = stca_block_reference(block, x, vis, src)
    tag = f"triton block, Triton GEMM ({shuffle}, train={training})"
    assert report(f"{tag} vs fused", max_rel_err(out, fused)) <= FP32_MAX_REL
    assert report(f"{tag} vs reference", max_rel_err(out, ref)) <= FP32_MAX_REL


# -- on a GPU: ViT-B/16's GEMMs (8 frames and 32 x 8 frames of 197 tokens), the encoder ---------------------

B16_ROWS = {"B=1": 8 * 197, "B=32": 32 * 8 * 197}
# name -> (N, K, activation): the block's QKV, out-projection, MLP fc1 (QuickGELU folded to SiLU), fc2
B16_GEMMS = {
    "qkv": (2304, 768, None),
    "out_proj": (768, 768, None),
    "fc1": (3072, 768, "silu"),
    "fc2": (768, 3072, None),
}


@pytest.mark.gpu
@pytest.mark.parametrize("gemm", B16_GEMMS)
@pytest.mark.parametrize("rows", B16_ROWS)
@pytest.mark.parametrize("dtype_name", LOW_PRECISION)
def test_kernel_in_each_dtype_on_gpu(dtype_name, rows, gemm):
    """The kernel in ``dtype`` (a tuned launch) vs the fp32 piece, within the bound the piece's own error sets."""
    dtype = LOW_PRECISION[dtype_name]
    n, k, activation = B16_GEMMS[gemm]
    x32, w32, b32 = _operands((B16_ROWS[rows], k), n)
    with exact_fp32():
        exact = pieces.linear(x32, w32, b32, activation)
    x, w, b = (t.to(dtype) for t in (x32, w32, b32))  # as in a model cast to the dtype
    tag = f"linear {gemm} {rows} {dtype_name}"
    piece_err = report(f"{tag}: piece vs fp32", max_rel_err(pieces.linear(x, w, b, activation), exact))
    out = _poisoned(x, n)
    kernels.linear(x, w, b, activation, out=out)
    assert report(f"{tag}: kernel vs fp32", max_rel_err(out, exact)) <= low_precision_bound(piece_err)


# (M, N, K, activation): B/16's fc1 at 8 frames (M = 1576: a ragged last tile row), and every edge ragged
TILE_SHAPES = [(8 * 197, 3072, 768, "silu"), (997, 300, 333, "gelu")]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", TILE_SHAPES, ids=["b16-fc1", "ragged"])
@pytest.mark.parametrize("dtype_name", GPU_DTYPES)
def test_every_tile_gives_the_same_bits_on_gpu(dtype_name, shape):
    """Every launch shape the tuner may pick writes the same bits (BLOCK_K, so the K order, is fixed per dtype),
    within the table's bound of the fp32 piece."""
    dtype = GPU_DTYPES[dtype_name]
    m, n, k, activation = shape
    x32, w32, b32 = _operands((m, k), n)
    with exact_fp32():
        exact = pieces.linear(x32, w32, b32, activation)
        x, w, b = (t.to(dtype) for t in (x32, w32, b32))
        bound = FP32_MAX_REL
        if dtype != torch.float32:
            bound = low_precision_bound(max_rel_err(pieces.linear(x, w, b, activation), exact))
    outs = []
    for tile in TILES[dtype]:
        outs.append(_poisoned(x, n))
        kernels.linear(x, w, b, activation, out=outs[-1], tile=tile)
    tag = f"linear {m}x{n}x{k} {activation} {dtype_name}"
    assert report(f"{tag}: first tile vs fp32 piece", max_rel_err(outs[0], exact)) <= bound
    assert report(f"{tag}: every tile, max abs difference", max_abs_difference(outs[0], outs[1:])) == 0.0


@functools.cache
def _b16_model():
    return realistic_(create_model("ViT-B-16", seed=1)).to(DEVICE).eval()


def _encode(model, frames, impl):
    model.set_impl(impl)
    torch.manual_seed(0)
    with torch.no_grad():
        return model.encode_video(frames)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", LOW_PRECISION)
def test_triton_encoder_on_the_triton_gemm_on_gpu(triton_gemm, dtype_name):
    """ViT-B/16, 2 clips x 8 frames, impl="triton" with every GEMM on the kernel vs the fp32 reference: within
    the bound the reference's own error in ``dtype`` sets, frame embeddings within the table's cosine."""
    dtype = LOW_PRECISION[dtype_name]
    model = _b16_model()
    frames = torch.randn(2, 8, 3, 224, 224, device=DEVICE)
    with exact_fp32():
        ref = _encode(model, frames, "reference")
    low = copy.deepcopy(model).to(dtype)  # the fp32 model keeps its exact weights
    ref_low = _encode(low, frames.to(dtype), "reference")
    ref_err = report(f"encoder reference {dtype_name} vs fp32", max_rel_err(ref_low, ref))
    out = _encode(low, frames.to(dtype), "triton")
    tag = f"encoder triton + Triton GEMM {dtype_name}"
    assert report(f"{tag} vs fp32 reference", max_rel_err(out, ref)) <= low_precision_bound(ref_err)
    assert report(f"{tag} vs fp32 reference: min cosine", min_cosine(out, ref)) >= cosine_min(dtype)
