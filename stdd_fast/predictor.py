"""The predictor contract: clips in, class logits and frame embeddings out, whatever runs the model.

Every backend implements it (:class:`~stdd_fast.torch_predictor.TorchPredictor`; ONNX Runtime and
TensorRT in :mod:`stdd_fast.export.predictor`), and everything that scores clips calls one: the
Engine, streams, the benchmark, Ray actors, the Triton server model. Build one from weights with
:func:`stdd_fast.predictor_factory.build_predictor`.

``predictor(clips)``: clips float [B, T, 3, S, S] (CLIP-normalised, any device) ->
``(logits float32 [B, K] or None without a classifier, embeddings float32 [B, T, D])`` on the
predictor's device; ``predictor.predict(clips)`` also names the classes the logits belong to (a
classifier swapped meanwhile does not mix into a call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from stdd_fast.errors import ConfigError


@dataclass(frozen=True)
class Prediction:
    """One call's outputs: logits [B, K] (None without a classifier), embeddings [B, T, D], the K class names."""

    logits: torch.Tensor | None
    embeddings: torch.Tensor
    classes: tuple[str, ...] | None


@runtime_checkable
class Predictor(Protocol):
    """What turns clips into scores. ``num_frames`` None: any T. ``batch_clips``: clips per forward."""

    backend: str
    image_size: int
    num_frames: int | None
    device: torch.device
    dtype: torch.dtype
    batch_clips: int

    @property
    def classes(self) -> tuple[str, ...] | None: ...

    def predict(self, clips: torch.Tensor) -> Prediction: ...

    def __call__(self, clips: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]: ...


def check_clips(clips: object, image_size: int, num_frames: int | None) -> None:
    """ConfigError unless ``clips`` is a float tensor [B >= 1, T, 3, S, S] the predictor takes."""
    if not isinstance(clips, torch.Tensor):
        raise ConfigError(f"clips must be a float tensor [B, T, 3, S, S]; got {type(clips).__name__}")
    s = image_size
    t = "T" if num_frames is None else str(num_frames)
    ok = clips.ndim == 5 and clips.shape[0] >= 1 and tuple(clips.shape[2:]) == (3, s, s)
    if not ok or (num_frames is not None and clips.shape[1] != num_frames) or clips.shape[1] < 1:
        raise ConfigError(
            f"clips must be [B, {t}, 3, {s}, {s}] (CLIP-normalised frames at the model's image size); got "
            f"{tuple(clips.shape)}; video.preprocess(frames, size={s}) makes them from decoded uint8 frames"
        )
    if not clips.is_floating_point():
        raise ConfigError(f"clips must be float (CLIP-normalised); got {clips.dtype}: use video.preprocess first")
