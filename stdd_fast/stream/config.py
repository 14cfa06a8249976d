"""How streams are cut into windows and scheduled: spans in frames or seconds, and the stream options."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from stdd_fast.checks import check_int, check_number
from stdd_fast.choices import BACKPRESSURE, Backpressure
from stdd_fast.errors import ConfigError, choice_error
from stdd_fast.stream.gate import DEFAULT_MOTION_GATE


@dataclass(frozen=True)
class Span:
    """A length in source frames or in seconds."""

    value: float
    unit: Literal["frames", "seconds"]

    def frames(self, fps: float | None) -> int:
        """The length in frames (seconds are converted with ``fps`` and rounded; at least 1)."""
        if self.unit == "frames":
            return int(self.value)
        if fps is None:
            raise ConfigError("a span in seconds needs the stream's frame rate; pass fps=")
        return max(1, round(self.value * fps))

    def __str__(self) -> str:
        return f"{int(self.value)}" if self.unit == "frames" else f"{self.value:g}s"


def parse_span(value: int | str | Span, what: str) -> Span:
    """``16`` or ``"16"`` (frames), ``"0.5s"`` (seconds) -> Span. Floats are refused as ambiguous."""
    if isinstance(value, Span):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{what}={value!r}: must be >= 1 frame")
        return Span(value, "frames")
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            if text.endswith("s"):
                seconds = float(text[:-1])
                if not (math.isfinite(seconds) and seconds > 0):
                    raise ValueError
                return Span(seconds, "seconds")
            return parse_span(int(text.removesuffix("f")), what)
        except ValueError:
            pass
    raise ConfigError(f"{what}={value!r}: give frames as an int (16) or seconds as a string ('0.5s')")


@dataclass(frozen=True)
class StreamConfig:
    """How streams are cut into windows and scheduled (see :mod:`stdd_fast.stream`).

    window: span of a window (None: the model's sampling). stride: frames or seconds between window
    starts. top_k: labels per result. on_backpressure: "block" or "drop". max_pending: windows
    waiting for the model, all streams together. max_retries: reopenings in a row without a new frame
    before a stream ends with its error. stall_timeout: seconds without a frame that count as a
    failure. retry_delay: seconds before reopening. fps: the source frame rate (None: from the
    source). max_delay: seconds the model waits to fill a batch. realtime: pace sources by their
    timestamps (a file plays as a live stream would). source_format / source_options: PyAV's
    ``av.open`` ``format=`` and ``options=`` (e.g. "v4l2", {"rtsp_transport": "tcp"}). motion_gate: the mean
    absolute difference of normalised clips below which a window carries the last scored window's result
    instead of running the model (:mod:`stdd_fast.stream.gate`; None: score every window).
    """

    window: Span | None = None
    stride: Span = Span(16, "frames")
    top_k: int = 5
    on_backpressure: Backpressure = "block"
    max_pending: int = 8
    max_retries: int = 3
    stall_timeout: float = 10.0
    retry_delay: float = 0.5
    fps: float | None = None
    max_delay: float = 0.0
    realtime: bool = False
    motion_gate: float | None = DEFAULT_MOTION_GATE
    source_format: str | None = None
    source_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.window is not None and not isinstance(self.window, Span):
            object.__setattr__(self, "window", parse_span(self.window, "window"))
        if not isinstance(self.stride, Span):
            object.__setattr__(self, "stride", parse_span(self.stride, "stride"))
        object.__setattr__(self, "source_options", dict(self.source_options or {}))
        if self.on_backpressure not in BACKPRESSURE:
            raise choice_error("on_backpressure policy", self.on_backpressure, BACKPRESSURE)
        for name, low in (("top_k", 1), ("max_pending", 1), ("max_retries", 0)):
            check_int(name, getattr(self, name), low=low)
        for name in ("retry_delay", "max_delay"):
            check_number(name, getattr(self, name), strict=False, unit="seconds")
        check_number("stall_timeout", self.stall_timeout, unit="seconds")
        check_number("fps", self.fps, optional=True, hint="None: from the source")
        check_number("motion_gate", self.motion_gate, optional=True, hint="None: score every window")

    @classmethod
    def from_options(
        cls, window: int | str | Span | None = None, stride: int | str | Span = 16, **options
    ) -> StreamConfig:
        """A config from ``Engine.stream`` keywords (spans parsed; an unknown keyword names the valid ones)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"window", "stride"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown stream option(s) {unknown}; valid: {sorted(known)}")
        span = None if window is None else parse_span(window, "window")
        return cls(window=span, stride=parse_span(stride, "stride"), **options)

    @property
    def needs_fps(self) -> bool:
        """Whether the window layout depends on the frame rate."""
        spans = [self.stride] if self.window is None else [self.stride, self.window]
        return self.window is None or any(s.unit == "seconds" for s in spans)
