"""Stream sources: opening them, reading them on their own thread, and reconnecting when they fail.

A source is a file path, or a URL or device PyAV opens (``rtsp://``, ``http://``, ``/dev/video0``
with ``source_format="v4l2"``...), decoded in order with timestamps from the frames' pts; or any
iterable of ``(frame, timestamp)`` pairs (frame uint8 [H, W, 3] RGB as a numpy array or tensor,
timestamp in seconds); or a callable returning such an iterable (which makes it reconnectable).

**Failures.** A source that raises, or gives no frame for ``stall_timeout`` seconds, is reopened after
``retry_delay`` seconds; frames at or before the last timestamp seen are skipped after a reopen (so a
file resumes where it stopped). ``max_retries`` reopenings in a row that bring no new frame end that
stream with a :class:`StreamError`. A one-shot iterator cannot be reopened: its first failure ends
the stream. A reconnect first waits (up to ``stall_timeout``) for the previous connection's reader
to return, so reconnects never pile up threads: PyAV reads time out by themselves, and a read that
cannot be interrupted (a Python source blocked for good) uses up the retries instead.
"""

from __future__ import annotations

import contextlib
import numbers
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from stdd_fast.errors import StddError, StreamError, VideoError
from stdd_fast.stream.config import StreamConfig

FramePairs = Iterable[tuple[object, float]]
Source = str | Path | FramePairs | Callable[[], FramePairs]
FEED_DEPTH = 4  # decoded frames a source may run ahead of its window logic
POLL = 0.05  # seconds between checks of the stop flag in blocking waits


def put_until(items: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room, unless ``stop`` is set first (then False)."""
    while not stop.is_set():
        try:
            items.put(item, timeout=POLL)
            return True
        except queue.Full:
            continue
    return False


class Stalled(Exception):
    """No frame for ``stall_timeout`` seconds."""


class _StillBlocked(Exception):
    """The previous connection's read has not returned: no new reader is started beside it."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; the stalled read has not returned, so no second reader was started")


def pyav_frames(source: str, config: StreamConfig) -> tuple[Iterator[tuple[np.ndarray, float]], float | None]:
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


def opener(source: Source, config: StreamConfig) -> Callable[[], tuple[Iterable, float | None]]:
    """How to (re)open a source: () -> (its (frame, seconds) pairs, its declared frame rate or None)."""
    if isinstance(source, str | Path):
        return lambda: pyav_frames(str(source), config)
    if callable(source):
        return lambda: (source(), None)
    return lambda: (source, None)


def one_shot(source: Source) -> bool:
    """Whether a source can be read only once (an iterator, not a path, callable or re-iterable)."""
    return not callable(source) and not isinstance(source, str | Path) and iter(source) is source


class Feed(threading.Thread):
    """Reads one connection of a source into a small queue, so the stream can time out on it."""

    def __init__(self, open_source: Callable[[], tuple[Iterable, float | None]], realtime: bool, name: str) -> None:
        super().__init__(daemon=True, name=f"stdd-feed-{name}")  # daemon: a source stuck in a read is abandoned
        self.items: queue.Queue = queue.Queue(maxsize=FEED_DEPTH)
        self.cancelled = threading.Event()
        self._open, self._realtime = open_source, realtime

    def run(self) -> None:
        frames = None
        try:
            frames, fps = self._open()
            if not self._put(("fps", fps)):
                return
            clock = None
            for frame, ts in frames:
                if self._realtime and isinstance(ts, numbers.Real):
                    if clock is None:
                        clock = time.monotonic() - float(ts)
                    if self.cancelled.wait(max(0.0, clock + float(ts) - time.monotonic())):
                        return
                if not self._put(("frame", (frame, ts))):
                    return
            self._put(("end", None))
        except BaseException as e:  # the source's own error, reported to the stream
            self._put(("error", e))
        finally:
            close = getattr(frames, "close", None)
            if callable(close):  # a generator's cleanup (PyAV: the container) runs now, not at collection
                with contextlib.suppress(Exception):  # a failing cleanup must not mask why the source ended
                    close()

    def _put(self, item: tuple) -> bool:
        return put_until(self.items, item, self.cancelled)

    def get(self, timeout: float, stopped: threading.Event) -> tuple | None:
        """The next item; None once ``stopped`` is set; raises Stalled after ``timeout`` seconds without one."""
        deadline = time.monotonic() + timeout
        while not stopped.is_set():
            wait = min(POLL, deadline - time.monotonic())
            if wait <= 0:
                raise Stalled(f"no frame for {timeout:g} s")
            try:
                return self.items.get(timeout=wait)
            except queue.Empty:
                continue
        return None


class Connection:
    """Reads one source across reconnects: ``frames()`` yields (frame, seconds) and the declared rates.

    Yields ``("fps", rate)`` and ``("frame", (frame, ts))`` items; returns at the end of the source or
    when ``stopped`` is set; raises :class:`StreamError` when the source fails for good.
    """

    def __init__(self, name: str, source: Source, config: StreamConfig, stopped: threading.Event) -> None:
        self.name, self.config, self.stopped = name, config, stopped
        self.reconnects = 0
        self.last_ts: float | None = None  # the newest timestamp handed on (a reopen resumes after it)
        self._open = opener(source, config)
        self._one_shot = one_shot(source)
        self._last_reason = ""
        # a local file (not a URL, nor a device or filter named with source_format): when it does not exist, a
        # reopen cannot bring it back, so that stream ends at its first failure
        local = isinstance(source, str | Path) and "://" not in str(source) and config.source_format is None
        self._local_file = Path(source) if local else None

    def items(self) -> Iterator[tuple[str, object]]:
        failures = 0  # connections in a row that brought no new frame
        previous: Feed | None = None
        while not self.stopped.is_set():
            if previous is not None and previous.is_alive():
                # the last reader must be gone before the next starts, or stalled reads would pile up threads
                previous.join(timeout=self.config.stall_timeout)
                if previous.is_alive():
                    failures = self._failed(previous, _StillBlocked(self._last_reason), False, failures)
                    if self.stopped.wait(self.config.retry_delay):
                        return
                    continue
            feed = previous = Feed(self._open, self.config.realtime, self.name)
            feed.start()
            resume_after, progressed = self.last_ts, False
            try:
                while True:
                    item = feed.get(self.config.stall_timeout, self.stopped)
                    if item is None:  # the run was closed
                        feed.cancelled.set()
                        return
                    kind, value = item
                    if kind == "fps":
                        yield "fps", value
                    elif kind == "frame":
                        ts = value[1]
                        if resume_after is not None and isinstance(ts, numbers.Real) and ts <= resume_after:
                            continue  # seen before the reconnect
                        resume_after, progressed = None, True
                        if isinstance(ts, numbers.Real) and not isinstance(ts, bool):
                            self.last_ts = float(ts) if self.last_ts is None else max(self.last_ts, float(ts))
                        yield "frame", value
                    elif kind == "end":
                        return
                    else:
                        raise value
            except GeneratorExit:  # the consumer stopped (closed, or the stream's frames were unusable)
                feed.cancelled.set()
                raise
            except Exception as e:  # the source raised or stalled: reconnect, or end for good
                failures = self._failed(feed, e, progressed, failures)
            if self.stopped.wait(self.config.retry_delay):
                return

    def _failed(self, feed: Feed, e: BaseException, progressed: bool, failures: int) -> int:
        """Count a failed connection; raise StreamError when the stream ends for good."""
        feed.cancelled.set()
        failures = 1 if progressed else failures + 1
        reason = str(e) if isinstance(e, Stalled | StddError | _StillBlocked) else f"{type(e).__name__}: {e}"
        reason = reason.removeprefix(f"{self.name}: ")  # the StreamError names the stream already
        self._last_reason = reason.split("; ")[0]
        missing = self._local_file is not None and not self._local_file.exists()
        if self._one_shot or missing or failures > self.config.max_retries:
            if missing:
                reason, how = "no such file", "a local path that does not exist is not reopened"
            elif self._one_shot:
                how = (
                    "the source is a one-shot iterator and cannot be reopened (pass a callable that returns a new "
                    "iterator to allow reconnects)"
                )
            else:
                how = f"gave up after {self.reconnects} reconnect(s) without a new frame"
            error = StreamError(f"{self.name}: {reason} ({how})")
            error.__cause__ = None if isinstance(e, Stalled | _StillBlocked) else e
            raise error
        self.reconnects += 1
        return failures
