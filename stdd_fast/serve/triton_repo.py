"""Triton Inference Server model repository for an exported ONNX file or TensorRT plan.

Layout (https://github.com/triton-inference-server/server docs/user_guide/model_repository.md)::

    DIR/<name>/config.pbtxt
    DIR/<name>/labels.txt          class names, one a line (Triton's classification extension)
    DIR/<name>/<version>/model.onnx (+ model.onnx.data)   or   model.plan

``config.pbtxt`` follows Triton's ModelConfig (model_config.proto): platform
``onnxruntime_onnx`` or ``tensorrt_plan``, ``max_batch_size`` > 0 (dims exclude the batch axis),
the ``frames`` input and ``scores`` / ``embeddings`` outputs, dynamic batching and an instance group.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Literal, get_args

from stdd_fast.checks import check_int
from stdd_fast.errors import ConfigError, choice_error
from stdd_fast.graphs.plan import read_sidecar, sidecar_spec
from stdd_fast.graphs.spec import INPUT_NAME, ExportSpec, read_onnx_spec

InstanceKind = Literal["auto", "gpu", "cpu"]
INSTANCE_KINDS: tuple[str, ...] = get_args(InstanceKind)
_TRITON_DTYPE = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}
_DEFAULT_MAX_BATCH_ONNX = 32
# A model name is one directory of the repository: no separators, no "..", nothing a shell or
# config.pbtxt would read differently.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_model_name(name: object) -> str:
    """A Triton model name that is one plain directory inside the repository (ConfigError otherwise)."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"Triton model name {name!r}: use 1-128 letters, digits, '_', '-' or '.' (not starting with '.' or "
            "'-': no path separators, no '..'), e.g. 'stdd'"
        )
    return name


def check_label_names(classes: tuple[str, ...] | list[str]) -> None:
    """Class names written one per line (labels.txt) must be strings without control characters."""
    for i, name in enumerate(classes):
        if not isinstance(name, str) or _CONTROL.search(name):
            raise ConfigError(
                f"class {i} ({name!r}) contains a newline or control character, which would corrupt labels.txt "
                "and every label after it; rebuild the classifier with plain class names"
            )


def _quoted(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pbtxt_string(text: str, what: str) -> str:
    """``text`` as a protobuf text-format string literal; ConfigError naming ``what`` for control characters."""
    if not isinstance(text, str) or _CONTROL.search(text):
        raise ConfigError(f"{what} {text!r} contains a newline or control character; config.pbtxt cannot hold it")
    return _quoted(text)


def _dims(shape: tuple) -> str:
    return "[ " + ", ".join(str(d) for d in shape[1:]) + " ]"  # without the batch axis


def render_config(
    spec: ExportSpec,
    name: str,
    platform: str,
    max_batch_size: int,
    preferred_batch_sizes: tuple[int, ...] = (),
    max_queue_delay_us: int = 100,
    instance_kind: str = "auto",
    instance_count: int = 1,
    model_filename: str | None = None,
) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ModelConfig) for an export spec."""
    in_dtype = _TRITON_DTYPE["uint8" if spec.uint8_input else spec.precision]
    outs = spec.output_shapes()
    preferred = ""
    if preferred_batch_sizes:
        preferred = f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred_batch_sizes)} ]\n"
    filename = f"default_model_filename: {_quoted(model_filename)}\n" if model_filename else ""
    return (
        f"name: {_quoted(check_model_name(name))}\n"
        f"platform: {_quoted(platform)}\n"
        f"{filename}"
        f"max_batch_size: {max_batch_size}\n"
        "input [\n"
        "  {\n"
        f'    name: "{INPUT_NAME}"\n'
        f"    data_type: {in_dtype}\n"
        f"    dims: {_dims(spec.input_shape())}\n"
        "  }\n"
        "]\n"
        "output [\n"
        "  {\n"
        '    name: "scores"\n'
        "    data_type: TYPE_FP32\n"
        f"    dims: {_dims(outs['scores'])}\n"
        '    label_filename: "labels.txt"\n'
        "  },\n"
        "  {\n"
        '    name: "embeddings"\n'
        "    data_type: TYPE_FP32\n"
        f"    dims: {_dims(outs['embeddings'])}\n"
        "  }\n"
        "]\n"
        "dynamic_batching {\n"
        f"{preferred}"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}\n"
        "instance_group [\n"
        "  {\n"
        f"    count: {instance_count}\n"
        f"    kind: KIND_{instance_kind.upper()}\n"
        "  }\n"
        "]\n"
    )


def exported_spec(model_file: str | Path) -> ExportSpec:
    """The export spec of an ONNX file or a TensorRT plan (its sidecar): classes, frames, image size."""
    model_file = Path(model_file)
    if model_file.suffix == ".onnx":
        return read_onnx_spec(model_file)
    return sidecar_spec(read_sidecar(model_file))


def write_triton_repo(
    repo: str | Path,
    model_file: str | Path,
    name: str = "stdd",
    version: int = 1,
    max_batch_size: int | None = None,
    preferred_batch_sizes: tuple[int, ...] = (),
    max_queue_delay_us: int = 100,
    instance_kind: InstanceKind = "auto",
    instance_count: int = 1,
) -> Path:
    """Write (or update) model ``name`` version ``version`` of a Triton repository; returns the model dir.

    ``model_file``: an ONNX file from ``stdd-export --onnx`` or a plan from ``stdd-export --trt``
    (its sidecar beside it). ``max_batch_size``: default the plan's profile max, or 32 for ONNX;
    for a plan it may not exceed the profile max. ``instance_kind``: ``auto`` = GPU for a plan,
    Triton's KIND_AUTO (GPU if present) for ONNX.
    """
    model_file = Path(model_file)
    if not model_file.is_file():
        raise ConfigError(f"{model_file}: no such file; pass an ONNX file (--onnx-file) or a TensorRT plan (--plan)")
    if instance_kind not in INSTANCE_KINDS:
        raise choice_error("Triton instance kind", instance_kind, INSTANCE_KINDS)
    check_model_name(name)
    check_int("Triton model version", version)
    # values Triton would reject at load time, or read as something else: refused here, where the flag is known
    check_int("instance_count", instance_count, hint="--instance-count: model instances, at least one")
    check_int("max_queue_delay_us", max_queue_delay_us, low=0, hint="--max-queue-delay-us: microseconds")
    check_int("max_batch_size", max_batch_size, optional=True, hint="--max-batch")
    for size in preferred_batch_sizes:
        check_int("preferred batch size", size, hint="--preferred-batch")

    if model_file.suffix == ".onnx":
        spec, platform, target = read_onnx_spec(model_file), "onnxruntime_onnx", "model.onnx"
        limit, default_max = None, _DEFAULT_MAX_BATCH_ONNX
        kind = "auto" if instance_kind == "auto" else instance_kind
    else:
        sidecar = read_sidecar(model_file)
        spec, platform, target = sidecar_spec(sidecar), "tensorrt_plan", "model.plan"
        limit = default_max = int(sidecar["profile"]["max"])
        kind = "gpu" if instance_kind == "auto" else instance_kind
        if kind == "cpu":
            raise ConfigError("a TensorRT plan runs on a GPU only; use instance_kind 'gpu' or 'auto'")
    max_batch = default_max if max_batch_size is None else max_batch_size
    if limit is not None and max_batch > limit:
        raise ConfigError(
            f"max_batch_size={max_batch} exceeds the plan's optimisation profile (max batch {limit}); "
            "rebuild the plan with --max-batch or lower --max-batch here"
        )
    bad = [b for b in preferred_batch_sizes if not 1 <= b <= max_batch]
    if bad:
        raise ConfigError(f"preferred batch sizes {bad} are outside 1..{max_batch}")

    check_label_names(spec.classes)

    root = Path(repo)
    model_dir = root / name
    version_dir = model_dir / str(version)
    for folder in (model_dir, version_dir):  # a link planted in the repository would redirect every write
        if folder.is_symlink():
            raise ConfigError(f"{folder} is a symbolic link; write the repository into a folder without links")
    version_dir.mkdir(parents=True, exist_ok=True)
    if version_dir.resolve().parent.parent != root.resolve():
        raise ConfigError(f"{version_dir} resolves outside the repository {root}; choose another --triton-repo folder")
    shutil.copyfile(model_file, version_dir / target)
    data = model_file.with_name(model_file.name + ".data")
    if platform == "onnxruntime_onnx" and data.is_file():
        # external weights are found by the file name recorded in the graph, beside it
        shutil.copyfile(data, version_dir / data.name)
    if platform == "tensorrt_plan":
        shutil.copyfile(model_file.with_name(model_file.name + ".json"), version_dir / f"{target}.json")
    (model_dir / "labels.txt").write_text("".join(f"{c}\n" for c in spec.classes))
    (model_dir / "config.pbtxt").write_text(
        render_config(
            spec,
            name,
            platform,
            max_batch,
            tuple(preferred_batch_sizes),
            max_queue_delay_us,
            kind,
            instance_count,
        )
    )
    (model_dir / "stdd_export.json").write_text(json.dumps(json.loads(spec.to_json()), indent=2) + "\n")
    return model_dir
