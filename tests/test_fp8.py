"""dtype="fp8": the quantisation, the fp8 ``linear`` piece against its dequantised arithmetic and the fp32 piece,
the encoder against the fp32 reference on weights with outlier channels, the public spelling, the bad combinations.

``torch._scaled_mm`` runs on the CPU, so everything but the speed is measured here.
"""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_, report, small_arch
from video_fixtures import write_clip

from stdd_fast import ConfigError, create_model, fp8, save_checkpoint
from stdd_fast.bench.paths import parse_path, unavailable_reason
from stdd_fast.bench.weights import add_outlier_channels_
from stdd_fast.devices import resolve_precision
from stdd_fast.engine import Engine
from stdd_fast.head import score
from stdd_fast.numerics import cosine_min, max_rel_err, min_cosine
from stdd_fast.predict.build import build_predictor
from stdd_fast.predict.torch_backend import TorchPredictor
from stdd_fast.stca import pieces
from stdd_fast.stca.fused import TORCH_PIECES

E4M3_REL = 2.0**-4  # e4m3 keeps 3 mantissa bits: round to nearest is within half an ulp, 2^-4 of the value
E4M3_SUBNORMAL = 2.0**-9  # the smallest subnormal, in units of the scale (448 = the row's amax)


def _dequantized(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return values.float() * scale


# -- quantisation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 16), (7, 48), (33, 64), (5, 1000)])
def test_row_quantisation_round_trip(shape):
    x = torch.randn(shape) * torch.logspace(-3, 2, shape[0])[:, None]  # rows five decades apart
    values, scale = fp8.quantize_rows(x)
    assert values.dtype == fp8.FP8 and values.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == (shape[0], 1)
    assert torch.equal(values.float().abs().amax(-1), torch.full((shape[0],), fp8.FP8_MAX))  # amax lands on 448
    back = _dequantized(values, scale)
    # every element within half an ulp of e4m3 (normals) or half the smallest subnormal step, in its row's scale
    bound = E4M3_REL * x.abs() + 0.5 * E4M3_SUBNORMAL * scale
    report(f"fp8 round trip {shape}: max |err| / bound", ((back - x).abs() / bound).max().item())
    assert ((back - x).abs() <= bound).all()
    assert torch.equal(fp8.quantize_rows(back)[0], values)  # dequantised values are fixed points


def test_zero_rows_stay_zero_and_finite():
    x = torch.randn(4, 32)
    x[1] = 0
    values, scale = fp8.quantize_rows(x)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert torch.equal(values[1].float(), torch.zeros(32))


@pytest.mark.parametrize("exponent", [10, 18])
def test_per_token_scales_do_not_depend_on_the_rest_of_the_batch(exponent):
    """Why per-token activation scales: a token's rounding is its own. One scale per tensor ties it to the batch's
    largest value; e4m3's exponent absorbs tokens 2^10 apart (the two roundings measure alike), but tokens 2^18
    below the largest fall into e4m3's subnormals."""
    x = torch.randn(64, 96)
    x[:2] *= 2.0**exponent  # two tokens far above the rest
    values, scale = fp8.quantize_rows(x)
    alone = fp8.quantize_rows(x[2:])
    assert torch.equal(values[2:].view(torch.uint8), alone[0].view(torch.uint8)) and torch.equal(scale[2:], alone[1])
    per_token = _dequantized(values, scale)
    amax = x.abs().amax()
    per_tensor = (x * (fp8.FP8_MAX / amax)).clamp(-fp8.FP8_MAX, fp8.FP8_MAX).to(fp8.FP8).float() * (amax / fp8.FP8_MAX)
    rest = slice(2, None)
    token_err = report(f"2^{exponent} apart, per-token scales: rel err of the ordinary tokens",
                       max_rel_err(per_token[rest], x[rest]))  # fmt: skip
    tensor_err = report(f"2^{exponent} apart, per-tensor scale: rel err of the ordinary tokens",
                        max_rel_err(per_tensor[rest], x[rest]))  # fmt: skip
    bound = 1.1 * E4M3_REL  # half an e4m3 ulp, plus the subnormal steps of the smallest values
    assert token_err <= bound
    assert tensor_err <= bound if exponent == 10 else tensor_err > 4 * token_err


def test_weight_scales_are_per_output_channel_and_cached():
    weight = torch.randn(48, 32) * torch.logspace(-2, 1, 48)[:, None]
    q = fp8.quantized_weight(weight)
    assert q.values.shape == (48, 32) and q.scale.shape == (1, 48)
    assert torch.allclose(q.scale[0], weight.abs().amax(-1) / fp8.FP8_MAX)
    assert fp8.quantized_weight(weight) is q  # unchanged weight: the cached one
    weight.mul_(2)  # in place: a new version
    assert torch.allclose(fp8.quantized_weight(weight).scale, 2 * q.scale)


def test_gemm_sizes_must_be_multiples_of_16():
    with pytest.raises(ConfigError, match=r"shape \[24, 20\]; fp8 GEMMs need both sizes divisible by 16"):
        fp8.quantize_weight(torch.randn(24, 20))


# -- the linear piece --------------------------------------------------------------------------------------------


def _linear_case(dtype: torch.dtype, bias: bool):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 7, 64, generator=gen)
    x[..., :3] *= 40  # outlier channels, as the benchmark weights plant them
    x[1, 2] = 0  # a zero row
    w = torch.randn(96, 64, generator=gen) / 8
    w[:, :3] /= 40
    b = torch.randn(96, generator=gen) / 10 if bias else None
    cast = lambda t: None if t is None else t.to(dtype)
    return cast(x), cast(w), cast(b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("activation, bias", [(None, True), ("silu", True), ("gelu", True), (None, False)])
def test_linear_is_its_dequantised_arithmetic(dtype, activation, bias):
    """Tight: the fp8 GEMM equals x and W quantised, dequantised and multiplied in fp32, up to the bf16 result."""
    x, w, b = _linear_case(dtype, bias)
    with torch.no_grad():
        got = fp8.linear(x, w, b, activation)
    xq = _dequantized(*fp8.quantize_rows(x.reshape(-1, 64))).view(x.shape)
    wq = fp8.quantize_weight(w)
    wq = wq.values.float() * wq.scale.t()
    expected = pieces.linear(xq, wq, None if b is None else b.float(), activation)
    assert got.dtype == dtype and got.shape == (3, 7, 96)
    err = report(f"fp8 linear vs its dequantised arithmetic ({dtype}, {activation}, bias={bias})",
                 max_rel_err(got, expected))  # fmt: skip
    assert err <= 2 * 2.0**-8  # the product and the bias add each round to bf16 once


@pytest.mark.gpu
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("rows", [1576, 50432], ids=["B=1", "B=32"])
def test_linear_on_gpu_is_its_dequantised_arithmetic(rows, activation):
    """On the card (cuBLASLt's fp8 GEMM, ViT-B/16 fc1 shape, bf16): the same dequantised arithmetic as on the CPU."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(rows, 768, generator=gen)
    x[:, :6] *= 40  # outlier channels
    w = torch.randn(3072, 768, generator=gen) / 768**0.5
    b = torch.randn(3072, generator=gen) / 10
    x, w, b = (t.to("cuda", torch.bfloat16) for t in (x, w, b))
    with torch.no_grad():
        got = fp8.linear(x, w, b, activation)
        xq = _dequantized(*fp8.quantize_rows(x))
        wq = fp8.quantize_weight(w)
        expected = pieces.linear(xq, wq.values.float() * wq.scale.t(), b.float(), activation)
        fp32 = pieces.linear(x.float(), w.float(), b.float(), activation)
    assert got.dtype == torch.bfloat16 and got.is_cuda
    err = report(f"fp8 linear on GPU vs its dequantised arithmetic ({rows} rows, {activation})",
                 max_rel_err(got, expected))  # fmt: skip
    report(f"fp8 linear on GPU vs the fp32 piece ({rows} rows, {activation}): min cosine", min_cosine(got, fp32))
    assert err <= 2 * 2.0**-8  # the product and the bias add each round to bf16 once


@pytest.mark.parametrize("activation", [None, "silu", "gelu"])
def test_linear_against_the_fp32_piece(activation):
    """Loose: e4m3 keeps 3 mantissa bits of every input."""
    x, w, b = _linear_case(torch.float32, True)
    with torch.no_grad():
        got = fp8.linear(x.bfloat16(), w.bfloat16(), b.bfloat16(), activation)
    expected = pieces.linear(x, w, b, activation)
    err = report(f"fp8 linear vs the fp32 piece ({activation}): max rel err", max_rel_err(got, expected))
    cos = report(f"fp8 linear vs the fp32 piece ({activation}): min cosine", min_cosine(got, expected))
    assert err <= 0.1 and cos >= 0.99


def test_the_pieces_swap_only_linear():
    swapped = fp8.fp8_pieces(TORCH_PIECES)
    assert swapped.linear is fp8.linear
    assert swapped._replace(linear=TORCH_PIECES.linear) == TORCH_PIECES


# -- the encoder -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["test-tiny", small_arch(14, width=96, layers=3, heads=4, name="small-14")])
def test_encoder_against_the_fp32_reference_with_outlier_channels(arch):
    model32 = randomize_(create_model(arch), seed=21)
    add_outlier_channels_(model32, channels=6, factor=40.0, seed=2)
    name = model32.arch.name
    size = model32.arch.image_size
    frames = torch.randn(4, 8, 3, size, size)
    classes = F.normalize(torch.randn(400, 8, model32.arch.embed_dim), dim=-1)  # a random prompt-level classifier
    with torch.no_grad():
        reference = model32.set_impl("reference").encode_video(frames)
    ref_top1 = score(reference, classes, model32.logit_scale).argmax(-1)
    cosines = {}
    for dtype in ("bf16", "fp8"):
        _, emb = TorchPredictor(copy.deepcopy(model32), impl="fused", dtype=dtype)(frames)
        cosines[dtype] = report(f"{name} {dtype} fused vs fp32 reference: min cosine", min_cosine(emb, reference))
        top1 = score(emb, classes, model32.logit_scale).argmax(-1)
        report(f"{name} {dtype} fused vs fp32 reference: top-1 agreement", (top1 == ref_top1).float().mean().item())
    assert cosines["fp8"] >= cosine_min("fp8")


# -- the public spelling ------------------------------------------------------------------------------------------


def test_precision_names():
    assert resolve_precision("fp8") == (torch.bfloat16, "fp8")
    assert resolve_precision("bf16") == (torch.bfloat16, None)
    assert resolve_precision(torch.float32) == (torch.float32, None)
    with pytest.raises(ConfigError, match=r"unknown dtype 'float8'; valid values: .*'bf16', 'fp8'"):
        resolve_precision("float8")


@pytest.fixture(scope="module")
def tiny():
    return randomize_(create_model("test-tiny"), seed=4)


def test_engine_and_predictor_run_fp8_end_to_end(tiny):
    classes = ["run", "jump", "swim"]
    engine = Engine(copy.deepcopy(tiny), classes=classes, dtype="fp8")
    assert engine.backend == "torch" and engine.predictor.backend_choice.reason.startswith("auto with dtype='fp8'")
    assert engine.dtype == torch.bfloat16 and engine.linear_format == "fp8" and engine.model.linear_format == "fp8"
    assert all(block.linear_format == "fp8" for block in engine.model.blocks)
    assert "linear_format=fp8" in repr(engine) and "linear_format=fp8" in repr(engine.predictor)
    clips = torch.randn(2, 8, 3, 32, 32)
    result = engine.classify(clips, top_k=3)[0]
    assert result.error is None and len(result.labels) == 3
    exact = Engine(copy.deepcopy(tiny), classes=classes).classify(clips, top_k=3)[0]
    report("Engine fp8 vs fp32: top-1 agrees", float(result.labels[0] == exact.labels[0]))
    # a bf16 predictor on the same model object turns the fp8 linears off again
    assert TorchPredictor(engine.model, dtype="bf16").model.linear_format is None
    assert all(block.linear_format is None for block in engine.model.blocks)


def test_the_command_line_takes_dtype_fp8(tiny, tmp_path, capsys):
    from stdd_fast.cli import main

    ckpt = save_checkpoint(tiny, tmp_path / "tiny.safetensors")
    clip = write_clip(tmp_path / "a.mp4", 40)
    argv = ["classify", str(clip), "--weights", str(ckpt), "--classes", "run,jump", "--device", "cpu"]
    assert main([*argv, "--dtype", "fp8", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["error"] is None and len(row["labels"]) == 2


def test_the_bench_path_syntax():
    path = parse_path("fp8:graph:triton")
    assert (path.name, path.mode, path.impl, path.dtype) == ("fp8:graph:triton", "graph", "triton", "fp8")
    cpu = torch.device("cpu")
    assert unavailable_reason(parse_path("fp8:fused"), cpu, torch.bfloat16) is None
    for name in ("fp8:reference", "fp8:onnxruntime:fused", "fp8:clip"):
        assert "fused and triton paths only" in unavailable_reason(parse_path(name), cpu, torch.float32)


# -- what fp8 does not do -----------------------------------------------------------------------------------------


def test_the_reference_impl_is_refused(tiny):
    with pytest.raises(ConfigError, match="impl='reference' runs open_clip's modules: use impl='fused'"):
        TorchPredictor(copy.deepcopy(tiny), impl="reference", dtype="fp8")
    model = copy.deepcopy(tiny).set_impl("fused").set_linear_format("fp8")
    with pytest.raises(ConfigError, match="impl='reference'"):
        model.set_impl("reference")
    model.blocks[0].impl = "reference"  # one block switched by hand: refused where the block runs
    with torch.no_grad(), pytest.raises(ConfigError, match="impl='reference'"):
        model.encode_video(torch.randn(1, 2, 3, 32, 32))
    with pytest.raises(ConfigError, match="this model has plain CLIP blocks"):
        create_model("test-tiny", stca=None).set_impl("fused").set_linear_format("fp8")
    with pytest.raises(ConfigError, match="unknown linear_format 'int8'"):
        model.set_linear_format("int8")


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_other_backends_are_refused(tiny, backend):
    with pytest.raises(ConfigError, match=f"is a torch option; backend='{backend}' runs a graph: use backend='torch'"):
        build_predictor(copy.deepcopy(tiny), backend=backend, dtype="fp8")
    with pytest.raises(ConfigError, match=f"is a torch option; backend='{backend}' runs a graph: use backend='torch'"):
        Engine("model.onnx" if backend == "onnxruntime" else "model.plan", dtype="fp8")


def test_autograd_is_refused(tiny):
    model = copy.deepcopy(tiny).to(torch.bfloat16).set_impl("fused").set_linear_format("fp8")
    with pytest.raises(ConfigError, match=r"inference only .*torch\.no_grad\(\)"):
        model.encode_video(torch.randn(1, 2, 3, 32, 32, dtype=torch.bfloat16))


def test_cuda_devices_below_sm89_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(ConfigError, match=r"compute capability >= 8.9.*NVIDIA A100 \(cuda:0\) has 8.0"):
        fp8.check_device(torch.device("cuda:0"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    fp8.check_device(torch.device("cuda:0"))
