"""Optional dependencies: one table of what each enables and how to install it, and whether it runs here.

Every optional backend is imported where it is first needed, through :func:`require`, which turns a
missing package into one :class:`BackendUnavailableError` line naming the install command. ``stdd
info`` reports :func:`status` for each: installed or not, and whether it can run on this machine
(Triton and DALI install on a machine without CUDA but need it for their fast paths).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

from stdd_fast.errors import BackendUnavailableError


def install_command(extra: str) -> str:
    """How to add stdd-fast's optional ``extra`` to this environment, as a command that works here.

    stdd-fast is not on a package registry: from the checkout this package runs from (an editable install),
    with this interpreter's pip (no venv activation needed); else, the same from a checkout.
    """
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        return f"install stdd-fast with its [{extra}] extra (from a checkout: pip install -e '.[{extra}]')"
    return f"{_shown(Path(sys.executable))} -m pip install -e '{_shown(root)}[{extra}]'"


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it (shorter to read and to paste), else absolute."""
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(relative) if relative.parts else "."


@dataclass(frozen=True)
class Dependency:
    module: str  # what is imported
    dist: str  # the distribution that carries its version
    purpose: str
    extra: str  # the stdd-fast extra that installs it ("": none, the distribution itself)
    note: str = ""  # said after the install command
    needs_cuda: str = ""  # why it needs a CUDA device here, "" when it runs on a CPU

    @property
    def install(self) -> str:
        """The command that installs it here (not one of stdd-fast's extras: the distribution itself)."""
        command = (
            install_command(self.extra) if self.extra else f"{_shown(Path(sys.executable))} -m pip install {self.dist}"
        )
        return command + (f" {self.note}" if self.note else "")


OPTIONAL: dict[str, Dependency] = {
    "triton": Dependency(
        "triton",
        "triton",
        "Triton kernels (impl='triton')",
        "triton",
        "(CUDA builds of torch bring it)",
        "its kernels run on CUDA GPUs (TRITON_INTERPRET=1 runs them in the interpreter, for tests)",
    ),
    "dali": Dependency(
        "nvidia.dali",
        "nvidia-dali-cuda130",
        "DALI video decoding (decode_backend='dali')",
        "dali",
        needs_cuda="NVDEC decoding needs a CUDA GPU (its CPU decoder reads VP8/VP9/MJPEG only)",
    ),
    "onnx": Dependency("onnx", "onnx", "ONNX export", "export"),
    "onnxscript": Dependency("onnxscript", "onnxscript", "ONNX export", "export"),
    "onnxruntime": Dependency(
        "onnxruntime", "onnxruntime", "the ONNX Runtime backend", "export", "(or onnxruntime-gpu on a GPU machine)"
    ),
    "tensorrt": Dependency(
        "tensorrt",
        "tensorrt",
        "TensorRT engines",
        "trt",
        "on a machine with an NVIDIA GPU and driver (TensorRT has no CPU build)",
        "TensorRT runs on NVIDIA GPUs only",
    ),
    "ray": Dependency("ray", "ray", "corpus jobs on Ray Data (stdd batch)", "ray"),
    "pyarrow": Dependency("pyarrow", "pyarrow", "Parquet results (stdd batch)", "ray"),
    "pytriton": Dependency("pytriton", "nvidia-pytriton", "the bundled Triton Inference Server (stdd serve)", "serve"),
    "tritonclient": Dependency("tritonclient", "tritonclient", "Triton clients (stdd serve tests, load runs)", "serve"),
    "httpx": Dependency("httpx", "httpx", "ASKG prompts from a chat endpoint (stdd prompts)", "prompts"),
    "pynvml": Dependency("pynvml", "nvidia-ml-py", "GPU telemetry in the benchmark", "gpu"),
    "matplotlib": Dependency("matplotlib", "matplotlib", "plots (training, benchmark)", "train"),
}


def _entry(name: str) -> Dependency:
    """The table's entry for a name or module (``pyarrow.parquet`` is pyarrow's), else one for the name itself."""
    top = name.split(".")[0]
    found = OPTIONAL.get(name) or next((d for d in OPTIONAL.values() if d.module in (name, top)), None)
    return found or Dependency(name, name, name, "")


def require(name: str) -> ModuleType:
    """Import an optional dependency (by its table name or module name), or raise BackendUnavailableError."""
    dep = _entry(name)
    try:
        return importlib.import_module(name if name.startswith(f"{dep.module}.") else dep.module)
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
