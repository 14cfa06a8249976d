"""Lazy imports of the optional export backends, each failing with one clear line.

``import stdd_fast.export`` imports none of them; each is imported where it is first needed.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from stdd_fast.errors import BackendUnavailableError

# module -> (what it is for, how to get it)
_HOW = {
    "onnx": ("ONNX export", "pip install 'stdd-fast[export]'"),
    "onnxruntime": ("the ONNX Runtime backend", "pip install 'stdd-fast[export]' (or onnxruntime-gpu)"),
    "onnxscript": ("ONNX export", "pip install 'stdd-fast[export]'"),
    "tensorrt": (
        "TensorRT engines",
        "pip install 'stdd-fast[trt]' on a machine with an NVIDIA GPU and driver (TensorRT has no CPU build)",
    ),
}


def require(name: str) -> ModuleType:
    """Import an optional backend module or raise :class:`BackendUnavailableError` naming the fix."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        what, fix = _HOW.get(name, (name, f"pip install {name}"))
        raise BackendUnavailableError(f"{name} is not installed, needed for {what}: {fix} ({e})") from None


def available(name: str) -> bool:
    """Whether ``name`` imports here (without raising)."""
    try:
        require(name)
    except BackendUnavailableError:
        return False
    return True
