"""TensorRT engine builder: an exported ONNX file -> serialized plan + sidecar JSON.

Written against the documented ``tensorrt`` Python API (TensorRT 10.x; 11.x where noted) and
imported lazily: without TensorRT every entry point raises BackendUnavailableError.

Precision (``TensorRTBuildConfig.precision``):

* default (None): the graph's own types, built **strongly typed** -- an fp32 graph gives an fp32
  engine (TF32 off), an fp16 graph (``stdd-export --onnx --fp16``: fp16 weights and matmuls,
  float32 LayerNorm statistics, softmax inputs and scoring) an fp16 engine. This is the only
  mode TensorRT 11 keeps, and the recommended one on 10.x.
* ``"tf32"``: an fp32 graph with TF32 matmuls allowed.
* ``"fp16"`` / ``"bf16"`` on an fp32 graph: TensorRT 10.x weak typing (builder flag), with
  LayerNorm, softmax, reductions and the scoring einsum pinned to float32 (ARCHITECTURE §4.6).
  TensorRT 11 removed these flags; there, export an fp16 graph, or convert the fp32 graph with
  NVIDIA ModelOpt AutoCast (``python -m modelopt.onnx.autocast --onnx_path model.onnx
  --low_precision_type bf16``) and build that strongly typed.
* ``"int8"`` / ``"fp8"``: explicit quantization only. TensorRT's implicit INT8 calibrators are
  deprecated since 10.1 and removed in 11; quantize the exported graph with NVIDIA ModelOpt
  (``modelopt.onnx.quantization.quantize(onnx_path="model.onnx", quantize_mode="int8" | "fp8",
  calibration_data=clips, output_path="model.qdq.onnx")`` with ``clips`` a float32 array
  [N, T, 3, S, S] of real CLIP-normalised clips, a few hundred) and build the Q/DQ graph here; the
  builder checks the graph has QuantizeLinear/DequantizeLinear nodes and builds it strongly typed.

The sidecar ``<plan>.json`` records the export spec (class names, classifier fingerprint, input
spec), the precision, the optimisation profile, the TensorRT version and the GPU the plan was
built on (:mod:`stdd_fast.graphs.plan`); :class:`~stdd_fast.predict.tensorrt.TensorRTRunner` refuses a
plan whose sidecar names another TensorRT version or GPU.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from stdd_fast.deps import require
from stdd_fast.errors import ConfigError, ExportError, choice_error
from stdd_fast.graphs.plan import SIDECAR_FORMAT, SIDECAR_VERSION, gpu_info, sidecar_path
from stdd_fast.graphs.spec import INPUT_NAME, read_onnx_spec

log = logging.getLogger("stdd_fast.export")

TrtPrecision = Literal["fp32", "tf32", "fp16", "bf16", "int8", "fp8"]
TRT_PRECISIONS: tuple[str, ...] = get_args(TrtPrecision)
HardwareCompatibility = Literal["none", "ampere_plus"]
HARDWARE_COMPATIBILITY: tuple[str, ...] = get_args(HardwareCompatibility)
_GRAPH_PRECISION = {"float32": "fp32", "float16": "fp16"}
_QUANTIZED = ("int8", "fp8")


@dataclass(frozen=True)
class TensorRTBuildConfig:
    """How to build a plan.

    precision: None = the ONNX graph's own types (strongly typed); see the module docstring.
    min/opt/max_batch: the optimisation profile of the batch axis (TensorRT tunes for opt_batch).
    workspace_gib: the builder's scratch-memory limit. timing_cache: a file read before and
    updated after the build (speeds up rebuilds on the same GPU). optimization_level: 0..5
    (TensorRT's default 3). hardware_compatibility: ``"ampere_plus"`` builds a plan that runs on
    any Ampere-or-newer GPU (somewhat slower); ``"none"`` ties it to this GPU model.
    """

    precision: TrtPrecision | None = None
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_gib: float = 4.0
    timing_cache: str | None = None
    optimization_level: int = 3
    hardware_compatibility: HardwareCompatibility = "none"

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in TRT_PRECISIONS:
            raise choice_error("TensorRT precision", self.precision, TRT_PRECISIONS)
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise choice_error("hardware compatibility", self.hardware_compatibility, HARDWARE_COMPATIBILITY)
        b = (self.min_batch, self.opt_batch, self.max_batch)
        if not all(isinstance(x, int) for x in b) or not 1 <= b[0] <= b[1] <= b[2]:
            raise ConfigError(f"batch profile min/opt/max = {b}: need ints with 1 <= min <= opt <= max, e.g. 1/8/32")
        if not self.workspace_gib > 0:
            raise ConfigError(f"workspace_gib={self.workspace_gib!r}: must be > 0 (e.g. 4)")
        if self.optimization_level not in range(6):
            raise ConfigError(f"optimization_level={self.optimization_level!r}: must be 0..5 (TensorRT default 3)")


def _has_qdq(onnx_path: Path) -> bool:
    onnx = require("onnx")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)


def resolve_precision(requested: str | None, graph_precision: str, has_qdq: bool) -> tuple[str, bool]:
    """(engine precision, strongly typed?) for a requested precision and an ONNX graph's types."""
    native = _GRAPH_PRECISION[graph_precision]
    if requested is None or requested == native:
        return native, True
    if requested in _QUANTIZED:
        if not has_qdq:
            raise ConfigError(
                f"precision {requested!r} needs explicit quantization: quantize the exported graph with NVIDIA "
                f"ModelOpt (modelopt.onnx.quantization.quantize(onnx_path=..., quantize_mode={requested!r}, "
                "calibration_data=<real clips [N,T,3,S,S]>, output_path=...)) and build that file; "
                "TensorRT's implicit INT8 calibration is deprecated"
            )
        return requested, True
    if graph_precision != "float32":
        raise ConfigError(
            f"precision {requested!r} asks to lower an {graph_precision} graph; build it as is (no --precision) "
            "or export float32 (drop --fp16)"
        )
    return requested, requested == "fp32"


def _weak_flag(trt, name: str):
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        raise ConfigError(
            f"TensorRT {trt.__version__} has no BuilderFlag.{name} (TensorRT 11 builds strongly typed only): "
            "export an fp16 graph (stdd-export --onnx --fp16) or convert with ModelOpt AutoCast, and build it "
            "without --precision"
        )
    return flag


def _pin_float32(trt, network) -> int:
    """Keep LayerNorm, softmax, reductions and einsum (scoring) in float32 under weak typing."""
    kinds = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE, trt.LayerType.EINSUM}
    floats = {trt.float32, trt.float16, getattr(trt, "bfloat16", trt.float16)}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in floats:
                    layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def _configure_precision(trt, config, network, precision: str, strongly_typed: bool) -> None:
    if strongly_typed:
        if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # exact fp32 matmuls: the fp32 tolerance row
        return
    if precision == "tf32":
        config.set_flag(_weak_flag(trt, "TF32"))
        return
    config.set_flag(_weak_flag(trt, {"fp16": "FP16", "bf16": "BF16"}[precision]))
    config.set_flag(_weak_flag(trt, "PREFER_PRECISION_CONSTRAINTS"))
    log.info("pinned %d LayerNorm/softmax/reduce/einsum layers to float32", _pin_float32(trt, network))


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    config: TensorRTBuildConfig = TensorRTBuildConfig(),
    device: str | torch.device = "cuda",
) -> Path:
    """Build a TensorRT plan from an ONNX file written by :func:`export_onnx`; returns ``plan_path``.

    The input ``frames`` gets one optimisation profile over the batch axis (min/opt/max from
    ``config``; T and the image size are static). Writes ``plan_path`` and ``<plan_path>.json``.
    Raises BackendUnavailableError without TensorRT or a GPU, ConfigError for an impossible
    precision request, ExportError when TensorRT rejects the graph or the build fails.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    spec = read_onnx_spec(onnx_path)  # before TensorRT: a foreign file fails the same way everywhere
    trt = require("tensorrt")
    gpu = gpu_info(device)
    precision, strongly_typed = resolve_precision(config.precision, spec.precision, _has_qdq(onnx_path))
    device = torch.device(device)

    with torch.cuda.device(device.index if device.index is not None else torch.cuda.current_device()):
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors[0] if errors else '?'}{more}")

        cfg = builder.create_builder_config()
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_gib * 2**30))
        cfg.builder_optimization_level = config.optimization_level
        _configure_precision(trt, cfg, network, precision, strongly_typed)
        if config.hardware_compatibility == "ampere_plus":
            cfg.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        profile = builder.create_optimization_profile()
        profile.set_shape(
            INPUT_NAME,
            spec.input_shape(config.min_batch),
            spec.input_shape(config.opt_batch),
            spec.input_shape(config.max_batch),
        )
        cfg.add_optimization_profile(profile)
        cache_file = Path(config.timing_cache) if config.timing_cache else None
        if cache_file is not None:
            blob = cache_file.read_bytes() if cache_file.is_file() else b""
            cfg.set_timing_cache(cfg.create_timing_cache(blob), ignore_mismatch=False)

        log.info("building TensorRT %s engine (%s) on %s ...", trt.__version__, precision, gpu["name"])
        plan = builder.build_serialized_network(network, cfg)
        if plan is None:
            raise ExportError(
                f"TensorRT failed to build an engine from {onnx_path} (see its log above); try a larger "
                "--workspace-gib or a smaller --max-batch"
            )
        plan_bytes = bytes(plan)
        if cache_file is not None:
            cache_file.write_bytes(bytes(cfg.get_timing_cache().serialize()))

    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(plan_bytes)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "spec": json.loads(spec.to_json()),
        "precision": precision,
        "strongly_typed": strongly_typed,
        "profile": {"min": config.min_batch, "opt": config.opt_batch, "max": config.max_batch},
        "build": {k: v for k, v in dataclasses.asdict(config).items() if k != "timing_cache"},
        "tensorrt_version": trt.__version__,
        "gpu": gpu,
        "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(),
        "onnx_file": onnx_path.name,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    sidecar_path(plan_path).write_text(json.dumps(sidecar, indent=2) + "\n")
    log.info("wrote %s (%.1f MB) and %s", plan_path, len(plan_bytes) / 1e6, sidecar_path(plan_path).name)
    return plan_path
