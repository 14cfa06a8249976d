"""Which frames a video contributes: the official test-time sampling (STDD-SPEC §6.2) as pure functions.

Everything here is arithmetic on frame counts; nothing opens a file. ``official`` reproduces the
PySlowFast PyAV path the released evaluation uses, quirks included:

* **Duration known** (selective decoding). A segment of ``clip_size = max(1, ceil(sr·(T−1)/target_fps·fps))``
  frames starts at ``max_start·i/V`` for view i (``max_start = max(N − clip_size, 0)``; offset sampling
  is ignored on this path). PySlowFast decodes the frames whose pts lie in ``[start, end]``, plus the
  first frame after ``end`` (its ``buffer_size=0`` loop keeps the frame that ends the loop). On that
  decoded segment of ``n_dec`` frames it takes ``long(clamp(linspace(0, clip_size2 − 1, T), 0,
  n_dec − 1))`` with ``clip_size2 = max(1, sr·T/target_fps·fps)``: the ``T−1`` vs ``T`` mismatch makes
  the last index clamp (112 instead of 127 at 30 fps).
* **Duration unknown** (the whole video is decoded): ``start = i·floor(max_start/(V−1))`` (the centre
  ``floor(max_start/2)`` when V = 1) with ``max_start = max(N − clip_size2, 0)``, then the same
  linspace and clamp over the whole video.
* Short videos (``max_start = 0``) give identical views that repeat the last frame.

Float expressions are evaluated in the released order (Python float64, then a float32 ``linspace``)
so the truncations land on the same integers.

``uniform`` is not the released protocol: T equal segments over the whole video, frame
``floor((t + (v+1)/(V+1))·N/T)`` for view v, so long videos are covered end to end and the V views
interleave.
"""

from __future__ import annotations

import math

import torch

from stdd_fast.checks import check_int, check_number
from stdd_fast.choices import SAMPLING_MODES
from stdd_fast.errors import ConfigError, VideoError, choice_error
from stdd_fast.video.info import VideoInfo


def official_clip_sizes(fps: float, num_frames: int, sampling_rate: int, target_fps: float) -> tuple[float, float]:
    """(clip_size, clip_size2) of the released PyAV path, in source frames (floats, as released).

    clip_size: the segment decoded around each view, ``max(1, ceil(sr·(T−1)/target_fps·fps))``.
    clip_size2: the span the T indices are spread over, ``max(1, sr·T/target_fps·fps)`` (not rounded).
    """
    clip_size = max(1.0, float(math.ceil(sampling_rate * (num_frames - 1) / target_fps * fps)))
    clip_size2 = max(1.0, sampling_rate * num_frames / target_fps * fps)
    return clip_size, clip_size2


def _spread(start: float, end: float, num_frames: int, count: int) -> torch.Tensor:
    """PySlowFast's temporal_sampling: float32 linspace, clamp to [0, count−1], truncate. LongTensor [T]."""
    index = torch.linspace(start, end, num_frames, dtype=torch.float32)
    return torch.clamp(index, 0, count - 1).long()


def _selected_range(start: float, end: float, total: int, pts_per_frame: float | None) -> tuple[int, int]:
    """First and last frame whose timestamp lies in [start, end] (frame units), as PyAV selection does.

    With ``pts_per_frame`` (stream duration / frame count) the bounds are truncated to integer pts
    first, exactly as PySlowFast converts them (``int(start·timebase)``), and frame k sits at pts
    ``k·pts_per_frame``; without it the bounds are exact (the limit of a fine time base).
    """
    if pts_per_frame is None:
        first, last = math.ceil(start), math.floor(end)
    else:
        lo, hi = int(start * pts_per_frame), int(end * pts_per_frame)
        first = max(0, math.ceil(lo / pts_per_frame) - 1)
        while first * pts_per_frame < lo:  # settle float division at the boundary
            first += 1
        last = math.floor(hi / pts_per_frame) + 1
        while last * pts_per_frame > hi:
            last -= 1
    return max(first, 0), min(last, total - 1)


def sample_indices(
    total_frames: int | VideoInfo,
    fps: float | None = None,
    num_frames: int = 8,
    sampling_rate: int = 16,
    target_fps: float = 30,
    num_views: int = 3,
    mode: str = "official",
    duration_known: bool = True,
    pts_per_frame: float | None = None,
) -> torch.Tensor:
    """Frame indices of the V temporal views of a video: LongTensor [num_views, num_frames].

    total_frames: the video's :class:`VideoInfo` (from :func:`stdd_fast.video.probe`: frame count,
    rate, duration and time base all come from it, exactly as the Engine samples), or the frame
    count (the stream header's count when the duration is known, as released; every frame decoded
    otherwise) with ``fps``, the stream's average frame rate, and the keywords below.
    ``mode="official"`` follows STDD-SPEC §6.2 (see the module docstring), with the whole-video
    fallback when ``duration_known`` is False; ``pts_per_frame`` (stream duration / frame count, in
    time-base units) makes the segment bounds truncate to integer pts as PyAV decoding does (it only
    matters for coarse time bases, e.g. AVI's 1/fps). ``mode="uniform"``: T evenly spread segments
    over the whole video. Indices are in presentation order and lie in [0, total_frames).
    """
    if isinstance(total_frames, VideoInfo):
        info = total_frames
        if fps is not None:
            raise ConfigError("sample_indices(info): the frame rate comes from the VideoInfo; drop fps=")
        total_frames, fps = info.num_frames, info.fps
        duration_known, pts_per_frame = info.duration_known, info.pts_per_frame
    if mode not in SAMPLING_MODES:
        raise choice_error("sampling mode", mode, SAMPLING_MODES)
    for name, value in (("num_frames", num_frames), ("sampling_rate", sampling_rate), ("num_views", num_views)):
        check_int(name, value)
    if isinstance(total_frames, bool) or not isinstance(total_frames, int):
        raise ConfigError(f"total_frames={total_frames!r}: must be an int")
    if total_frames < 1:
        raise VideoError(f"cannot sample frames from a video with {total_frames} frames")
    if mode == "uniform":
        # Integer form of floor((t + (v+1)/(V+1)) * N / T): no float rounding at segment borders.
        t = torch.arange(num_frames, dtype=torch.long)
        v = torch.arange(num_views, dtype=torch.long)
        numer = (t[None, :] * (num_views + 1) + v[:, None] + 1) * total_frames  # [V, T]
        return numer // (num_frames * (num_views + 1))
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps={fps!r}: the official sampling needs the video's frame rate (> 0)")
    check_number("target_fps", target_fps, unit="frames per second")
    if pts_per_frame is not None and not pts_per_frame > 0:
        raise ConfigError(f"pts_per_frame={pts_per_frame!r}: must be > 0 or None")

    clip_size, clip_size2 = official_clip_sizes(fps, num_frames, sampling_rate, target_fps)
    views = []
    if duration_known:
        max_start = max(total_frames - clip_size, 0)
        for i in range(num_views):
            start = max_start * i / num_views
            first, last = _selected_range(start, start + clip_size - 1, total_frames, pts_per_frame)
            # The frame after `end` is kept too (PySlowFast's buffer_size=0 decode loop).
            n_dec = last - first + 1 + (1 if last + 1 < total_frames else 0)
            views.append(first + _spread(0, clip_size2 - 1, num_frames, n_dec))
    else:
        max_start = max(total_frames - clip_size2, 0)
        for i in range(num_views):
            start = math.floor(max_start / 2) if num_views == 1 else i * math.floor(max_start / (num_views - 1))
            views.append(_spread(start, start + clip_size2 - 1, num_frames, total_frames))
    return torch.stack(views)  # [V, T]
