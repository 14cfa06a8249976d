"""Window decisions -> segments ("which action when"), online: the same code for a file's timeline and live events.

Each window (one view of a stream, or of a file cut as a stream is) carries every class's decision
and confidence (:mod:`stdd_fast.decisions`). Per class, :class:`Segmenter` runs a small state
machine over the windows of each source:

* **on / off levels (hysteresis)**: a class turns on in a window where it is detected (or its
  confidence reaches ``on_level``) and, once on, stays on while its confidence stays at or above
  ``off_level`` (default: while it is detected), so a score dipping just under the threshold does not
  split an action in two;
* **smoothing**: a window counts as on when at least half of the last ``smooth`` windows were on
  (a running majority; 1: no smoothing);
* **merge gap**: off windows for less than ``merge_gap`` seconds inside a segment do not end it;
* **minimum duration**: a segment shorter than ``min_duration`` seconds is dropped (counted as a flicker);
* **cooldown**: after a class's segment closes, that class cannot open another for ``cooldown`` seconds.

A window stands for the span of its centre +- half the stride (the time between consecutive
windows), so segments have the stride's resolution although windows are several strides long. A
segment opens (its ``open`` event) once it has lasted ``min_duration`` (and the stride is known: from
the second window of a source on); it closes once the class has
been off for ``merge_gap``, or when the source ends. Hence the delay of an event after the window that
decides it: an open at most ``min_duration`` plus one window late, a close at most ``merge_gap`` plus
one window (plus the window's own span and the model's latency, measured in each event's ``delay_s``).

Defaults that suit cameras: ``min_duration=1.0`` s (a real action lasts at least that), ``merge_gap=2.0``
s (an occlusion or a look away does not split an action), ``smooth=1``, ``cooldown=0``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from stdd_fast.checks import check_int, check_number
from stdd_fast.errors import ConfigError
from stdd_fast.events import EVIDENCE_KEPT, Event, Evidence, event_id


@dataclass(frozen=True)
class SegmentConfig:
    """How window decisions become segments (see the module docstring; durations in seconds)."""

    on_level: float | None = None
    off_level: float | None = None
    smooth: int = 1
    min_duration: float = 1.0
    merge_gap: float = 2.0
    cooldown: float = 0.0

    def __post_init__(self) -> None:
        for name in ("on_level", "off_level"):
            value = check_number(name, getattr(self, name), strict=False, optional=True, hint="a confidence")
            if value is not None and value > 1:
                raise ConfigError(f"{name}={value!r}: a confidence is at most 1 (None: the classifier's decision)")
        if self.on_level is not None and self.off_level is not None and self.off_level > self.on_level:
            raise ConfigError(f"off_level={self.off_level} is above on_level={self.on_level}: pass off <= on")
        check_int("smooth", self.smooth, hint="windows in the running majority; 1: none")
        for name in ("min_duration", "merge_gap", "cooldown"):
            check_number(name, getattr(self, name), strict=False, unit="seconds")


@dataclass(frozen=True)
class Window:
    """One decided window as the segmenter reads it: its span and every class's detection and confidence."""

    index: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    detected: torch.Tensor  # bool [K]
    confidence: torch.Tensor  # float32 [K]
    arrival: float = 0.0  # time.monotonic() when its result was made (for the events' delay)

    @property
    def centre_time(self) -> float:
        return (self.start_time + self.end_time) / 2

    @property
    def centre_frame(self) -> float:
        return (self.start_frame + self.end_frame) / 2


@dataclass(frozen=True)
class Segment:
    """An action in a source: label, span (seconds and frames), peak and mean confidence, the windows it spans."""

    source: str
    label: str
    start_time: float
    end_time: float
    start_frame: int
    end_frame: int
    peak_confidence: float
    mean_confidence: float
    windows: int

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Open:
    """A class's segment while it grows."""

    first: Window
    last_on: Window
    hop: tuple[float, float]  # (seconds, frames) between window centres when it started
    confidences: list[float] = field(default_factory=list)
    evidence: deque = field(default_factory=lambda: deque(maxlen=EVIDENCE_KEPT))
    opened: bool = False  # its open event was emitted


@dataclass
class _Track:
    """One source's state."""

    votes: list[deque]
    open: dict[int, _Open] = field(default_factory=dict)
    cooldown_until: dict[int, float] = field(default_factory=dict)
    previous: Window | None = None
    hop: tuple[float, float] = (0.0, 0.0)
    sequence: int = 0


class Segmenter:
    """Window decisions in, events (and segments) out; per source, in window order (see the module docstring).

    ``push(source, window)`` returns the events that window makes (opens and closes); ``finish(source)``
    closes what is open at the end of a source. ``segments`` holds every closed segment, in the order
    they closed; ``flickers`` counts segments dropped as shorter than ``min_duration``.
    """

    def __init__(self, classes: Sequence[str], config: SegmentConfig | None = None) -> None:
        self.classes = list(classes)
        self.config = config or SegmentConfig()
        self.segments: list[Segment] = []
        self.flickers = 0
        self._tracks: dict[str, _Track] = {}

    @property
    def sources(self) -> list[str]:
        """The sources seen so far, in the order they first came."""
        return list(self._tracks)

    def _track(self, source: str) -> _Track:
        if source not in self._tracks:
            self._tracks[source] = _Track([deque(maxlen=self.config.smooth) for _ in self.classes])
        return self._tracks[source]

    def push(self, source: str, window: Window) -> list[Event]:
        track, c = self._track(source), self.config
        before = track.previous
        if before is not None:
            track.hop = (window.centre_time - before.centre_time, window.centre_frame - before.centre_frame)
        events = []
        for k in range(len(self.classes)):
            state = track.open.get(k)
            confidence = float(window.confidence[k])
            if state is None:
                raw = bool(window.detected[k]) if c.on_level is None else confidence >= c.on_level
            else:
                raw = bool(window.detected[k]) if c.off_level is None else confidence >= c.off_level
            track.votes[k].append(raw)
            on = 2 * sum(track.votes[k]) >= len(track.votes[k]) if c.smooth > 1 else raw
            if on and state is None:
                if window.centre_time < track.cooldown_until.get(k, -math.inf):
                    continue
                state = track.open[k] = _Open(window, window, track.hop)
            if state is None:
                continue
            if on:
                state.last_on = window
                state.confidences.append(confidence)
                state.evidence.append(Evidence(window.index, window.start_frame, window.end_frame,
                                               window.start_time, window.end_time, confidence))  # fmt: skip
                start_t, end_t = self._span(state, track)[:2]
                if not state.opened and track.hop[0] > 0 and end_t - start_t >= c.min_duration:  # the stride is known
                    state.opened = True
                    events.append(self._event(source, k, state, track, window, "open"))
            elif window.centre_time - state.last_on.centre_time > c.merge_gap:
                events += self._close(source, k, track, window)
        track.previous = window
        return events

    def finish(self, source: str) -> list[Event]:
        """Close every segment still open in ``source`` (its end); the events that makes."""
        track = self._track(source)
        events = []
        for k in list(track.open):
            events += self._close(source, k, track, track.previous)
        return events

    def _span(self, state: _Open, track: _Track) -> tuple[float, float, int, int]:
        """(start s, end s, start frame, end frame): the on windows' centres +- half the stride."""
        hop_s, hop_f = track.hop if track.hop[0] > 0 else state.hop
        start_t = max(0.0, state.first.centre_time - hop_s / 2)
        end_t = state.last_on.centre_time + hop_s / 2
        start_f = max(0, math.floor(state.first.centre_frame - hop_f / 2))
        end_f = math.ceil(state.last_on.centre_frame + hop_f / 2)
        return start_t, end_t, start_f, end_f

    def _close(self, source: str, k: int, track: _Track, window: Window | None) -> list[Event]:
        state = track.open.pop(k)
        start_t, end_t, start_f, end_f = self._span(state, track)
        track.cooldown_until[k] = state.last_on.centre_time + self.config.cooldown
        if end_t - start_t < self.config.min_duration:
            self.flickers += 1
            return []
        conf = state.confidences
        label, mean = self.classes[k], sum(conf) / len(conf)
        self.segments.append(Segment(source, label, start_t, end_t, start_f, end_f, max(conf), mean, len(conf)))
        opening = [] if state.opened else [self._event(source, k, state, track, window, "open")]
        return [*opening, self._event(source, k, state, track, window, "close")]

    def _event(self, source: str, k: int, state: _Open, track: _Track, window: Window | None, kind: str) -> Event:
        start_t, end_t, start_f, end_f = self._span(state, track)
        conf = state.confidences
        closing = kind == "close"
        delay = time.monotonic() - window.arrival if window is not None and window.arrival else 0.0
        event = Event(
            id=event_id(source, self.classes[k], state.first.start_frame),
            kind=kind,
            source=source,
            label=self.classes[k],
            start_frame=start_f,
            start_time=start_t,
            end_frame=end_f if closing else None,
            end_time=end_t if closing else None,
            peak_confidence=max(conf),
            mean_confidence=sum(conf) / len(conf),
            windows=len(conf),
            sequence=track.sequence,
            delay_s=max(0.0, delay),
            evidence=tuple(state.evidence),
        )
        track.sequence += 1
        return event
