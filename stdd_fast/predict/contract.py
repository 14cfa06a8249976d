"""The predictor contract: clips in, class logits and frame embeddings out, whatever runs the model.

Every backend implements it (:class:`~stdd_fast.predict.torch_backend.TorchPredictor`,
:class:`~stdd_fast.predict.onnx_encoder.OnnxEncoderPredictor`,
:class:`~stdd_fast.predict.exported.ExportedPredictor`), and everything that scores clips calls one: the
Engine, streams, the benchmark, Ray actors, the Triton server model. Build one with
:func:`stdd_fast.predict.build_predictor`.

``predictor(clips)``: clips float [B, T, 3, S, S] (CLIP-normalised, any device) ->
``(logits float32 [B, K] or None without a classifier, embeddings float32 [B, T, D])`` on the
predictor's device; ``predictor.predict(clips)`` also names the classes the logits belong to (a
classifier swapped meanwhile does not mix into a call).

What a predictor says about itself, in one vocabulary: ``backend`` (what runs it: ``"torch"``,
``"onnxruntime"``, ``"tensorrt"``), ``impl`` (always one of ``impl=``'s values: the STCA implementation
it runs or traced), ``linear_format`` (None: the linear layers in the model's dtype; ``"fp8"``;
``"int8"``), ``backend_choice`` (the :class:`BackendChoice` record: what was chosen and why, with the
times measured), ``setup_note`` (one-time work done when it was built, e.g. a graph built or found), ``decider`` (the
current classifier's decisions, None when it makes none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from stdd_fast.checks import check_number
from stdd_fast.config import ArchConfig
from stdd_fast.decisions import Decider
from stdd_fast.errors import ConfigError


@dataclass(frozen=True)
class Prediction:
    """One call's outputs: logits [B, K] (None without a classifier), embeddings [B, T, D], the K class names,
    and the decisions of the classifier the call scored with (:mod:`stdd_fast.decisions`; None: none)."""

    logits: torch.Tensor | None
    embeddings: torch.Tensor
    classes: tuple[str, ...] | None
    decider: Decider | None = None


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs a predictor and why: ``reason`` is one line a user can act on.

    measured_ms: per candidate backend, milliseconds per clip where the choice was measured (the CPU
    default); measured: when (``"now"`` or the record's date); record: the file that keeps it; seconds:
    what measuring cost here (0 when read from the record).
    """

    backend: str
    reason: str
    measured_ms: Mapping[str, float] = field(default_factory=dict)
    measured: str | None = None
    record: str | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        return self.reason


@runtime_checkable
class Predictor(Protocol):
    """What turns clips into scores. ``num_frames`` None: any T. ``batch_clips``: clips per forward."""

    backend: str
    impl: str
    linear_format: str | None
    backend_choice: BackendChoice
    setup_note: str | None
    arch: ArchConfig
    image_size: int
    num_frames: int | None
    device: torch.device
    dtype: torch.dtype
    batch_clips: int

    @property
    def classes(self) -> tuple[str, ...] | None: ...

    @property
    def decider(self) -> Decider | None:
        """The current classifier's decisions (:mod:`stdd_fast.decisions`); None when it makes none."""
        ...

    def predict(self, clips: torch.Tensor) -> Prediction: ...

    def __call__(self, clips: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]: ...

    def set_classifier(self, classifier) -> None: ...


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


def clips_per_batch(arch: ArchConfig, dtype: torch.dtype, num_frames: int, budget_mb: float) -> int:
    """How many clips of ``num_frames`` frames one forward may take within ``budget_mb`` MiB of activations."""
    check_number("activation_budget_mb", budget_mb, unit="MiB")
    tokens, width, heads = arch.tokens_per_frame, arch.vision_width, arch.vision_heads
    # Peak activations of one block per frame: ~12 token-width buffers (residual, QKV, the STCA
    # paths, the 4x MLP hidden) and two attention-probability maps.
    per_frame = tokens * (12 * width + 2 * heads * tokens) * dtype.itemsize
    return max(1, math.floor(budget_mb * 2**20 / (per_frame * num_frames)))


class PredictorBase:
    """What every predictor shares: the self-description defaults, ``__call__``, and running in chunks."""

    linear_format: str | None = None
    setup_note: str | None = None
    batch_clips: int

    @property
    def backend_choice(self) -> BackendChoice:
        built = BackendChoice(self.backend, f"backend={self.backend!r}: built directly")
        return getattr(self, "_choice", None) or built

    @backend_choice.setter
    def backend_choice(self, choice: BackendChoice) -> None:
        self._choice = choice

    def in_chunks(self, run: Callable[[torch.Tensor], object], x: torch.Tensor) -> list:
        """``run`` on ``batch_clips`` clips of ``x`` at a time: one result per chunk, in order."""
        return [run(x[s : s + self.batch_clips]) for s in range(0, x.shape[0], self.batch_clips)]

    def __call__(self, clips: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        prediction = self.predict(clips)
        return prediction.logits, prediction.embeddings
