"""Optional dependencies: one table of what each enables and how to install it, and whether it runs here.

Every optional backend is imported where it is first needed, through :func:`require`, which turns a
missing package into one :class:`BackendUnavailableError` line naming the install command. ``stdd
info`` reports :func:`status` for each: installed or not, and whether it can run on this machine
(Triton and DALI install on a machine without CUDA but need it for their fast paths).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

from stdd_fast.errors import BackendUnavailableError


@dataclass(frozen=True)
class Dependency:
    module: str  # what is imported
    dist: str  # the distribution that carries its version
    purpose: str
    install: str
    needs_cuda: str = ""  # why it needs a CUDA device here, "" when it runs on a CPU


OPTIONAL: dict[str, Dependency] = {
    "triton": Dependency(
        "triton",
        "triton",
        "Triton kernels (impl='triton')",
        "pip install 'stdd-fast[triton]' (CUDA builds of torch bring it)",
        "its kernels run on CUDA GPUs (TRITON_INTERPRET=1 runs them in the interpreter, for tests)",
    ),
    "dali": Dependency(
        "nvidia.dali",
        "nvidia-dali-cuda130",
        "DALI video decoding (decode_backend='dali')",
        "pip install 'stdd-fast[dali]'",
        "NVDEC decoding needs a CUDA GPU (its CPU decoder reads VP8/VP9/MJPEG only)",
    ),
    "onnx": Dependency("onnx", "onnx", "ONNX export", "pip install 'stdd-fast[export]'"),
    "onnxscript": Dependency("onnxscript", "onnxscript", "ONNX export", "pip install 'stdd-fast[export]'"),
    "onnxruntime": Dependency(
        "onnxruntime", "onnxruntime", "the ONNX Runtime backend", "pip install 'stdd-fast[export]' (or onnxruntime-gpu)"
    ),
    "tensorrt": Dependency(
        "tensorrt",
        "tensorrt",
        "TensorRT engines",
        "pip install 'stdd-fast[trt]' on a machine with an NVIDIA GPU and driver (TensorRT has no CPU build)",
        "TensorRT runs on NVIDIA GPUs only",
    ),
    "ray": Dependency("ray", "ray", "corpus jobs on Ray Data (stdd batch)", "pip install 'stdd-fast[ray]'"),
    "pyarrow": Dependency("pyarrow", "pyarrow", "Parquet results (stdd batch)", "pip install 'stdd-fast[ray]'"),
    "pytriton": Dependency(
        "pytriton",
        "nvidia-pytriton",
        "the bundled Triton Inference Server (stdd serve)",
        "pip install 'stdd-fast[serve]'",
    ),
    "tritonclient": Dependency(
        "tritonclient", "tritonclient", "Triton clients (stdd serve tests, load runs)", "pip install 'stdd-fast[serve]'"
    ),
    "openai": Dependency("openai", "openai", "ASKG prompts from a chat endpoint (stdd prompts)", "pip install openai"),
    "httpx": Dependency(
        "httpx", "httpx", "ASKG prompts from a chat endpoint (stdd prompts)", "pip install 'stdd-fast[prompts]'"
    ),
    "pynvml": Dependency("pynvml", "nvidia-ml-py", "GPU telemetry in the benchmark", "pip install 'stdd-fast[gpu]'"),
    "matplotlib": Dependency(
        "matplotlib", "matplotlib", "plots (training, benchmark)", "pip install 'stdd-fast[train]'"
    ),
}


def _entry(name: str) -> Dependency:
    return OPTIONAL.get(name) or Dependency(name, name, name, f"pip install {name}")


def require(name: str) -> ModuleType:
    """Import an optional dependency (by its table name or module name), or raise BackendUnavailableError."""
    dep = OPTIONAL.get(name) or next((d for d in OPTIONAL.values() if d.module == name), None) or _entry(name)
    try:
        return importlib.import_module(dep.module)
    except Exception as e:  # ImportError, or OSError / RuntimeError from a missing native library
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BackendUnavailableError(
            f"{dep.module} is not importable here ({first}); it is needed for {dep.purpose}: {dep.install}"
        ) from None


def available(name: str) -> bool:
    """Whether ``name`` imports here (without raising)."""
    try:
        require(name)
    except BackendUnavailableError:
        return False
    return True


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def status(name: str, cuda: bool) -> dict:
    """``{"installed", "version", "runs_here", "note"}`` of one optional dependency on this machine."""
    dep = _entry(name)
    try:
        module = importlib.import_module(dep.module)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        return {"installed": False, "runs_here": False, "note": f"{type(e).__name__}: {first}; {dep.install}"}
    found = getattr(module, "__version__", None) or version(dep.dist)
    runs = cuda or not dep.needs_cuda
    note = "" if runs else f"installed; needs CUDA here: {dep.needs_cuda}"
    return {"installed": True, "version": str(found or "unknown"), "runs_here": runs, "note": note, "for": dep.purpose}
