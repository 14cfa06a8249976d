"""The whole encoder on the Triton kernels against the reference: outputs, torch.compile, gradients, CUDA graphs.

CPU: small grids in Triton's interpreter, fp32. GPU (``-m gpu``): ViT-B/16, the fused and triton paths
in fp32, bf16 and fp16 against the fp32 reference, gradients, torch.compile and CUDA-graph replay.
"""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_, report, small_arch
from triton_fixtures import DEVICE, GPU_DTYPES, exact_fp32, realistic_, require_triton

from stdd_fast import ConfigError, STCAConfig, create_model, score
from stdd_fast.head import score as score_piece
from stdd_fast.numerics import FP32_MAX_REL, cosine_min, low_precision_bound, max_rel_err, min_cosine
from stdd_fast.predict.cuda_graphs import CudaGraphed, resolve_cuda_graphs
from stdd_fast.predict.torch_backend import TorchPredictor

require_triton()


def _encode(model, frames, impl, seed=0):
    model.set_impl(impl)
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.encode_video(frames)


@pytest.mark.parametrize(
    "shuffle, training, grid, B",
    [("none", False, 8, 3), ("seeded", False, 8, 3), ("none", True, 8, 3), ("seeded", False, 16, 1)],
)
def test_triton_encoder_matches_reference(shuffle, training, grid, B):
    """B/16-like grids take the one-tile sparse kernel, the L/14-like grid (16x16) the blocked one."""
    model = randomize_(create_model(small_arch(grid, layers=2), stca=STCAConfig(shuffle=shuffle)), 4).to(DEVICE)
    model.train(training)
    frames = torch.randn(B, 4, 3, 4 * grid, 4 * grid, device=DEVICE)
    out = {impl: _encode(model, frames, impl) for impl in ("reference", "triton")}
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


def _parameter_grads(model, frames, weights, impl, seed=2):
    """name -> gradient of every parameter after one backward of a scoring loss through ``impl``."""
    model.set_impl(impl)
    model.zero_grad()
    torch.manual_seed(seed)
    emb = model.encode_video(frames)
    score(emb, weights, model.logit_scale, impl=impl).logsumexp(-1).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_triton_gradients_match_reference():
    model = randomize_(create_model(small_arch(8, layers=2)), 6).to(DEVICE).train()
    frames = torch.randn(2, 3, 3, 32, 32, device=DEVICE)
    weights = F.normalize(torch.randn(4, 6, 32, device=DEVICE), dim=-1)
    grads = {impl: _parameter_grads(model, frames, weights, impl) for impl in ("reference", "triton")}
    worst = max(max_rel_err(grads["triton"][n], g) for n, g in grads["reference"].items())
    assert report("triton vs reference parameter gradients (worst tensor)", worst) <= FP32_MAX_REL
    assert grads["triton"].keys() == grads["reference"].keys()


def test_cuda_graphs_need_a_cuda_device():
    with pytest.raises(ConfigError, match="CUDA"):
        TorchPredictor(create_model("test-tiny"), cuda_graphs=True, device="cpu")
    with pytest.raises(ConfigError, match="unknown cuda_graphs 'yes'; valid values: True, False, 'auto'"):
        TorchPredictor(create_model("test-tiny"), cuda_graphs="yes", device="cpu")


def test_cuda_graphs_by_default_where_shapes_and_masks_are_fixed():
    """``cuda_graphs="auto"`` (the default): graphs on CUDA, not on the CPU, not under torch.compile, not with the
    official shuffle (new masks every call), and what was asked for when asked."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_cuda_graphs("auto", cuda, False, "none") and resolve_cuda_graphs("auto", cuda, False, None)
    assert resolve_cuda_graphs("auto", cuda, False, "seeded")
    assert not resolve_cuda_graphs("auto", cuda, False, "official")
    assert not resolve_cuda_graphs("auto", cuda, "max-autotune", "none")
    assert not resolve_cuda_graphs("auto", cpu, False, "none")
    assert resolve_cuda_graphs(True, cpu, False, "official") and not resolve_cuda_graphs(False, cuda, False, "none")
    predictor = TorchPredictor(create_model("test-tiny"), device="cpu")
    assert predictor.cuda_graphs is False and not isinstance(predictor._encoder, CudaGraphed)


# -- on a GPU: ViT-B/16 (open_clip-like weights), 2 clips x 8 frames ---------------------------------------------

B16_FRAMES = (2, 8, 3, 224, 224)
# (shuffle, training): low precision is checked in the default mode, fp32 in every mode
FP32_MODES = [("none", False), ("seeded", False), ("official", False), ("none", True)]
ENCODER_CASES = [(shuffle, training, "float32") for shuffle, training in FP32_MODES] + [
    ("none", False, dtype_name) for dtype_name in ("bfloat16", "float16")
]


@functools.cache
def _b16_model(shuffle: str = "none", seed: int = 1):
    """A ViT-B/16 STDD model on CUDA, fp32 (shared by the GPU tests: callers set impl and mode each time)."""
    return realistic_(create_model("ViT-B-16", stca=STCAConfig(shuffle=shuffle), seed=seed)).to(DEVICE)


def _b16_frames(seed: int = 0) -> torch.Tensor:
    return torch.randn(*B16_FRAMES, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def _in_dtype(model, dtype):
    return model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)  # fp32 weights stay exact


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["fused", "triton"])
@pytest.mark.parametrize(
    "shuffle, training, dtype_name",
    ENCODER_CASES,
    ids=[f"{s}-{'train' if t else 'eval'}-{d}" for s, t, d in ENCODER_CASES],
)
def test_encoder_in_each_dtype_on_gpu(impl, shuffle, training, dtype_name):
    """fp32: within FP32_MAX_REL of the reference; bf16/fp16: within the bound the reference's own error in the
    dtype sets. Both: frame embeddings within the table's cosine."""
    dtype = GPU_DTYPES[dtype_name]
    model = _b16_model(shuffle).train(training)
    frames = _b16_frames()
    classes = F.normalize(torch.randn(400, 8, model.arch.embed_dim, device=DEVICE), dim=-1)
    tag = f"encoder {impl} {dtype_name} shuffle={shuffle} train={training}"
    with exact_fp32():
        ref = _encode(model, frames, "reference")
        low = _in_dtype(model, dtype)
        out = _encode(low, frames.to(dtype), impl)
        ref_low = ref if dtype == torch.float32 else _encode(low, frames.to(dtype), "reference")
    bound = FP32_MAX_REL
    if dtype != torch.float32:
        bound = low_precision_bound(report(f"encoder reference {dtype_name} vs fp32", max_rel_err(ref_low, ref)))
    ref_top1 = score_piece(ref, classes, model.logit_scale).argmax(-1)
    top1 = score(out, classes, model.logit_scale.float(), impl=impl).argmax(-1) == ref_top1
    report(f"{tag}: top-1 agreement with the fp32 reference", top1.float().mean().item())
    assert report(f"{tag} vs fp32 reference", max_rel_err(out, ref)) <= bound
    assert report(f"{tag} vs fp32 reference: min cosine", min_cosine(out, ref)) >= cosine_min(dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["fused", "triton"])
def test_gradients_on_gpu(impl):
    """Train mode, fp32: every parameter's gradient through ``impl`` vs through the reference (worst tensor)."""
    model = realistic_(create_model("ViT-B-16", seed=3)).to(DEVICE).train()
    frames = _b16_frames()
    weights = F.normalize(torch.randn(10, 8, model.arch.embed_dim, device=DEVICE), dim=-1)
    with exact_fp32():
        grads = {name: _parameter_grads(model, frames, weights, name, seed=7) for name in ("reference", impl)}
    assert grads[impl].keys() == grads["reference"].keys()
    worst = max(max_rel_err(grads[impl][n], g) for n, g in grads["reference"].items())
    assert report(f"gradients {impl} vs reference (train mode, fp32, worst tensor)", worst) <= FP32_MAX_REL


@pytest.mark.gpu
def test_compiled_triton_encoder_on_gpu():
    model = _b16_model().eval()
    frames = _b16_frames()
    with exact_fp32():
        ref = _encode(model, frames, "reference")
        model.set_impl("triton")
        with torch.no_grad():
            out = torch.compile(model.encode_video)(frames)
    assert report("torch.compile(encode_video) impl=triton fp32 vs reference", max_rel_err(out, ref)) <= FP32_MAX_REL


@pytest.mark.gpu
def test_default_predictor_replays_cuda_graphs_on_gpu():
    """On CUDA the default predictor replays graphs and computes what eager does; the official shuffle runs eagerly."""
    model = _b16_model().eval()
    frames = _b16_frames(2)
    with exact_fp32():
        eager = TorchPredictor(copy.deepcopy(model), impl="triton", device=DEVICE, cuda_graphs=False)
        default = TorchPredictor(copy.deepcopy(model), impl="triton", device=DEVICE)
        assert default.cuda_graphs and isinstance(default._encoder, CudaGraphed)
        expected = eager(frames)[1]
        for _ in range(2):  # capture, then replay
            got = default(frames)[1]
            assert report("default predictor (CUDA graph) vs eager", max_rel_err(got, expected)) <= FP32_MAX_REL
    official = TorchPredictor(copy.deepcopy(_b16_model("official")), impl="triton", device=DEVICE)
    assert not official.cuda_graphs


@pytest.mark.gpu
def test_cuda_graph_replay_equals_eager_on_gpu():
    """TorchPredictor(cuda_graphs=True): the first call of a shape captures, later calls replay on new inputs."""
    model = _b16_model().eval()
    with exact_fp32():
        eager = TorchPredictor(copy.deepcopy(model), impl="triton", device=DEVICE)
        graphed = TorchPredictor(copy.deepcopy(model), impl="triton", device=DEVICE, cuda_graphs=True)
        for seed in (0, 1):  # seed 1: a replay must read the new input, not the captured one
            frames = _b16_frames(seed)
            expected = eager(frames)[1]
            replayed = graphed(frames)[1]
            ref = _encode(model, frames, "reference")
            assert report(f"CUDA graph replay (input {seed}) vs eager", max_rel_err(replayed, expected)) <= FP32_MAX_REL
            assert report(f"CUDA graph replay (input {seed}) vs reference", max_rel_err(replayed, ref)) <= FP32_MAX_REL
