"""TensorRT builder and runtime.

TensorRT cannot be installed on the development and CI machines (ARCHITECTURE §5), so the tests
that build and run real engines skip here with that reason. What does not need TensorRT runs
everywhere: the missing-backend error, precision resolution, the plan/sidecar compatibility
check, config validation, and the builder's calls against a recording stand-in of the documented
``tensorrt`` API (flags, profile, workspace, timing cache, sidecar).
"""

import contextlib
import json
import sys
import types

import pytest
import torch
from test_export_onnx import report_cos
from test_triton_repo import fake_onnx, make_spec

from stdd_fast import BackendUnavailableError, ConfigError
from stdd_fast.deps import available
from stdd_fast.errors import ExportError
from stdd_fast.export import PlanMismatchError, TensorRTBuildConfig, build_engine
from stdd_fast.export.tensorrt_build import resolve_precision
from stdd_fast.graphs.plan import check_plan_compatible, read_sidecar, sidecar_path
from stdd_fast.numerics import cosine_min, min_cosine
from stdd_fast.predict.tensorrt import TensorRTRunner

HAS_TRT = available("tensorrt")
needs_trt = pytest.mark.skipif(
    not (HAS_TRT and torch.cuda.is_available()),
    reason="TensorRT is not installed (it cannot be installed on the dev/CI machines, ARCHITECTURE §5) "
    "or no CUDA GPU is visible",
)
H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]}


# -- without TensorRT ------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_one_clear_error(tmp_path):
    onnx_file = fake_onnx(tmp_path / "m.onnx", make_spec())
    with pytest.raises(BackendUnavailableError, match=r"tensorrt is not importable here.*\[trt\]") as e:
        build_engine(onnx_file, tmp_path / "m.plan")
    assert "\n" not in str(e.value)


def test_precision_resolution():
    assert resolve_precision(None, "float32", False) == ("fp32", True)
    assert resolve_precision(None, "float16", False) == ("fp16", True)
    assert resolve_precision("fp16", "float32", False) == ("fp16", False)  # weak typing, TensorRT 10
    assert resolve_precision("tf32", "float32", False) == ("tf32", False)
    assert resolve_precision("int8", "float32", True) == ("int8", True)  # explicit Q/DQ, strongly typed
    with pytest.raises(ConfigError, match="ModelOpt"):
        resolve_precision("fp8", "float32", False)
    with pytest.raises(ConfigError, match="float16 graph"):
        resolve_precision("bf16", "float16", False)


def test_build_config_validation():
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        TensorRTBuildConfig(min_batch=4, opt_batch=2)
    with pytest.raises(ConfigError, match="valid values"):
        TensorRTBuildConfig(precision="fp4")
    with pytest.raises(ConfigError, match=r"0\.\.5"):
        TensorRTBuildConfig(optimization_level=9)


def test_plan_compatibility_check():
    sidecar = {"tensorrt_version": "10.15.1", "gpu": H100, "build": {"hardware_compatibility": "none"}}
    check_plan_compatible(sidecar, "10.15.1", dict(H100))
    with pytest.raises(PlanMismatchError, match=r"TensorRT 10\.9\.0, this is TensorRT 10\.15\.1.*rebuild"):
        check_plan_compatible({**sidecar, "tensorrt_version": "10.9.0"}, "10.15.1", H100)
    l4 = {"name": "NVIDIA L4", "compute_capability": [8, 9]}
    with pytest.raises(PlanMismatchError, match=r"built for NVIDIA H100.*this GPU is NVIDIA L4"):
        check_plan_compatible(sidecar, "10.15.1", l4)
    portable = {**sidecar, "build": {"hardware_compatibility": "ampere_plus"}}
    check_plan_compatible(portable, "10.15.1", l4)
    with pytest.raises(PlanMismatchError, match="Ampere and newer"):
        check_plan_compatible(portable, "10.15.1", {"name": "Tesla T4", "compute_capability": [7, 5]})


def test_sidecar_errors(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    with pytest.raises(PlanMismatchError, match="missing"):
        read_sidecar(plan)
    sidecar_path(plan).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(PlanMismatchError, match="not a stdd_fast plan sidecar"):
        read_sidecar(plan)
    with pytest.raises(PlanMismatchError, match="no such plan"):
        TensorRTRunner(tmp_path / "missing.plan")


# -- the builder's calls, against a recording stand-in of the tensorrt API --------------------------


def _fake_tensorrt(weak_typing: bool = True, parse_ok: bool = True) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.15.1"
    trt.float32, trt.float16, trt.bfloat16, trt.int64 = "float32", "float16", "bfloat16", "int64"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    flags = ["TF32", "PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS"]
    if weak_typing:
        flags += ["FP16", "BF16"]
    trt.BuilderFlag = types.SimpleNamespace(**{f: f for f in flags})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.HardwareCompatibilityLevel = types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS")
    trt.LayerType = types.SimpleNamespace(
        NORMALIZATION="norm", SOFTMAX="softmax", REDUCE="reduce", EINSUM="einsum", MATRIX_MULTIPLY="mm"
    )
    trt.record = record = {"flags": set(), "cleared": set(), "profiles": [], "layers": []}

    class Tensor:
        def __init__(self, dtype):
            self.dtype = dtype

    class Layer:
        def __init__(self, kind, out_dtype="float32"):
            self.type, self.precision, self.num_outputs, self.outputs = kind, None, 1, [Tensor(out_dtype)]
            self.output_types = {}

        def get_output(self, i):
            return self.outputs[i]

        def set_output_type(self, i, dtype):
            self.output_types[i] = dtype

    class Network:
        def __init__(self, flags):
            record["network_flags"] = flags
            self.layers = [Layer(k) for k in ("norm", "mm", "softmax", "reduce", "einsum")] + [Layer("reduce", "int64")]
            record["layers"] = self.layers
            self.num_layers = len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path):
            record["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Foo): unsupported"

    class Cache:
        def __init__(self, blob):
            self.blob = blob

        def serialize(self):
            return b"CACHE:" + self.blob

    class Config:
        def set_memory_pool_limit(self, pool, size):
            record["workspace"] = (pool, size)

        def set_flag(self, flag):
            record["flags"].add(flag)

        def clear_flag(self, flag):
            record["cleared"].add(flag)

        def add_optimization_profile(self, profile):
            record["profiles"].append(profile.shapes)

        def create_timing_cache(self, blob):
            return Cache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

        def __setattr__(self, name, value):
            record[name] = value
            object.__setattr__(self, name, value)

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        create_network = staticmethod(Network)
        create_builder_config = staticmethod(Config)
        create_optimization_profile = staticmethod(Profile)

        def build_serialized_network(self, network, config):
            return b"PLAN"

    trt.Builder, trt.OnnxParser = Builder, Parser
    return trt


@pytest.fixture
def fake_trt(monkeypatch):
    def install(**kw):
        trt = _fake_tensorrt(**kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr("stdd_fast.export.tensorrt_build.gpu_info", lambda device: dict(H100))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
        return trt

    return install


def test_builder_calls_strongly_typed_fp32(fake_trt, tmp_path):
    trt = fake_trt()
    onnx_file = fake_onnx(tmp_path / "m.onnx", make_spec())
    cache = tmp_path / "timing.cache"
    cfg = TensorRTBuildConfig(min_batch=1, opt_batch=4, max_batch=16, workspace_gib=2, timing_cache=str(cache))
    plan = build_engine(onnx_file, tmp_path / "m.plan", cfg)
    r = trt.record
    assert plan.read_bytes() == b"PLAN" and r["parsed"] == str(onnx_file)
    assert r["network_flags"] == 1 << 0  # STRONGLY_TYPED
    assert r["cleared"] == {"TF32"} and not r["flags"]
    assert r["profiles"] == [("frames", (1, 8, 3, 32, 32), (4, 8, 3, 32, 32), (16, 8, 3, 32, 32))]
    assert r["workspace"] == ("WORKSPACE", 2 * 2**30) and r["builder_optimization_level"] == 3
    assert cache.read_bytes() == b"CACHE:"
    sidecar = read_sidecar(plan)
    assert sidecar["tensorrt_version"] == "10.15.1" and sidecar["gpu"] == H100
    assert sidecar["precision"] == "fp32" and sidecar["strongly_typed"] is True
    assert sidecar["profile"] == {"min": 1, "opt": 4, "max": 16}
    assert sidecar["spec"]["classes"] == list(make_spec().classes)
    assert len(sidecar["plan_sha256"]) == 64


def test_builder_calls_weakly_typed_fp16_pins_float32_layers(fake_trt, tmp_path):
    trt = fake_trt()
    onnx_file = fake_onnx(tmp_path / "m.onnx", make_spec())
    cfg = TensorRTBuildConfig(precision="fp16", hardware_compatibility="ampere_plus")
    build_engine(onnx_file, tmp_path / "m.plan", cfg)
    r = trt.record
    assert r["network_flags"] == 0 and r["flags"] == {"FP16", "PREFER_PRECISION_CONSTRAINTS"}
    assert r["hardware_compatibility_level"] == "AMPERE_PLUS"
    pinned = {layer.type for layer in r["layers"] if layer.precision == "float32"}
    assert pinned == {"norm", "softmax", "reduce", "einsum"}
    assert r["layers"][-1].output_types == {}  # integer outputs keep their type
    assert read_sidecar(tmp_path / "m.plan")["precision"] == "fp16"


def test_builder_without_weak_typing_says_how(fake_trt, tmp_path):
    fake_trt(weak_typing=False)  # TensorRT 11: no precision flags
    onnx_file = fake_onnx(tmp_path / "m.onnx", make_spec())
    with pytest.raises(ConfigError, match=r"strongly typed only.*--fp16"):
        build_engine(onnx_file, tmp_path / "m.plan", TensorRTBuildConfig(precision="fp16"))
    fake_trt(weak_typing=False, parse_ok=False)
    with pytest.raises(ExportError, match=r"parser rejected.*unsupported"):
        build_engine(onnx_file, tmp_path / "m.plan")
    assert not (tmp_path / "m.plan").exists()


# -- with TensorRT (GPU machines with TensorRT installed) -----------------------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from test_export_onnx import random_classifier, tiny_model

    from stdd_fast.export import export_onnx

    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    return export_onnx(tiny_model(), random_classifier(7, 32), path)


@needs_trt
@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "dtype"), [(None, torch.float32), ("fp16", torch.float16)])
def test_engine_matches_onnxruntime(tiny_onnx, tmp_path, precision, dtype):
    from stdd_fast.export import OnnxRuntimeRunner

    plan = build_engine(tiny_onnx, tmp_path / "tiny.plan", TensorRTBuildConfig(precision=precision, max_batch=4))
    runner = TensorRTRunner(plan)
    frames = torch.randn(6, 8, 3, 32, 32)  # above max batch: runs in chunks
    scores, emb = runner(frames)
    ref_scores, ref_emb = OnnxRuntimeRunner(tiny_onnx)(frames)
    cos = report_cos(f"TensorRT {precision or 'fp32'} vs ORT embeddings", min_cosine(emb.cpu(), ref_emb))
    assert cos >= cosine_min(dtype)
    assert min_cosine(scores.cpu(), ref_scores) >= cosine_min(dtype)


@needs_trt
@pytest.mark.gpu
def test_foreign_plan_is_refused(tiny_onnx, tmp_path):
    plan = build_engine(tiny_onnx, tmp_path / "tiny.plan")
    side = sidecar_path(plan)
    data = json.loads(side.read_text())
    side.write_text(json.dumps({**data, "tensorrt_version": "0.0.1"}))
    with pytest.raises(PlanMismatchError, match=r"TensorRT 0\.0\.1"):
        TensorRTRunner(plan)
    side.write_text(json.dumps({**data, "gpu": {"name": "Other GPU", "compute_capability": [1, 0]}}))
    with pytest.raises(PlanMismatchError, match="Other GPU"):
        TensorRTRunner(plan)
