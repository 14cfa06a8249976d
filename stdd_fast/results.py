"""What :class:`stdd_fast.Engine` returns: one result per video or stream window, with its timings or error."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from stdd_fast.decisions import Detection
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

    labels / scores: the top-k class names and their logits, best first. A logit is
    ``tau · s`` with ``s`` the STDD score of a view (STDD-SPEC §3.4: cosine similarities pooled over
    frames and prompts, tau = exp(logit_scale) of the checkpoint, about 100), summed over the V views
    (the released ensemble): comparable across classes of one video, not a probability.
    probabilities: the same classes' probabilities, the mean over views of each view's softmax.
    logits: float32 [K], all classes (summed over views). view_scores: float32 [V, K], per view.
    indices: LongTensor [V, T], the sampled frame indices (None for tensor inputs).
    error: the typed error that stopped this video (the other fields are then empty).
    decode_backend: which decoder ran: ``"pyav"`` or ``"dali"`` for files, ``"tensor"`` for decoded
    or normalised tensor inputs.
    decode_note: why a file was decoded with PyAV although DALI was asked for or ``"auto"`` would
    have preferred it (DALI missing, no GPU, a codec DALI cannot read, a DALI failure); None otherwise.
    detected: the classes the video shows, best confidence first (zero, one or several
    :class:`~stdd_fast.decisions.Detection`), when the classifier carries decisions (calibrated
    thresholds or background prompts); None otherwise. The ranking above is unchanged by them.
    """

    source: str
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    logits: torch.Tensor | None = None
    view_scores: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    timings: Timings = field(default_factory=Timings)
    error: StddError | None = None
    decode_backend: str | None = None
    decode_note: str | None = None
    detected: list[Detection] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        """A JSON-ready summary (no tensors): video, labels, scores, probabilities, timings, error, decode backend,
        and ``detected`` when the classifier decides."""
        return _with_detected(
            self.detected,
            {
                "video": self.source,
                "labels": list(self.labels),
                "scores": [float(s) for s in self.scores],
                "probabilities": [float(p) for p in self.probabilities],
                "timings": self.timings.to_dict(),
                "error": None
                if self.error is None
                else {"type": type(self.error).__name__, "message": str(self.error)},
                "decode_backend": self.decode_backend,
                "decode_note": self.decode_note,
            },
        )


@dataclass(frozen=True)
class WindowResult:
    """The ranked actions of one sliding window of a stream, or the error that ended the stream.

    source: the stream's name. index: the window's number in its stream (0, 1, ...), -1 for the result that reports
    a stream-ending error. start_frame / end_frame: the first and last source frame the window spans (frames counted
    from the start of the stream, in arrival order). start_time / end_time: their timestamps in seconds (the
    source's clock). frames: LongTensor [T], the source frames sampled. labels / scores: the top-k classes and their
    logits, best first (a window is one view: its logits are that view's, ``tau · s``, not summed like a file's
    three views); probabilities: their softmax probabilities; logits: float32 [K], all classes. latency: seconds
    from the arrival of the window's last frame to this result. dropped: windows of this stream dropped
    (``on_backpressure="drop"``) since its previous result. error: the StreamError that ended the stream (index -1),
    or the NonFiniteError of one window (its index; the stream goes on); the scores are then empty. detected: the
    classes the window shows when the classifier decides (see :class:`VideoResult`), else None; confidences:
    float32 [K], every class's confidence then (what timelines and events segment), else None. skipped: the
    motion gate carried the last scored window's result forward to this still window (:mod:`stdd_fast.stream.gate`).
    """

    source: str
    index: int
    start_frame: int = -1
    end_frame: int = -1
    start_time: float | None = None
    end_time: float | None = None
    frames: torch.Tensor | None = None
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    logits: torch.Tensor | None = None
    latency: float = 0.0
    dropped: int = 0
    error: StddError | None = None
    detected: list[Detection] | None = None
    confidences: torch.Tensor | None = None
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        """A JSON-ready summary (no tensors)."""
        return _with_detected(
            self.detected,
            {
                "source": self.source,
                "window": self.index,
                "start_frame": self.start_frame,
                "end_frame": self.end_frame,
                "start_time": self.start_time,
                "end_time": self.end_time,
                "labels": list(self.labels),
                "scores": [float(s) for s in self.scores],
                "probabilities": [float(p) for p in self.probabilities],
                "latency": self.latency,
                "dropped": self.dropped,
                "error": None
                if self.error is None
                else {"type": type(self.error).__name__, "message": str(self.error)},
                **({"skipped": True} if self.skipped else {}),
            },
        )


def _with_detected(detected: list[Detection] | None, summary: dict) -> dict:
    """``summary`` with its ``detected`` list when there are decisions (without them, the summary as before)."""
    if detected is not None:
        summary["detected"] = [d.to_dict() for d in detected]
    return summary
