"""The predictor contract for ``stdd-export`` files: an ONNX Runtime session or a TensorRT engine.

The classifier is baked into the exported graph: its class names and scores come from the graph
(``spec``); a classifier given alongside is only checked against it. :func:`open_runner` is the one
entry point to the runners, so a caller switches runtime by one argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, get_args

import torch

from stdd_fast.classifier import Classifier
from stdd_fast.config import get_arch
from stdd_fast.decisions import Decider
from stdd_fast.devices import resolve_device
from stdd_fast.errors import ConfigError, choice_error
from stdd_fast.graphs.spec import ExportSpec
from stdd_fast.predict.config import PredictorConfig
from stdd_fast.predict.contract import Prediction, PredictorBase, check_clips, clips_per_batch

ExportBackend = Literal["onnxruntime", "tensorrt"]
EXPORT_BACKENDS: tuple[str, ...] = get_args(ExportBackend)


class Runner(Protocol):
    """What every exported-model runner offers: ``spec`` and ``(scores [B, K], embeddings [B, T, D])``."""

    spec: ExportSpec

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def open_runner(
    backend: str, path: str | Path, device: str | torch.device = "cpu", session_options: object | None = None
) -> Runner:
    """``"onnxruntime"`` -> :class:`~stdd_fast.predict.onnx_runner.OnnxRuntimeRunner` (an ``.onnx`` file, ``device``
    cpu or cuda), ``"tensorrt"`` -> :class:`~stdd_fast.predict.tensorrt.TensorRTRunner` (a ``.plan`` with its
    sidecar, ``device`` cuda). ``session_options``: an ``onnxruntime.SessionOptions`` (None: the predictors' own).
    """
    if backend == "onnxruntime":
        from stdd_fast.predict.onnx_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, device=device, session_options=session_options)
    if backend == "tensorrt":
        if session_options is not None:
            raise ConfigError("session_options are ONNX Runtime's; the tensorrt backend takes none")
        from stdd_fast.predict.tensorrt import TensorRTRunner

        return TensorRTRunner(path, device=device)
    raise choice_error("export backend", backend, EXPORT_BACKENDS)


class ExportedPredictor(PredictorBase):
    """Clips [B, T, 3, S, S] -> (logits [B, K], embeddings [B, T, D]) with an exported graph (``backend``).

    ``path``: a ``stdd-export`` ONNX file (``"onnxruntime"``) or TensorRT plan (``"tensorrt"``). config:
    the :class:`~stdd_fast.predict.PredictorConfig` (its device; ``batch_clips``, None: by the activation
    budget of the graph's architecture). ``classifier``: checked against the baked-in one by fingerprint.
    ``session_options``: an ``onnxruntime.SessionOptions`` for the ``"onnxruntime"`` backend.
    """

    def __init__(
        self,
        backend: str,
        path: str | Path,
        config: PredictorConfig | None = None,
        *,
        classifier: Classifier | None = None,
        session_options: object | None = None,
        **options,
    ) -> None:
        config = PredictorConfig.of(config, **options)
        self.device = resolve_device(config.device)
        self.runner = open_runner(backend, path, device=self.device, session_options=session_options)
        spec = self.runner.spec
        if spec.uint8_input:
            raise ConfigError(
                f"{path} takes uint8 frames; predictors take CLIP-normalised float clips: re-export without "
                "--uint8-input (a uint8-input graph is for clients that send raw frames, e.g. Triton)"
            )
        if classifier is not None:
            spec.check_classifier(classifier)
        self.calibration = spec.decisions()
        self._decider = None if self.calibration is None else Decider(spec.classes, spec.logit_scale, self.calibration)
        self.backend, self.spec, self.path = backend, spec, Path(path)
        self.dtype = spec.input_dtype
        self.image_size, self.num_frames = spec.image_size, spec.num_frames
        self.impl = spec.impl  # the STCA implementation the graph was traced from
        self.logit_scale = torch.tensor(spec.logit_scale)
        try:
            self.arch = get_arch(spec.arch)
        except ConfigError:  # a custom architecture: the memory estimate uses B/16's shape
            self.arch = get_arch("ViT-B-16")
        self.batch_clips = config.batch_clips or clips_per_batch(
            self.arch, torch.float32, spec.num_frames, config.activation_budget_mb
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.spec.classes)

    @property
    def decider(self) -> Decider | None:
        return self._decider

    def set_classifier(self, classifier: Classifier | None) -> None:
        raise ConfigError(
            f"{self.path} has its classifier baked in; to change the classes, re-export with the new classifier "
            "(stdd-export --onnx --classifier ...) or use the torch backend"
        )

    def predict(self, clips: torch.Tensor) -> Prediction:
        check_clips(clips, self.image_size, self.num_frames)
        outputs = self.in_chunks(self.runner, clips.to(self.device))
        scores = torch.cat([sc for sc, _ in outputs]).float()
        emb = torch.cat([e for _, e in outputs]).float()
        return Prediction(scores, emb, self.classes, self._decider)

    def __repr__(self) -> str:
        return f"ExportedPredictor({self.backend}, {str(self.path)!r}, {len(self.classes)} classes)"
