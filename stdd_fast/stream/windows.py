"""Pure windowing: where a stream's windows lie, and cutting frames into them (no threads, no I/O).

Counts are in source frames, numbered from 0 in arrival order. With T = ``num_frames``, a window
starting at frame s samples frames ``s + o_t``, t = 0..T-1:

* ``window=None`` (the model's own sampling): ``o_t = floor(t · step)`` with ``step = sampling_rate ·
  fps / target_fps`` (every 16th frame at 30 fps for the released 8x16 setting), so a window spans
  ``floor((T-1) · step) + 1`` frames (113 at 30 fps, 94 at 25 fps: the offline ``clip_size``). The
  offline "official" sampler spreads its T frames slightly wider and clamps the last one (a
  PySlowFast quirk, :mod:`stdd_fast.video.sampling`); a stream has no end to clamp against, so
  windows use the rate exactly.
* ``window=N`` frames (or ``"2.5s"``): the span is N frames and ``o_t = floor(t · (N-1)/(T-1))``.
* Window k starts at frame ``k · stride``. A window is complete when its last frame arrives.

The frame rate is ``fps=`` if given, else the source's declared rate, else estimated from the first
8 timestamps (needed only for ``window=None`` or spans in seconds).

**Timestamps** must increase. A frame whose timestamp is not later than the previous frame's is
dropped and counted (``out_of_order``); 8 such frames in a row are a clock reset (a live source
restarted its timestamps): the windows under way are dropped (counted) and cutting restarts there.

**Memory.** Only the frames a pending window samples are kept (already transformed to [3, S, S]),
and evicted once no later window needs them: at most about ``T · ceil(span / stride)`` frames.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from stdd_fast.errors import ConfigError
from stdd_fast.stream.config import StreamConfig
from stdd_fast.video.config import SamplingConfig

FPS_PROBE_FRAMES = 8  # timestamps used to estimate an unknown frame rate
RESET_AFTER = 8  # out-of-order frames in a row that mean the source restarted its clock


class WindowError(Exception):
    """A stream problem reconnecting cannot fix: unusable frames or timestamps, or no frame rate."""


@dataclass(frozen=True)
class WindowLayout:
    """Where a window's frames lie, in source frames: offsets [T] from its start, its span, the stride."""

    offsets: tuple[int, ...]
    span: int
    stride: int

    def sampled(self, frame: int) -> bool:
        """Whether some window samples this frame."""
        return any(frame >= o and (frame - o) % self.stride == 0 for o in self.offsets)


def window_layout(sampling: SamplingConfig, config: StreamConfig, fps: float | None) -> WindowLayout:
    """The window layout for T = ``sampling.num_frames`` frames at ``sampling_rate`` frames per ``target_fps``."""
    num_frames = sampling.num_frames
    if config.window is None:
        if fps is None:
            raise ConfigError("window=None follows the model's sampling rate and needs the frame rate; pass fps=")
        step = sampling.sampling_rate * fps / sampling.target_fps
        # The epsilon keeps exact products (16 * 30/30 * t) from truncating one frame low.
        offsets = tuple(math.floor(t * step + 1e-9) for t in range(num_frames))
        span = offsets[-1] + 1
    else:
        span = config.window.frames(fps)
        steps = max(num_frames - 1, 1)  # T = 1: the single frame at the start
        offsets = tuple((t * (span - 1)) // steps for t in range(num_frames))
    return WindowLayout(offsets, span, config.stride.frames(fps))


@dataclass
class CutWindow:
    """A complete window: clip float32 [T, 3, S, S], the source frames it samples (LongTensor [T])."""

    index: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    frames: torch.Tensor
    clip: torch.Tensor
    arrival: float


def as_frame(frame: object, number: int) -> torch.Tensor:
    """A source frame as a uint8 [H, W, 3] CPU tensor (shares memory with a numpy input)."""
    image = torch.from_numpy(np.ascontiguousarray(frame)) if isinstance(frame, np.ndarray) else frame
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        dtype = str(getattr(frame, "dtype", "")).removeprefix("torch.")
        got = f"{dtype} {tuple(frame.shape)}" if hasattr(frame, "shape") else type(frame).__name__
        raise WindowError(f"frame {number}: expected uint8 RGB [H, W, 3]; got {got}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise WindowError(f"frame {number}: an empty {image.shape[1]}x{image.shape[0]} frame")
    return image


class WindowCutter:
    """One stream's frames in, its complete windows out.

    ``transform(frame uint8 [H, W, 3]) -> [3, S, S]`` runs on each frame a window samples; ``fps``:
    the rate the layout uses (None: estimated from the first timestamps when needed).
    """

    def __init__(
        self,
        sampling: SamplingConfig,
        config: StreamConfig,
        transform: Callable[[torch.Tensor], torch.Tensor],
        fps: float | None = None,
    ) -> None:
        self.sampling, self.config, self.transform = sampling, config, transform
        self.fps = fps
        self.layout: WindowLayout | None = None
        self.frames = 0  # frames accepted (the next frame's number)
        self.windows = 0  # windows cut
        self.out_of_order = 0  # frames dropped for a timestamp not after the previous one
        self.resets = 0  # clock resets (RESET_AFTER out-of-order frames in a row)
        self.discarded = 0  # windows under way when a reset came
        self.max_buffered = 0
        self.last_ts: float | None = None
        self._in_a_row = 0
        self._origin = 0  # frame number windows are counted from (moves at a reset)
        self._held: list[tuple[torch.Tensor, float, float]] = []  # frames before the layout is known
        self._buffer: dict[int, torch.Tensor] = {}  # frame number -> [3, S, S], sampled frames still needed
        self._starts: dict[int, float] = {}  # window start frame -> its timestamp

    def set_declared_fps(self, fps: float | None) -> None:
        """The source's own rate, used when ``fps=`` was not given."""
        self.fps = self.fps or fps

    def push(self, frame: object, ts: object, arrival: float) -> list[CutWindow]:
        """Take one frame with its timestamp (seconds); the windows it completes."""
        number = self.frames + len(self._held)
        if isinstance(ts, bool) or not isinstance(ts, numbers.Real) or not math.isfinite(ts):
            raise WindowError(f"frame {number}: timestamp {ts!r} is not a finite number of seconds")
        ts = float(ts)
        image = as_frame(frame, number)
        if self.last_ts is not None and ts <= self.last_ts:
            self.out_of_order += 1
            self._in_a_row += 1
            if self._in_a_row < RESET_AFTER:
                return []
            self._reset()
        self._in_a_row = 0
        self.last_ts = ts
        if self.layout is None:
            self._held.append((image, ts, arrival))
            if self.config.needs_fps and self.fps is None and len(self._held) < FPS_PROBE_FRAMES:
                return []
            self._start_layout()
            held, self._held = self._held, []
            return [w for item in held for w in self._step(*item)]
        return self._step(image, ts, arrival)

    def finish(self) -> list[CutWindow]:
        """The stream ended: frames held for the frame-rate estimate are cut with the rate they tell."""
        if self.layout is not None or not self._held:
            return []
        try:
            self._start_layout()
        except WindowError:
            self.frames, self._held = self.frames + len(self._held), []
            return []
        held, self._held = self._held, []
        return [w for item in held for w in self._step(*item)]

    def _reset(self) -> None:
        self.resets += 1
        self.discarded += len(self._starts)
        # frames held for the frame-rate estimate ran on the old clock: timed with the new one they would give
        # a rate from timestamps that go back (negative, or a division by zero); they are dropped, as windows are
        self.frames, self._held = self.frames + len(self._held), []
        self._origin = self.frames
        self._buffer.clear()
        self._starts.clear()

    def _start_layout(self) -> None:
        if self.config.needs_fps and self.fps is None:
            times = [ts for _, ts, _ in self._held]
            if len(times) < 2:
                raise WindowError("cannot tell the frame rate from one timestamp; pass fps=")
            self.fps = (len(times) - 1) / (times[-1] - times[0])
        self.layout = window_layout(self.sampling, self.config, self.fps)

    def _step(self, image: torch.Tensor, ts: float, arrival: float) -> list[CutWindow]:
        g, j = self.layout, self.frames - self._origin
        self.frames += 1
        if j % g.stride == 0:
            self._starts[j] = ts
        if g.sampled(j):
            self._buffer[j] = self.transform(image)  # [3, S, S]
            self.max_buffered = max(self.max_buffered, len(self._buffer))
        start = j - (g.span - 1)
        if start < 0 or start % g.stride:
            return []
        picks = [start + o for o in g.offsets]
        window = CutWindow(
            index=self.windows,
            start_frame=self._origin + start,
            end_frame=self._origin + j,
            start_time=self._starts.pop(start),
            end_time=ts,
            frames=torch.tensor([self._origin + k for k in picks]),
            clip=torch.stack([self._buffer[k] for k in picks]),  # [T, 3, S, S]
            arrival=arrival,
        )
        self.windows += 1
        # Evict what no later window needs: later windows start at start + stride or after.
        for k in [k for k in self._buffer if k < start + g.stride]:
            del self._buffer[k]
        for k in [k for k in self._starts if k < start + g.stride]:
            del self._starts[k]
        return [window]

    def why_none(self) -> str:
        """Why this stream cut no window (for the message that ends it)."""
        if self.frames == 0 and not self._held:
            return "the source gave no frame"
        if self.out_of_order > self.frames:
            return (
                f"its timestamps do not increase: {self.out_of_order} frames came with a time not after the previous "
                f"one's ({self.resets} clock resets, {self.frames} frames kept); give the frames increasing timestamps "
                "(seconds)"
            )
        if self.layout is None:
            return f"it ended after {self.frames} frame(s), before the frame rate was known; pass fps="
        span = self.layout.span
        hint = f"window={max(self.frames, 1)}" if self.frames else "a shorter window"
        return (
            f"it ended after {self.frames} frame(s) but a window spans {span} frames "
            f"(window={self.config.window or 'None'} at {self.fps or 0:g} fps); pass {hint} (stdd stream --window "
            f"{max(self.frames, 1)}) to cut windows from a stream this short"
        )
