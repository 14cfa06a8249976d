"""Live-stream inference: sliding windows over frame streams, several streams per batched model call.

Use it through :meth:`stdd_fast.Engine.stream` / :meth:`~stdd_fast.Engine.stream_many`.

**Sources.** A file path, or a URL or device PyAV opens (``rtsp://``, ``http://``, ``/dev/video0``
with ``source_format="v4l2"``...): decoded in order, timestamps from the frames' pts. Or any iterable
of ``(frame, timestamp)`` pairs (frame uint8 [H, W, 3] RGB as a numpy array or tensor, timestamp in
seconds), or a callable returning such an iterable (which makes the source reconnectable).

**Windows** (all counts in source frames, numbered from 0 in arrival order). With T =
``num_frames``, a window starting at frame s samples frames ``s + o_t``, t = 0..T-1:

* ``window=None`` (the model's own sampling): ``o_t = floor(t · step)`` with ``step = sampling_rate ·
  fps / target_fps`` (every 16th frame at 30 fps for the released 8x16 setting), so a window spans
  ``floor((T-1) · step) + 1`` frames (113 at 30 fps, 94 at 25 fps: the offline ``clip_size``). The
  offline "official" sampler spreads its T frames slightly wider and clamps the last one (a
  PySlowFast quirk, ``video.sampling``); a stream has no end to clamp against, so windows use the
  rate exactly.
* ``window=N`` frames (or ``"2.5s"``): the span is N frames and ``o_t = floor(t · (N-1)/(T-1))``.
* Window k starts at frame ``k · stride``; ``stride`` is frames (``16``) or seconds (``"0.5s"``,
  converted with the stream's frame rate and rounded). A window is scored when its last frame arrives;
  a stream that ends drops its incomplete windows.

The frame rate is ``fps=`` if given, else the container's for PyAV sources, else estimated from the
first 8 timestamps (needed only for ``window=None`` or spans in seconds).

**Memory.** Each stream keeps only the frames a pending window samples (already transformed to
[3, S, S]), in arrival order, and evicts them once no later window needs them: at most about
``T · ceil(span / stride)`` frames, whatever the stream's length.

**Slow consumers** (``on_backpressure``). Windows wait for the model in one queue shared by all
streams, at most ``max_pending`` of them. ``"block"``: a stream whose window does not fit waits, and so
stops reading its source (a live source then buffers or drops on its side). ``"drop"``: the window is
discarded and counted; the stream keeps reading, so results stay current. Drops are reported in the
stream's next result (``WindowResult.dropped``) and in :class:`StreamStats`.

**Failures.** A source that raises, or gives no frame for ``stall_timeout`` seconds, is reopened after
``retry_delay`` seconds; frames at or before the last timestamp seen are skipped after a reopen (so a
file resumes where it stopped). ``max_retries`` reopenings in a row that bring no new frame end that
stream with a :class:`StreamError` result (``index == -1``); the other streams continue. A one-shot
iterator cannot be reopened: its first failure ends the stream.

**Batching.** The consumer takes every window that is ready (up to the engine's ``batch_clips``,
waiting at most ``max_delay`` seconds for more) and scores them in one model call, whichever streams
they come from.
"""

from __future__ import annotations

import math
import numbers
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch

from stdd_fast.errors import ConfigError, StddError, StreamError, VideoError, choice_error
from stdd_fast.results import WindowResult
from stdd_fast.video.transforms import preprocess

if TYPE_CHECKING:
    from stdd_fast.engine import Engine

Backpressure = Literal["block", "drop"]
BACKPRESSURE: tuple[str, ...] = get_args(Backpressure)
Frame = np.ndarray | torch.Tensor  # uint8 [H, W, 3] RGB
FramePairs = Iterable[tuple[Frame, float]]
Source = str | Path | FramePairs | Callable[[], FramePairs]
_FPS_PROBE_FRAMES = 8  # timestamps used to estimate an unknown frame rate
_FEED_DEPTH = 4  # decoded frames a source may run ahead of its window logic
_POLL = 0.05  # seconds between checks of the stop flag in blocking waits


def _put_until(items: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room, unless ``stop`` is set first (then False)."""
    while not stop.is_set():
        try:
            items.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


# -- configuration ---------------------------------------------------------------------------------------


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
    """How streams are cut into windows and scheduled (see the module docstring).

    window: span of a window (None: the model's sampling). stride: frames or seconds between window
    starts. top_k: labels per result. on_backpressure: "block" or "drop". max_pending: windows
    waiting for the model, all streams together. max_retries: reopenings in a row without a new frame
    before a stream ends with its error. stall_timeout: seconds without a frame that count as a
    failure. retry_delay: seconds before reopening. fps: the source frame rate (None: from the
    source). max_delay: seconds the model waits to fill a batch. realtime: pace sources by their
    timestamps (a file plays as a live stream would). source_format / source_options: PyAV's
    ``av.open`` ``format=`` and ``options=`` (e.g. "v4l2", {"rtsp_transport": "tcp"}).
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
    source_format: str | None = None
    source_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.window is not None and not isinstance(self.window, Span):
            object.__setattr__(self, "window", parse_span(self.window, "window"))
        if not isinstance(self.stride, Span):
            object.__setattr__(self, "stride", parse_span(self.stride, "stride"))
        if self.on_backpressure not in BACKPRESSURE:
            raise choice_error("on_backpressure policy", self.on_backpressure, BACKPRESSURE)
        for name, low in (("top_k", 1), ("max_pending", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}={value!r}: must be an int >= {low}")
        for name in ("stall_timeout", "retry_delay", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
                raise ConfigError(f"{name}={value!r}: must be a number of seconds >= 0")
        if self.stall_timeout <= 0:
            raise ConfigError(f"stall_timeout={self.stall_timeout!r}: must be > 0 seconds")
        fps = self.fps
        if fps is not None and not (
            isinstance(fps, numbers.Real) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0
        ):
            raise ConfigError(f"fps={fps!r}: must be a finite number > 0 or None (from the source)")


@dataclass(frozen=True)
class WindowGeometry:
    """Where a window's frames lie, in source frames: offsets [T] from its start, its span, the stride."""

    offsets: tuple[int, ...]
    span: int
    stride: int

    def sampled(self, frame: int) -> bool:
        """Whether some window samples this frame."""
        return any(frame >= o and (frame - o) % self.stride == 0 for o in self.offsets)


def needs_fps(config: StreamConfig) -> bool:
    """Whether the window geometry depends on the frame rate."""
    spans = [config.stride] if config.window is None else [config.stride, config.window]
    return config.window is None or any(s.unit == "seconds" for s in spans)


def window_geometry(
    num_frames: int, sampling_rate: int, target_fps: float, config: StreamConfig, fps: float | None
) -> WindowGeometry:
    """The window layout for T = ``num_frames`` at ``sampling_rate`` frames per ``target_fps``."""
    if config.window is None:
        if fps is None:
            raise ConfigError("window=None follows the model's sampling rate and needs the frame rate; pass fps=")
        step = sampling_rate * fps / target_fps
        # The epsilon keeps exact products (16 * 30/30 * t) from truncating one frame low.
        offsets = tuple(math.floor(t * step + 1e-9) for t in range(num_frames))
        span = offsets[-1] + 1
    else:
        span = config.window.frames(fps)
        steps = max(num_frames - 1, 1)  # T = 1: the single frame at the start
        offsets = tuple((t * (span - 1)) // steps for t in range(num_frames))
    return WindowGeometry(offsets, span, config.stride.frames(fps))


@dataclass
class StreamStats:
    """Counters of a :class:`WindowStream` run.

    streams: per stream name, ``frames`` accepted, ``windows`` scored, ``dropped`` windows,
    ``reconnects``, ``max_buffered`` frames held at once, and ``error`` (None or its message).
    model_calls: batched model calls; shared_calls: calls holding windows of two or more streams;
    max_batch: most windows in one call.
    """

    streams: dict[str, dict] = field(default_factory=dict)
    model_calls: int = 0
    shared_calls: int = 0
    max_batch: int = 0


# -- one stream: source connection, frame acceptance, windows ----------------------------------------------


@dataclass
class _Window:
    """A complete window waiting for the model: clip float32 [T, 3, S, S] on the engine's device."""

    stream: _Stream
    index: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    frames: torch.Tensor
    clip: torch.Tensor
    arrival: float


@dataclass
class _End:
    """The last item of a stream: None for a clean end, else the error that ended it."""

    stream: _Stream
    error: StddError | None


class _Stalled(Exception):
    pass


class _Fatal(Exception):
    """A stream problem reopening cannot fix (bad frames, unknown frame rate)."""


def _pyav_frames(source: str, config: StreamConfig) -> tuple[Iterator[tuple[np.ndarray, float]], float | None]:
    """Open ``source`` with PyAV: (RGB frames with their times in seconds, the declared frame rate)."""
    import av

    timeout = (config.stall_timeout, config.stall_timeout)  # open and read, so a dead server cannot hang us
    try:
        container = av.open(source, format=config.source_format, options=dict(config.source_options), timeout=timeout)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{source}: cannot open ({getattr(e, 'strerror', None) or e})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{source}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate and float(rate) > 0 else None

    def frames() -> Iterator[tuple[np.ndarray, float]]:
        try:
            for n, frame in enumerate(container.decode(stream)):
                ts = frame.time if frame.time is not None else n / (fps or 30.0)
                yield frame.to_ndarray(format="rgb24"), float(ts)
        finally:
            container.close()

    return frames(), fps


class _Feed(threading.Thread):
    """Reads one connection of a source into a small queue, so the stream can time out on it."""

    def __init__(self, opener: Callable[[], tuple[Iterable, float | None]], realtime: bool, name: str) -> None:
        super().__init__(daemon=True, name=f"stdd-feed-{name}")  # daemon: a source stuck in a read is abandoned
        self.items: queue.Queue = queue.Queue(maxsize=_FEED_DEPTH)
        self.cancelled = threading.Event()
        self._opener, self._realtime = opener, realtime

    def run(self) -> None:
        try:
            frames, fps = self._opener()
            if not self._put(("fps", fps)):
                return
            clock = None
            for frame, ts in frames:
                if self._realtime and isinstance(ts, numbers.Real):
                    if clock is None:
                        clock = time.monotonic() - float(ts)
                    time.sleep(max(0.0, clock + float(ts) - time.monotonic()))
                if not self._put(("frame", (frame, ts))):
                    return
            self._put(("end", None))
        except BaseException as e:  # the source's own error, reported to the stream
            self._put(("error", e))

    def _put(self, item: tuple) -> bool:
        return _put_until(self.items, item, self.cancelled)

    def get(self, timeout: float, stopped: threading.Event) -> tuple | None:
        """The next item; None once ``stopped`` is set; raises _Stalled after ``timeout`` seconds without one."""
        deadline = time.monotonic() + timeout
        while not stopped.is_set():
            wait = min(_POLL, deadline - time.monotonic())
            if wait <= 0:
                raise _Stalled(f"no frame for {timeout:g} s")
            try:
                return self.items.get(timeout=wait)
            except queue.Empty:
                continue
        return None


class _Stream:
    """One source: connects (and reconnects), accepts frames, cuts windows, hands them to the hub."""

    def __init__(self, key: int, name: str, source: Source, hub: _Hub) -> None:
        self.key, self.name, self.source, self.hub = key, name, source, hub
        self.config = hub.config
        self.frames = 0  # frames accepted so far (the next frame's number)
        self.windows = 0
        self.reconnects = 0
        self.dropped_total = 0
        self.max_buffered = 0
        self.error: StddError | None = None
        self._dropped = 0  # since the last result of this stream
        self._lock = threading.Lock()
        self._fps = self.config.fps
        self._geometry: WindowGeometry | None = None
        self._held: list[tuple[torch.Tensor, float, float]] = []  # frames before the geometry is known
        self._buffer: dict[int, torch.Tensor] = {}  # frame number -> [3, S, S], sampled frames still needed
        self._starts: dict[int, float] = {}  # window start frame -> its timestamp
        self._last_ts: float | None = None
        self._resume_after: float | None = None
        self._one_shot = not callable(source) and not isinstance(source, str | Path) and iter(source) is source
        self.thread = threading.Thread(target=self._main, daemon=True, name=f"stdd-stream-{name}")

    # -- connections --------------------------------------------------------------------------------------

    def _opener(self) -> Callable[[], tuple[Iterable, float | None]]:
        src, config = self.source, self.config
        if isinstance(src, str | Path):
            return lambda: _pyav_frames(str(src), config)
        if callable(src):
            return lambda: (src(), None)
        return lambda: (src, None)

    def _main(self) -> None:
        error: StddError | None = None
        try:
            error = self._run()
        except BaseException as e:  # a bug must still end the stream, never hang the consumer
            error = StreamError(f"{self.name}: internal error in the stream worker ({type(e).__name__}: {e})")
            error.__cause__ = e
        self.error = error
        self.hub.put(_End(self, error), block=True)

    def _run(self) -> StddError | None:
        failures = 0  # connections in a row that brought no new frame
        while not self.hub.stopped.is_set():
            feed = _Feed(self._opener(), self.config.realtime, self.name)
            feed.start()
            progressed = False
            try:
                while True:
                    item = feed.get(self.config.stall_timeout, self.hub.stopped)
                    if item is None:  # the run was closed
                        feed.cancelled.set()
                        return None
                    kind, value = item
                    if kind == "fps":
                        self._fps = self._fps or value
                    elif kind == "frame":
                        progressed |= self._accept(*value)
                    elif kind == "end":
                        return None
                    else:
                        raise value
            except _Fatal as e:
                feed.cancelled.set()
                return StreamError(f"{self.name}: {e}")
            except Exception as e:
                feed.cancelled.set()
                failures = 1 if progressed else failures + 1
                reason = str(e) if isinstance(e, _Stalled | StddError) else f"{type(e).__name__}: {e}"
                reason = reason.removeprefix(f"{self.name}: ")  # the StreamError names the stream already
                if self._one_shot or failures > self.config.max_retries:
                    how = (
                        "the source is a one-shot iterator and cannot be reopened (pass a callable that "
                        "returns a new iterator to allow reconnects)"
                        if self._one_shot
                        else f"gave up after {self.reconnects} reconnect(s) without a new frame"
                    )
                    error = StreamError(f"{self.name}: {reason} ({how})")
                    error.__cause__ = e if not isinstance(e, _Stalled) else None
                    return error
                self.reconnects += 1
                self._resume_after = self._last_ts
                if self.hub.stopped.wait(self.config.retry_delay):
                    return None
        return None

    # -- frames and windows -------------------------------------------------------------------------------

    def _accept(self, frame: object, ts: object) -> bool:
        """Take one frame; False when it repeats one seen before a reconnect."""
        number = self.frames + len(self._held)
        if isinstance(ts, bool) or not isinstance(ts, numbers.Real) or not math.isfinite(ts):
            raise _Fatal(f"frame {number}: timestamp {ts!r} is not a number of seconds")
        ts = float(ts)
        if self._resume_after is not None:
            if ts <= self._resume_after:
                return False
            self._resume_after = None
        image = _check_frame(frame, number)
        arrival = time.monotonic()
        self._last_ts = ts
        if self._geometry is None:
            self._held.append((image, ts, arrival))
            if needs_fps(self.config) and self._fps is None and len(self._held) < _FPS_PROBE_FRAMES:
                return True
            self._start_geometry()
            held, self._held = self._held, []
            for item in held:
                self._step(*item)
            return True
        self._step(image, ts, arrival)
        return True

    def _start_geometry(self) -> None:
        if needs_fps(self.config) and self._fps is None:
            times = [ts for _, ts, _ in self._held]
            if len(times) < 2 or times[-1] <= times[0]:
                raise _Fatal("cannot tell the frame rate from the timestamps; pass fps=")
            self._fps = (len(times) - 1) / (times[-1] - times[0])
        s = self.hub.sampling
        self._geometry = window_geometry(s.num_frames, s.sampling_rate, s.target_fps, self.config, self._fps)

    def _step(self, image: torch.Tensor, ts: float, arrival: float) -> None:
        g, j = self._geometry, self.frames
        self.frames += 1
        if j % g.stride == 0:
            self._starts[j] = ts
        if g.sampled(j):
            self._buffer[j] = self.hub.transform(image)  # [3, S, S]
            self.max_buffered = max(self.max_buffered, len(self._buffer))
        start = j - (g.span - 1)
        if start < 0 or start % g.stride:
            return
        picks = [start + o for o in g.offsets]
        window = _Window(
            stream=self,
            index=start // g.stride,
            start_frame=start,
            end_frame=j,
            start_time=self._starts.pop(start),
            end_time=ts,
            frames=torch.tensor(picks),
            clip=torch.stack([self._buffer[k] for k in picks]),  # [T, 3, S, S]
            arrival=arrival,
        )
        # Evict what no later window needs: later windows start at start + stride or after.
        for k in [k for k in self._buffer if k < start + g.stride]:
            del self._buffer[k]
        for k in [k for k in self._starts if k < start + g.stride]:
            del self._starts[k]
        if not self.hub.put(window, block=self.config.on_backpressure == "block") and not self.hub.stopped.is_set():
            with self._lock:
                self._dropped += 1
                self.dropped_total += 1

    def take_dropped(self) -> int:
        with self._lock:
            n, self._dropped = self._dropped, 0
            return n

    def stats(self) -> dict:
        return {
            "frames": self.frames,
            "windows": self.windows,
            "dropped": self.dropped_total,
            "reconnects": self.reconnects,
            "max_buffered": self.max_buffered,
            "error": None if self.error is None else str(self.error),
        }


def _check_frame(frame: object, number: int) -> torch.Tensor:
    """A source frame as a uint8 [H, W, 3] CPU tensor (shares memory with a numpy input)."""
    image = torch.from_numpy(np.ascontiguousarray(frame)) if isinstance(frame, np.ndarray) else frame
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        dtype = str(getattr(frame, "dtype", "")).removeprefix("torch.")
        got = f"{dtype} {tuple(frame.shape)}" if hasattr(frame, "shape") else type(frame).__name__
        raise _Fatal(f"frame {number}: expected uint8 RGB [H, W, 3]; got {got}")
    return image


# -- the shared queue and the consumer ---------------------------------------------------------------------


class _Hub:
    """What the streams share: the bounded queue of windows for the model, the stop flag, the transform."""

    def __init__(self, engine: Engine, config: StreamConfig) -> None:
        self.config = config
        self.sampling = engine.sampling
        self.size, self.device = engine.image_size, engine.device
        self.items: queue.Queue = queue.Queue(maxsize=config.max_pending)
        self.stopped = threading.Event()

    def transform(self, image: torch.Tensor) -> torch.Tensor:
        """One frame uint8 [H, W, 3] -> float32 [3, S, S] (the offline transforms, one frame at a time)."""
        return preprocess(image[None, None], self.size, device=self.device)[0, 0]

    def put(self, item: _Window | _End, block: bool) -> bool:
        """Queue an item; False when the queue is full and ``block`` is False (or the run stopped)."""
        if not block:
            try:
                self.items.put_nowait(item)
                return True
            except queue.Full:
                return False
        return _put_until(self.items, item, self.stopped)


class WindowStream:
    """Results of one or more streams, window by window; iterate it, or :meth:`run` it with a callback.

    Iterating yields :class:`~stdd_fast.results.WindowResult` in the order they are scored (per
    stream, in window order); a stream that fails for good yields one result with ``error`` set and
    ``index == -1``. ``callback(result)`` (if given) sees every result before it is yielded.
    Threads start on the first iteration and stop when it ends or :meth:`close` is called.
    """

    def __init__(
        self,
        engine: Engine,
        sources: Sequence[Source],
        config: StreamConfig,
        callback: Callable[[WindowResult], object] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not engine.classes:
            raise ConfigError("this Engine has no classifier: build it with classes=[...] or classifier=...")
        sources = list(sources)
        if not sources:
            raise ConfigError("no sources given")
        for i, src in enumerate(sources):
            if not (isinstance(src, str | Path) or callable(src) or isinstance(src, Iterable)):
                raise ConfigError(
                    f"sources[{i}]: expected a path or URL, an iterable of (frame, seconds) pairs or a "
                    f"callable returning one; got {type(src).__name__}"
                )
        if names is None:
            names = [str(s) if isinstance(s, str | Path) else f"<stream {i}>" for i, s in enumerate(sources)]
        names = list(names)
        if len(names) != len(sources) or len(set(names)) != len(names):
            raise ConfigError(f"names must be {len(sources)} distinct strings, one per source; got {names!r}")
        if callback is not None and not callable(callback):
            raise ConfigError(f"callback must be callable; got {type(callback).__name__}")
        self.engine, self.config, self.callback = engine, config, callback
        self.stats = StreamStats()
        self._hub = _Hub(engine, config)
        pairs = enumerate(zip(names, sources, strict=True))
        self._streams = [_Stream(i, name, src, self._hub) for i, (name, src) in pairs]
        self._started = False

    def __iter__(self) -> Iterator[WindowResult]:
        if self._started:
            raise ConfigError("a WindowStream can be iterated once; call engine.stream(...) again")
        self._started = True
        return self._results()

    def run(self) -> StreamStats:
        """Consume every result (each goes to the callback) until all streams end; the counters."""
        for _ in self:
            pass
        return self.stats

    def close(self) -> None:
        """Stop the streams (sources are abandoned; a blocked read ends with its own timeout)."""
        self._hub.stopped.set()

    def __enter__(self) -> WindowStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _results(self) -> Iterator[WindowResult]:
        hub = self._hub
        for s in self._streams:
            s.thread.start()
        live = {s.key for s in self._streams}
        try:
            while live:
                items = self._gather(len(live))
                windows = [w for w in items if isinstance(w, _Window)]
                logits = self._score(windows) if windows else None
                row = 0
                for item in items:
                    if isinstance(item, _End):
                        live.discard(item.stream.key)
                        self.stats.streams[item.stream.name] = item.stream.stats()
                        if item.error is not None:
                            yield self._emit(WindowResult(item.stream.name, -1, error=item.error))
                        continue
                    yield self._emit(self._result(item, logits[row]))
                    row += 1
        finally:
            hub.stopped.set()
            for s in self._streams:
                s.thread.join(timeout=1.0)
                self.stats.streams[s.name] = s.stats()

    def _gather(self, live: int) -> list[_Window | _End]:
        """The next item (waiting for it), then whatever else is ready, up to one model batch.

        Waits up to ``max_delay`` for more windows, unless all ``live`` streams have ended meanwhile.
        """
        while True:  # poll, so that Ctrl-C reaches the consumer promptly
            try:
                items = [self._hub.items.get(timeout=0.25)]
                break
            except queue.Empty:
                continue
        limit = self.engine.batch_clips
        deadline = time.monotonic() + self.config.max_delay
        while sum(isinstance(i, _Window) for i in items) < limit:
            if sum(isinstance(i, _End) for i in items) == live:
                break
            wait = deadline - time.monotonic()
            try:
                items.append(self._hub.items.get(timeout=wait) if wait > 0 else self._hub.items.get_nowait())
            except queue.Empty:
                break
        return items

    def _score(self, windows: list[_Window]) -> torch.Tensor:
        """Single-view logits of a batch of windows: float32 [B, K] on CPU."""
        clips = torch.stack([w.clip for w in windows])  # [B, T, 3, S, S]
        logits = self.engine._window_logits(clips)
        self.stats.model_calls += 1
        self.stats.max_batch = max(self.stats.max_batch, len(windows))
        if len({w.stream.key for w in windows}) > 1:
            self.stats.shared_calls += 1
        return logits

    def _result(self, w: _Window, logits: torch.Tensor) -> WindowResult:
        names = self.engine.classes
        top = logits.topk(min(self.config.top_k, len(names)))
        w.stream.windows += 1
        return WindowResult(
            source=w.stream.name,
            index=w.index,
            start_frame=w.start_frame,
            end_frame=w.end_frame,
            start_time=w.start_time,
            end_time=w.end_time,
            frames=w.frames,
            labels=[names[i] for i in top.indices.tolist()],
            scores=top.values.tolist(),
            logits=logits,
            latency=time.monotonic() - w.arrival,
            dropped=w.stream.take_dropped(),
        )

    def _emit(self, result: WindowResult) -> WindowResult:
        if self.callback is not None:
            self.callback(result)
        return result


def stream_sources(
    engine: Engine,
    sources: Sequence[Source],
    config: StreamConfig,
    callback: Callable[[WindowResult], object] | None = None,
    names: Sequence[str] | None = None,
) -> WindowStream:
    """A :class:`WindowStream` over ``sources`` (what Engine.stream / stream_many return)."""
    return WindowStream(engine, sources, config, callback, names)
