"""stdd_fast.export: ONNX export, TensorRT engines, runtimes and Triton repositories (``stdd-export``).

Names are imported lazily (PEP 562): ``import stdd_fast.export`` loads none of onnx, onnxruntime or
tensorrt; each is imported where first used and a missing one raises BackendUnavailableError.

    from stdd_fast.export import export_onnx, OnnxRuntimeRunner
    export_onnx(model, classifier, "model.onnx")           # frames -> (scores, embeddings)
    scores, emb = OnnxRuntimeRunner("model.onnx")(frames)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "export_onnx": "onnx_export",
    "export_and_verify": "onnx_export",
    "ExportResult": "onnx_export",
    "ExportGraph": "graph",
    "ExportSpec": "spec",
    "read_onnx_spec": "spec",
    "classifier_fingerprint": "spec",
    "check_graph": "onnx_checks",
    "GraphReport": "onnx_checks",
    "TENSORRT_ONNX_OPS": "onnx_checks",
    "ParityReport": "parity",
    "OnnxRuntimeRunner": "onnxrt",
    "open_runner": "runners",
    "Runner": "runners",
    "TensorRTBuildConfig": "tensorrt_build",
    "build_engine": "tensorrt_build",
    "read_sidecar": "tensorrt_build",
    "TensorRTRunner": "tensorrt_runtime",
    "write_triton_repo": "triton_repo",
    "ExportError": "errors",
    "GraphCheckError": "errors",
    "ParityError": "errors",
    "PlanMismatchError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
