"""The serving layout of a Triton model repository: model ``stdd`` takes video files and returns actions.

    DIR/stdd/config.pbtxt             backend "python"; VIDEO, TOP_K -> LABELS, SCORES; dynamic batching;
                                      parameters = ServingSettings (weights, classifier, sampling, ...)
    DIR/stdd/1/model.py               the Python-backend entry: this environment's site folders on
                                      sys.path, then stdd_fast.serve.model.TritonPythonModel
    DIR/stdd/classifier.safetensors   the classifier, built once: every instance loads the same one
    DIR/stdd/labels.txt               class names, one a line
    DIR/stdd/weights/<file>           the checkpoint or exported graph, when copied (stdd-export --serving)
    DIR/stdd_frames/...               the exported ONNX / TensorRT model (export.triton_repo), unchanged I/O

Why one Python-backend model and not an ensemble: the official sampling, PyAV decoding of any
container and the STDD head are Python; one model keeps one request = its videos with its own
error response, passes no large uint8 frame tensors between ensemble steps, and through the
predictor contract runs the torch model or an exported ONNX / TensorRT file, on CPU or GPU.
``max_batch_size`` counts videos; ``TYPE_STRING`` is Triton's config name of the BYTES type.
"""

from __future__ import annotations

import dataclasses
import shutil
import site
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from stdd_fast.checks import check_int
from stdd_fast.classifier import Classifier
from stdd_fast.errors import CheckpointError, ConfigError, choice_error
from stdd_fast.serve.model import (
    INPUT_TOP_K,
    INPUT_VIDEO,
    OUTPUT_DETECTED,
    OUTPUT_LABELS,
    OUTPUT_SCORES,
    ServingSettings,
)
from stdd_fast.serve.triton_repo import check_label_names, check_model_name, pbtxt_string

SERVING_MODEL = "stdd"
FRAMES_SUFFIX = "_frames"  # the exported model beside it: stdd_frames
CLASSIFIER_FILE = "classifier.safetensors"
ServingInstanceKind = Literal["auto", "cpu", "gpu"]
SERVING_INSTANCE_KINDS: tuple[str, ...] = get_args(ServingInstanceKind)

_MODEL_FILE = '''"""Triton Python-backend model {name!r}: stdd_fast.serve.model (from stdd_fast.serve.repository)."""

import site
import sys

# Triton's Python-backend stub runs an isolated interpreter (PYTHONPATH is ignored): the site
# folders of the environment stdd_fast is installed in go first (.pth files too: editable installs).
SITE_FOLDERS = {folders!r}
_before = list(sys.path)
for _folder in SITE_FOLDERS:
    site.addsitedir(_folder)
sys.path[:] = [p for p in sys.path if p not in _before] + _before

from stdd_fast.serve.model import TritonPythonModel  # noqa: E402
'''


def site_folders() -> list[str]:
    """This environment's site-packages folders (the model file puts them on the stub's sys.path)."""
    folders = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and Path(site.getusersitepackages()).is_dir():
        folders.append(site.getusersitepackages())
    return folders


def render_serving_config(
    name: str,
    settings: ServingSettings,
    max_batch_size: int,
    max_queue_delay_us: int,
    instance_kind: str,
    instance_count: int,
    gpus: Sequence[int] = (),
) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ModelConfig) of the ``stdd`` model."""
    gpu_list = f"\n    gpus: [ {', '.join(str(g) for g in gpus)} ]" if gpus else ""
    parameters = ",\n".join(
        f"  {{\n    key: {pbtxt_string(key, 'parameter')}\n"
        f"    value: {{ string_value: {pbtxt_string(value, f'parameter {key}')} }}\n  }}"
        for key, value in settings.to_parameters().items()
    )
    return (
        f"name: {pbtxt_string(check_model_name(name), 'model name')}\n"
        'backend: "python"\n'
        f"max_batch_size: {max_batch_size}\n"
        "input [\n"
        f'  {{\n    name: "{INPUT_VIDEO}"\n    data_type: TYPE_STRING\n    dims: [ 1 ]\n  }},\n'
        f'  {{\n    name: "{INPUT_TOP_K}"\n    data_type: TYPE_INT32\n    dims: [ 1 ]\n    optional: true\n  }}\n'
        "]\n"
        "output [\n"
        f'  {{\n    name: "{OUTPUT_LABELS}"\n    data_type: TYPE_STRING\n    dims: [ -1 ]\n  }},\n'
        f'  {{\n    name: "{OUTPUT_SCORES}"\n    data_type: TYPE_FP32\n    dims: [ -1 ]\n  }},\n'
        f'  {{\n    name: "{OUTPUT_DETECTED}"\n    data_type: TYPE_STRING\n    dims: [ 1 ]\n  }}\n'
        "]\n"
        "dynamic_batching {\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}\n"
        "instance_group [\n"
        f"  {{\n    count: {instance_count}\n    kind: KIND_{instance_kind.upper()}{gpu_list}\n  }}\n"
        "]\n"
        f"parameters [\n{parameters}\n]\n"
    )


def _model_dir(repo: Path, name: str) -> Path:
    """``repo/name`` and its version folder 1, created; refuses links that would redirect the writes."""
    model_dir = repo / check_model_name(name)
    version_dir = model_dir / "1"
    for folder in (model_dir, version_dir, model_dir / "weights"):
        if folder.is_symlink():
            raise ConfigError(f"{folder} is a symbolic link; write the repository into a folder without links")
    version_dir.mkdir(parents=True, exist_ok=True)
    if version_dir.resolve().parent.parent != repo.resolve():
        raise ConfigError(f"{version_dir} resolves outside the repository {repo}; choose another repository folder")
    return model_dir


def _copy_weights(weights: Path, model_dir: Path) -> str:
    """The weights (and an exported graph's sidecars) copied under model_dir/weights; their relative path."""
    folder = model_dir / "weights"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(weights, folder / weights.name)
    for sidecar in (weights.with_name(weights.name + ".data"), weights.with_name(weights.name + ".json")):
        if sidecar.is_file():  # ONNX external weights / a TensorRT plan's sidecar, found beside it
            shutil.copyfile(sidecar, folder / sidecar.name)
    return f"weights/{weights.name}"


def write_serving_model(
    repo: str | Path,
    settings: ServingSettings,
    classifier: Classifier | None = None,
    *,
    name: str = SERVING_MODEL,
    max_batch_size: int = 8,
    max_queue_delay_us: int = 2000,
    instance_kind: ServingInstanceKind = "auto",
    instance_count: int = 1,
    gpus: Sequence[int] = (),
    copy_weights: bool = False,
    site_dirs: Sequence[str] | None = None,
) -> Path:
    """Write (or replace) the ``stdd`` model of a Triton repository; returns its folder.

    settings: what the model builds (its ``weights`` path is checked and written absolute, or
    copied into the repository with ``copy_weights``). classifier: saved as the artifact every
    instance loads (None: an exported graph's baked-in classes). max_batch_size: videos per
    execution; max_queue_delay_us: how long Triton waits to fill a batch. instance_kind: "cpu",
    "gpu" (``gpus``: which; empty: all) or "auto" (Triton's choice); each instance runs on its
    device. site_dirs: the site folders the model file puts on sys.path (default: this environment's).
    """
    if instance_kind not in SERVING_INSTANCE_KINDS:
        raise choice_error("Triton instance kind", instance_kind, SERVING_INSTANCE_KINDS)
    check_int("max_batch_size", max_batch_size)
    check_int("instance_count", instance_count)
    check_int("max_queue_delay_us", max_queue_delay_us, low=0, hint="microseconds")
    if gpus and instance_kind != "gpu":
        raise ConfigError(f"gpus={list(gpus)} needs instance_kind='gpu'")
    weights = Path(settings.weights)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such file; pass a checkpoint or an exported .onnx / .plan")
    if classifier is None and weights.suffix not in (".onnx", ".plan"):
        raise ConfigError("the stdd model needs a classifier: pass classes, an xprompt/ASKG file or an artifact")
    if classifier is not None:
        classes = list(classifier.classes)
    else:
        from stdd_fast.serve.triton_repo import exported_spec

        classes = list(exported_spec(weights).classes)
    check_label_names(classes)

    root = Path(repo)
    model_dir = _model_dir(root, name)
    weights_entry = _copy_weights(weights, model_dir) if copy_weights else str(weights.resolve())
    settings = dataclasses.replace(settings, weights=weights_entry, classifier=CLASSIFIER_FILE if classifier else "")
    text = render_serving_config(
        name, settings, max_batch_size, max_queue_delay_us, instance_kind, instance_count, tuple(gpus)
    )
    if classifier is not None:
        classifier.save(model_dir / CLASSIFIER_FILE)
    (model_dir / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
    folders = site_folders() if site_dirs is None else [str(Path(d)) for d in site_dirs]
    (model_dir / "1" / "model.py").write_text(_MODEL_FILE.format(name=name, folders=folders))
    (model_dir / "config.pbtxt").write_text(text)
    return model_dir


def frames_model_name(name: str = SERVING_MODEL) -> str:
    """The name of the exported model served beside ``name``: ``stdd_frames``."""
    return check_model_name(name + FRAMES_SUFFIX)
