"""stdd_fast.export: the exporters (``stdd-export``): ONNX graphs, TensorRT engines, Triton repositories.

Names are imported lazily (PEP 562): ``import stdd_fast.export`` loads none of onnx, onnxruntime or
tensorrt; each is imported where first used and a missing one raises BackendUnavailableError.

    from stdd_fast.export import export_onnx
    from stdd_fast.predict import OnnxRuntimeRunner
    export_onnx(model, classifier, "model.onnx")           # frames -> (scores, embeddings)
    scores, emb = OnnxRuntimeRunner("model.onnx")(frames)

What runs an exported file lives in :mod:`stdd_fast.predict` (runtimes), what every exported graph
is in :mod:`stdd_fast.graphs` (its spec, checks, plan sidecar); their names are also reachable here,
as they were before those rooms existed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "export_onnx": "stdd_fast.export.onnx_export",
    "export_and_verify": "stdd_fast.export.onnx_export",
    "ExportResult": "stdd_fast.export.onnx_export",
    "ExportGraph": "stdd_fast.export.graph",
    "ParityReport": "stdd_fast.export.parity",
    "TensorRTBuildConfig": "stdd_fast.export.tensorrt_build",
    "build_engine": "stdd_fast.export.tensorrt_build",
    "write_triton_repo": "stdd_fast.serve.triton_repo",
    "ExportSpec": "stdd_fast.graphs.spec",
    "read_onnx_spec": "stdd_fast.graphs.spec",
    "classifier_fingerprint": "stdd_fast.graphs.spec",
    "check_graph": "stdd_fast.graphs.checks",
    "GraphReport": "stdd_fast.graphs.checks",
    "TENSORRT_ONNX_OPS": "stdd_fast.graphs.checks",
    "read_sidecar": "stdd_fast.graphs.plan",
    "OnnxRuntimeRunner": "stdd_fast.predict.onnx_runner",
    "TensorRTRunner": "stdd_fast.predict.tensorrt",
    "open_runner": "stdd_fast.predict.exported",
    "Runner": "stdd_fast.predict.exported",
    "ExportError": "stdd_fast.errors",
    "GraphCheckError": "stdd_fast.errors",
    "ParityError": "stdd_fast.errors",
    "PlanMismatchError": "stdd_fast.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
