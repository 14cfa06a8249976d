"""One way to open an ONNX Runtime session, for the encoder graph and for ``stdd-export`` files alike."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from stdd_fast.deps import require
from stdd_fast.errors import BackendUnavailableError, ConfigError


def session_options(threads: int | None = None, optimize: bool = True):
    """Every graph optimisation (``optimize=False``: none, for a graph ONNX Runtime already optimised and saved),
    ``threads`` intra-op threads (None: the cores this process may use), no spinning.

    Idle ONNX Runtime threads must not busy-wait between calls: decoding threads, the torch head and
    other paths share these cores.
    """
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    opts.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    opts.intra_op_num_threads = threads or cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def providers(device: torch.device) -> list:
    """The execution providers for ``device`` (CPU, or CUDA with the CPU for what CUDA lacks)."""
    ort = require("onnxruntime")
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"onnxruntime {ort.__version__} here has no CUDA execution provider (has "
                f"{ort.get_available_providers()}); pip install onnxruntime-gpu, or use device='cpu'"
            )
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    raise ConfigError(f"ONNX Runtime device {str(device)!r}: use 'cpu' or 'cuda[:N]'")


def open_session(path: str | Path, device: torch.device | str = "cpu", options=None):
    """An ``onnxruntime.InferenceSession`` of ``path`` (ConfigError naming the file when it cannot load)."""
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such ONNX file; export one with `stdd-export --onnx`")
    chosen = providers(torch.device(device))
    try:
        return ort.InferenceSession(str(path), options or session_options(), providers=chosen)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise ConfigError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {e})") from None
