"""Timelines of files and events of streams: windows -> decisions -> segments (:mod:`stdd_fast.timeline.segments`).

A file's timeline is the file cut exactly as a stream cuts it (:meth:`stdd_fast.Engine.stream`, not
paced), so a file and the same file played as a stream see the same windows and, through the same
:class:`Segmenter`, give the same segments. Memory stays flat over hours of video: windows are
consumed as they come (their scores are kept only when asked, a few numbers per window). Ctrl-C stops
the run and keeps every segment closed so far; the ones open then are closed at the last window seen
and the timeline says it was interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from stdd_fast.errors import ConfigError, StddError
from stdd_fast.events import Event
from stdd_fast.terminal import progress_bar
from stdd_fast.timeline.segments import Segment, SegmentConfig, Segmenter, Window

if TYPE_CHECKING:
    from stdd_fast.results import WindowResult


@dataclass(frozen=True)
class WindowScores:
    """One window's scores as a timeline keeps them on request: its span and every class's confidence."""

    index: int
    start_time: float
    end_time: float
    confidences: list[float]
    detected: list[str]
    skipped: bool = False


@dataclass
class Timeline:
    """Which action when in one file: its segments (several classes may overlap), and how the run went.

    duration_s: the file's length; windows: scored + skipped (the motion gate carried the previous
    decision); flickers: segments dropped as shorter than the minimum duration; interrupted: Ctrl-C
    stopped the run (the segments are those closed by then); error: why the file gave no timeline.
    """

    source: str
    classes: list[str]
    segments: list[Segment] = field(default_factory=list)
    duration_s: float = 0.0
    windows: int = 0
    skipped: int = 0
    flickers: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    error: StddError | None = None
    window_scores: list[WindowScores] | None = None
    config: SegmentConfig = field(default_factory=SegmentConfig)

    @property
    def ok(self) -> bool:
        return self.error is None


def as_window(result: WindowResult, classes: Sequence[str]) -> Window:
    """A stream's window result as the segmenter reads it (ConfigError when the classifier decides nothing)."""
    if result.confidences is None:
        raise ConfigError(
            "timelines and events segment decisions: give the engine a classifier that decides (calibrated "
            "thresholds, stdd calibrate; or background prompts, stdd build-classifier --background)"
        )
    on = {d.label for d in result.detected}
    detected = torch.tensor([name in on for name in classes])
    return Window(
        result.index, result.start_frame, result.end_frame, result.start_time, result.end_time,
        detected, result.confidences, time.monotonic() - result.latency,
    )  # fmt: skip


def timeline(
    engine,
    video: str | Path,
    *,
    window: int | str | None = None,
    stride: int | str = 16,
    segments: SegmentConfig | None = None,
    keep_windows: bool = False,
    progress: bool | None = None,
    on_event: Callable[[Event], object] | None = None,
    **stream_options,
) -> Timeline:
    """The timeline of one file by ``engine`` (an :class:`~stdd_fast.Engine` whose classifier decides; see the
    module docstring); options of :meth:`Engine.stream` pass through. ``on_event``: called with each event as the
    run makes it (a close carries a finished segment: a long file's segments can be shown as they close)."""
    from stdd_fast.video.pyav import probe

    config = segments or SegmentConfig()
    name = str(video)
    out = Timeline(name, engine.classes, config=config, window_scores=[] if keep_windows else None)
    try:
        info = probe(video)
    except StddError as e:
        out.error = e
        return out
    out.duration_s = info.num_frames / info.fps if info.fps else 0.0
    segmenter = Segmenter(engine.classes, config)
    run = engine.stream(name, window, stride, top_k=1, **stream_options)
    bar = progress_bar(round(out.duration_s, 1), progress, f"timeline {Path(name).name}", "s")
    start, shown = time.perf_counter(), 0.0
    try:
        for result in run:
            if not result.ok:
                if result.index < 0:  # the stream ended with its error: the windows before it still count
                    out.error = result.error
                continue
            for event in segmenter.push(name, as_window(result, engine.classes)):
                if on_event is not None:
                    on_event(event)
            out.windows += 1
            out.skipped += result.skipped
            if out.window_scores is not None:
                labels = [d.label for d in result.detected]
                out.window_scores.append(WindowScores(
                    result.index, result.start_time, result.end_time, result.confidences.tolist(), labels,
                    result.skipped,
                ))  # fmt: skip
            bar.update(max(0.0, round(result.end_time - shown, 1)))
            shown = max(shown, round(result.end_time, 1))
    except KeyboardInterrupt:
        out.interrupted = True
    finally:
        run.close()
        bar.close()
    for event in segmenter.finish(name):
        if on_event is not None:
            on_event(event)
    out.segments, out.flickers = sorted(segmenter.segments, key=lambda s: (s.start_time, s.label)), segmenter.flickers
    out.seconds = time.perf_counter() - start
    return out


def events(
    engine,
    sources: Sequence,
    *,
    window: int | str | None = None,
    stride: int | str = 16,
    segments: SegmentConfig | None = None,
    names: Sequence[str] | None = None,
    **stream_options,
) -> Iterator[Event]:
    """Live events of ``sources`` (files, URLs, devices, frame iterables: as :meth:`Engine.stream_many`), as they
    happen: an ``open`` when a class turns on, a ``close`` (with the whole segment) when it turns off or its
    source ends. Per source in order; ``event.sequence`` numbers them."""
    segmenter = Segmenter(engine.classes, segments)
    run = engine.stream_many(sources, window, stride, names=names, **stream_options)
    finished: set[str] = set()
    try:
        for result in run:
            if result.ok:
                yield from segmenter.push(result.source, as_window(result, engine.classes))
            for name in set(run.stats.streams) - finished:  # sources that ended: what is open closes now
                finished.add(name)
                yield from segmenter.finish(name)
    finally:
        run.close()
    for name in [n for n in segmenter.sources if n not in finished]:
        yield from segmenter.finish(name)
