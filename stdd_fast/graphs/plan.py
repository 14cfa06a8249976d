"""A TensorRT plan's sidecar: what the plan was built from and for, written by the builder, read by the runtime.

``<plan>.json`` records the export spec (class names, classifier fingerprint, input spec), the
precision, the optimisation profile, the TensorRT version and the GPU the plan was built on, and the
plan's sha256; a runtime refuses a plan whose sidecar names another TensorRT version or GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stdd_fast.errors import BackendUnavailableError, PlanMismatchError
from stdd_fast.graphs.spec import ExportSpec

SIDECAR_FORMAT = "stdd_fast.tensorrt-plan"
SIDECAR_VERSION = 1


def sidecar_path(plan: str | Path) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def gpu_info(device: str | torch.device = "cuda") -> dict:
    """Name and compute capability of a CUDA device, as recorded in sidecars."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT needs a CUDA GPU and none is visible here (torch.cuda.is_available())")
    device = torch.device(device)
    props = torch.cuda.get_device_properties(device.index if device.index is not None else torch.cuda.current_device())
    return {"name": props.name, "compute_capability": [props.major, props.minor]}


def read_sidecar(plan: str | Path) -> dict:
    """The sidecar JSON of a plan; PlanMismatchError if it is missing or not ours."""
    path = sidecar_path(plan)
    if not path.is_file():
        raise PlanMismatchError(
            f"{path}: missing; a plan is only served with the sidecar `stdd-export --trt` writes beside it "
            "(rebuild the plan with stdd-export --trt)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise PlanMismatchError(f"{path}: unreadable sidecar ({e}); rebuild the plan with stdd-export --trt") from None
    if data.get("format") != SIDECAR_FORMAT or data.get("version") != SIDECAR_VERSION:
        raise PlanMismatchError(
            f"{path}: not a stdd_fast plan sidecar (format {data.get('format')!r} v{data.get('version')!r}); "
            "rebuild the plan with stdd-export --trt"
        )
    return data


def sidecar_spec(sidecar: dict) -> ExportSpec:
    """The export spec recorded in a sidecar."""
    return ExportSpec.from_json(json.dumps(sidecar["spec"]), "plan sidecar")


# ``hardware_compatibility="ampere_plus"`` plans run on compute capability 8.0 and newer
_AMPERE = (8, 0)


def check_plan_compatible(sidecar: dict, tensorrt_version: str, gpu: dict, plan: str = "plan") -> None:
    """Raise PlanMismatchError unless a plan's sidecar matches this TensorRT version and GPU.

    TensorRT plans are tied to the exact TensorRT version and (unless built hardware-compatible)
    to the GPU model; deserialising a foreign plan fails or, worse, runs untuned kernels.
    """
    fix = "rebuild it here with `stdd-export --trt --onnx-file model.onnx -o model.plan`"
    built = sidecar.get("tensorrt_version")
    if built != tensorrt_version:
        raise PlanMismatchError(f"{plan} was built with TensorRT {built}, this is TensorRT {tensorrt_version}; {fix}")
    want, have = sidecar.get("gpu", {}), gpu
    cc_have = tuple(have.get("compute_capability", ()))
    if sidecar.get("build", {}).get("hardware_compatibility") == "ampere_plus":
        if cc_have < _AMPERE:
            raise PlanMismatchError(
                f"{plan} is hardware-compatible for Ampere and newer GPUs; {have.get('name')} has compute capability "
                f"{'.'.join(map(str, cc_have))}; {fix}"
            )
        return
    if want.get("name") != have.get("name") or tuple(want.get("compute_capability", ())) != cc_have:
        raise PlanMismatchError(
            f"{plan} was built for {want.get('name')} (compute capability "
            f"{'.'.join(map(str, want.get('compute_capability', [])))}), this GPU is {have.get('name')} "
            f"({'.'.join(map(str, cc_have))}); {fix} (or build with --hardware-compatibility ampere_plus)"
        )
