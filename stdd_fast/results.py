"""What :class:`stdd_fast.Engine` returns: one result per video, with its timings or its error."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from stdd_fast.errors import StddError


@dataclass(frozen=True)
class Timings:
    """Seconds spent per stage on one video. ``encode`` is its share (by clip count) of the batch it ran in."""

    decode: float = 0.0
    preprocess: float = 0.0
    encode: float = 0.0
    score: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.preprocess + self.encode + self.score

    def to_dict(self) -> dict[str, float]:
        return {
            "decode": self.decode,
            "preprocess": self.preprocess,
            "encode": self.encode,
            "score": self.score,
            "total": self.total,
        }


@dataclass(frozen=True)
class VideoResult:
    """The ranked actions of one video, or why there are none.

    labels / scores: the top-k class names and their view-summed logits, best first.
    logits: float32 [K], all classes (summed over views). view_scores: float32 [V, K], per view.
    indices: LongTensor [V, T], the sampled frame indices (None for tensor inputs).
    error: the typed error that stopped this video (the other fields are then empty).
    decode_backend: ``"pyav"`` for files, ``"tensor"`` for decoded or normalised tensor inputs.
    """

    source: str
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    logits: torch.Tensor | None = None
    view_scores: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    timings: Timings = field(default_factory=Timings)
    error: StddError | None = None
    decode_backend: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        """A JSON-ready summary (no tensors): video, labels, scores, timings, error, decode_backend."""
        return {
            "video": self.source,
            "labels": list(self.labels),
            "scores": [float(s) for s in self.scores],
            "timings": self.timings.to_dict(),
            "error": None if self.error is None else {"type": type(self.error).__name__, "message": str(self.error)},
            "decode_backend": self.decode_backend,
        }
