"""The predictor contract for exported models: an ONNX Runtime session or a TensorRT engine.

The classifier is baked into the exported graph: its class names and scores come from the graph
(``spec``); a classifier given alongside is only checked against it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stdd_fast.classifier import Classifier
from stdd_fast.config import get_arch
from stdd_fast.errors import ConfigError
from stdd_fast.export.runners import open_runner
from stdd_fast.predictor import Prediction, check_clips
from stdd_fast.torch_predictor import check_batch_clips, clips_per_batch


class ExportedPredictor:
    """Clips [B, T, 3, S, S] -> (logits [B, K], embeddings [B, T, D]) with an exported graph (``backend``).

    ``path``: a ``stdd-export`` ONNX file (``"onnxruntime"``) or TensorRT plan (``"tensorrt"``).
    ``classifier``: checked against the baked-in one by fingerprint. ``batch_clips``: clips per run
    (None: by the memory budget of the graph's architecture). ``session_options``: an
    ``onnxruntime.SessionOptions`` for the ``"onnxruntime"`` backend (None: its defaults).
    """

    def __init__(
        self,
        backend: str,
        path: str | Path,
        device: torch.device | str = "cpu",
        classifier: Classifier | None = None,
        batch_clips: int | None = None,
        memory_budget_mb: float = 1024.0,
        session_options: object | None = None,
    ) -> None:
        self.runner = open_runner(backend, path, device=device, session_options=session_options)
        spec = self.runner.spec
        if spec.uint8_input:
            raise ConfigError(
                f"{path} takes uint8 frames; predictors take CLIP-normalised float clips: re-export without "
                "--uint8-input (a uint8-input graph is for clients that send raw frames, e.g. Triton)"
            )
        if classifier is not None:
            spec.check_classifier(classifier)
        self.backend, self.spec, self.path = backend, spec, Path(path)
        self.device = torch.device(device)
        self.dtype = spec.input_dtype
        self.image_size, self.num_frames = spec.image_size, spec.num_frames
        self.impl = f"{backend}:{spec.impl}"
        self.logit_scale = torch.tensor(spec.logit_scale)
        try:
            self.arch = get_arch(spec.arch)
        except ConfigError:  # a custom architecture: the memory estimate uses B/16's shape
            self.arch = get_arch("ViT-B-16")
        self.batch_clips = check_batch_clips(batch_clips) or clips_per_batch(
            self.arch, torch.float32, spec.num_frames, memory_budget_mb
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.spec.classes)

    def set_classifier(self, classifier: Classifier | None) -> None:
        raise ConfigError(
            f"{self.path} has its classifier baked in; to change the classes, re-export with the new classifier "
            "(stdd-export --onnx --classifier ...) or use the torch backend"
        )

    def predict(self, clips: torch.Tensor) -> Prediction:
        check_clips(clips, self.image_size, self.num_frames)
        x = clips.to(self.device)
        outputs = [self.runner(x[s : s + self.batch_clips]) for s in range(0, x.shape[0], self.batch_clips)]
        scores = torch.cat([sc for sc, _ in outputs]).float()
        emb = torch.cat([e for _, e in outputs]).float()
        return Prediction(scores, emb, self.classes)

    def __call__(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prediction = self.predict(clips)
        return prediction.logits, prediction.embeddings

    def __repr__(self) -> str:
        return f"ExportedPredictor({self.backend}, {str(self.path)!r}, {len(self.classes)} classes)"
