"""A timeline written out: segments as JSONL / CSV, window scores, WebVTT and SRT subtitles, a PNG, an annotated MP4.

Subtitles put each segment on screen while it lasts (``label (confidence)``; overlapping segments
show together), so opening the video with its ``.vtt`` / ``.srt`` in any player shows which action
when. The PNG draws, per class, the confidence over time, the level a window had to reach, and the
segments, on an ``h:mm:ss`` axis. The annotated MP4 is the video re-encoded with the active labels
drawn on its frames (H.264, PyAV).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from stdd_fast.errors import OutputError
from stdd_fast.timeline.run import Timeline
from stdd_fast.timeline.segments import Segment

SEGMENT_FIELDS = (
    "source", "label", "start_time", "end_time", "start_frame", "end_frame", "peak_confidence", "mean_confidence",
    "windows",
)  # fmt: skip


def clock(seconds: float, separator: str = ".") -> str:
    """``h:mm:ss.mmm`` (WebVTT) or, with ``separator=","``, SRT's ``hh:mm:ss,mmm``."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def _open(path: Path, newline: str | None = None):
    try:
        return path.open("w", encoding="utf-8", newline=newline)
    except OSError as e:
        raise OutputError(f"{path}: cannot write here ({e.strerror or e}); name another output folder") from None


def write_segments(path: str | Path, segments: Sequence[Segment]) -> Path:
    """Segments as ``.jsonl`` (one object a line) or ``.csv`` (the fields of :data:`SEGMENT_FIELDS`)."""
    path = Path(path)
    with _open(path, newline="") as f:
        if path.suffix == ".csv":
            writer = csv.writer(f)
            writer.writerow(SEGMENT_FIELDS)
            writer.writerows([getattr(s, k) for k in SEGMENT_FIELDS] for s in segments)
        else:
            f.writelines(json.dumps(s.to_dict()) + "\n" for s in segments)
    return path


def write_windows(path: str | Path, timeline: Timeline) -> Path:
    """Every window's span, each class's confidence and the classes detected, one JSON object a line."""
    path = Path(path)
    with _open(path) as f:
        for w in timeline.window_scores or ():
            confidences = dict(zip(timeline.classes, w.confidences, strict=True))
            row = {"window": w.index, "start_time": w.start_time, "end_time": w.end_time, "detected": w.detected,
                   "confidences": confidences, "skipped": w.skipped}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    return path


def _cue_text(s: Segment) -> str:
    return f"{s.label} ({s.peak_confidence:.2f})"


def write_vtt(path: str | Path, segments: Sequence[Segment]) -> Path:
    """WebVTT subtitles: one cue per segment."""
    path = Path(path)
    with _open(path) as f:
        f.write("WEBVTT\n\n")
        for i, s in enumerate(sorted(segments, key=lambda s: s.start_time), 1):
            f.write(f"{i}\n{clock(s.start_time)} --> {clock(s.end_time)}\n{_cue_text(s)}\n\n")
    return path


def write_srt(path: str | Path, segments: Sequence[Segment]) -> Path:
    """SubRip subtitles: one cue per segment."""
    path = Path(path)
    with _open(path) as f:
        for i, s in enumerate(sorted(segments, key=lambda s: s.start_time), 1):
            f.write(f"{i}\n{clock(s.start_time, ',')} --> {clock(s.end_time, ',')}\n{_cue_text(s)}\n\n")
    return path


def plot(path: str | Path, timeline: Timeline, on_levels: Sequence[float] | None = None) -> Path:
    """A PNG: per class, the confidence over time (with ``keep_windows``), its on level, and the segments."""
    from stdd_fast.deps import require

    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    classes = timeline.classes
    fig, axes = plt.subplots(len(classes), 1, figsize=(12, 1.3 * len(classes) + 0.8), sharex=True, squeeze=False)
    times = [(w.start_time + w.end_time) / 2 for w in timeline.window_scores or ()]
    for k, label in enumerate(classes):
        ax = axes[k][0]
        if times:
            ax.plot(times, [w.confidences[k] for w in timeline.window_scores], lw=0.8, color="0.3")
        if on_levels is not None:
            ax.axhline(on_levels[k], color="C3", lw=0.8, ls="--")
        for s in timeline.segments:
            if s.label == label:
                ax.axvspan(s.start_time, s.end_time, color="C0", alpha=0.3)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel(label[:18], rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    axis = axes[-1][0]
    axis.set_xlim(0, max(timeline.duration_s, times[-1] if times else 0.0, 1e-3))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: hms(x) if x >= 0 else ""))
    axis.set_xlabel("time (h:mm:ss)")
    name = Path(timeline.source).name
    fig.suptitle(
        f"{name}: {len(timeline.segments)} segments (shaded), confidence per window, on level dashed", fontsize=9
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def annotate(video: str | Path, path: str | Path, segments: Sequence[Segment]) -> Path:
    """The video re-encoded (H.264) with the labels of the segments active at each frame drawn on it."""
    import av
    import numpy as np
    from PIL import ImageDraw

    path = Path(path)
    with av.open(str(video)) as source, av.open(str(path), "w") as out:
        stream_in = source.streams.video[0]
        rate = stream_in.average_rate or 25
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = stream_in.codec_context.width // 2 * 2, stream_in.codec_context.height // 2 * 2
        stream.pix_fmt = "yuv420p"
        for frame in source.decode(stream_in):
            t = float(frame.time) if frame.time is not None else 0.0
            image = frame.to_image().crop((0, 0, stream.width, stream.height))
            active = [s for s in segments if s.start_time <= t < s.end_time]
            if active:
                draw = ImageDraw.Draw(image)
                text = "  ".join(_cue_text(s) for s in active)
                draw.rectangle((0, 0, min(stream.width, 7 * len(text) + 8), 14), fill=(0, 0, 0))
                draw.text((4, 1), text, fill=(255, 255, 0))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def hms(seconds: float) -> str:
    """``h:mm:ss`` (the PNG's time axis)."""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def duration_text(seconds: float) -> str:
    """``h:mm:ss.s`` for tables."""
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}:{int(m):02d}:{s:04.1f}" if math.isfinite(seconds) else "?"
