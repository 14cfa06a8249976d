"""One entry point for the exported backends, so a caller switches backend by one argument."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, get_args

import torch

from stdd_fast.errors import ConfigError, choice_error
from stdd_fast.export.spec import ExportSpec

ExportBackend = Literal["onnxruntime", "tensorrt"]
EXPORT_BACKENDS: tuple[str, ...] = get_args(ExportBackend)


class Runner(Protocol):
    """What every exported-model runner offers: ``spec`` and ``(scores [B, K], embeddings [B, T, D])``."""

    spec: ExportSpec

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def open_runner(
    backend: str, path: str | Path, device: str | torch.device = "cpu", session_options: object | None = None
) -> Runner:
    """``"onnxruntime"`` -> :class:`OnnxRuntimeRunner` (an ``.onnx`` file, ``device`` cpu or cuda),
    ``"tensorrt"`` -> :class:`TensorRTRunner` (a ``.plan`` with its sidecar, ``device`` cuda).

    ``session_options``: an ``onnxruntime.SessionOptions`` for the ONNX Runtime session (None: its defaults).
    """
    if backend == "onnxruntime":
        from stdd_fast.export.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, device=device, session_options=session_options)
    if backend == "tensorrt":
        if session_options is not None:
            raise ConfigError("session_options are ONNX Runtime's; the tensorrt backend takes none")
        from stdd_fast.export.tensorrt_runtime import TensorRTRunner

        return TensorRTRunner(path, device=device)
    raise choice_error("export backend", backend, EXPORT_BACKENDS)
