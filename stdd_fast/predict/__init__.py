"""stdd_fast.predict: the predictor layer, clips in, scores out, whatever runs the model.

* :mod:`~stdd_fast.predict.contract`: the :class:`Predictor` protocol, :class:`Prediction`,
  :class:`BackendChoice`, and the base every backend shares (input checks, memory chunking);
* :mod:`~stdd_fast.predict.config`: :class:`PredictorConfig` (every predictor setting) and
  :class:`ClassSource` (where the classes come from), torch-free;
* :mod:`~stdd_fast.predict.choice` and :mod:`~stdd_fast.predict.cpu_choice`: which backend runs, and why;
* :mod:`~stdd_fast.predict.build`: :func:`build_predictor`;
* backends: :mod:`~stdd_fast.predict.torch_backend` (with :mod:`~stdd_fast.predict.cuda_graphs`),
  :mod:`~stdd_fast.predict.onnx_encoder` (the CPU default, with :mod:`~stdd_fast.predict.encoder_cache`),
  :mod:`~stdd_fast.predict.exported` (``stdd-export`` files: :mod:`~stdd_fast.predict.onnx_runner`,
  :mod:`~stdd_fast.predict.tensorrt`), one session helper :mod:`~stdd_fast.predict.onnx_session`;
* :mod:`~stdd_fast.predict.scoring` (the swappable classifier head) and :mod:`~stdd_fast.predict.batching`
  (clips of several videos in one call).

Names are imported on first use: ``from stdd_fast.predict import PredictorConfig`` loads no torch.
Nothing here imports the rooms above it (export, cli, serve, batch, stream, engine).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "PredictorConfig": "config",
    "ClassSource": "config",
    "Predictor": "contract",
    "Prediction": "contract",
    "BackendChoice": "contract",
    "build_predictor": "build",
    "choose_backend": "choice",
    "TorchPredictor": "torch_backend",
    "OnnxEncoderPredictor": "onnx_encoder",
    "ExportedPredictor": "exported",
    "OnnxRuntimeRunner": "onnx_runner",
    "TensorRTRunner": "tensorrt",
    "open_runner": "exported",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
