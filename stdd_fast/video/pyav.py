"""The PyAV reader: exact frame identity, seek to a keyframe, decode forward.

A :class:`VideoReader` holds one container per video. Opening it indexes the video stream's
packets (demux only, no decoding): sorting their pts gives the presentation order, so frame ``k``
is the k-th frame a full sequential decode would return, also for variable frame rate. Reading
indices then seeks to the nearest keyframe before each needed run of frames and decodes forward,
continuing instead of seeking when the next frame is closer than the next keyframe. Streams whose
packets carry no usable pts are decoded sequentially from the start.

Every failure is a :class:`~stdd_fast.errors.VideoError` naming the file: missing, not a video, no
video stream, no frames, corrupt or truncated data, an index out of range.

This reader and the DALI one (:mod:`stdd_fast.video.dali`) return the same frames (same indices, same
presentation order); :mod:`stdd_fast.video.decoding` chooses between them. They differ in the YUV ->
RGB conversion only: PyAV's default is FFmpeg's default (what the released loader's
``frame.to_rgb()`` gives); ``yuv_to_rgb="accurate"`` asks PyAV for the conversion DALI's CPU decoder
uses, and then the two are bit-identical (see ``YUV_TO_RGB`` below).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from stdd_fast.choices import YUV_TO_RGB
from stdd_fast.errors import VideoError, choice_error
from stdd_fast.video.config import check_decoder_threads
from stdd_fast.video.info import VideoInfo, frame_indices

# YUV -> RGB conversion. "default": FFmpeg's default swscale conversion, as the released loader's
# frame.to_rgb() (for even-height 4:2:0 swscale takes its fast unscaled path, which does not
# interpolate chroma). "accurate": SWS_BILINEAR | SWS_FULL_CHR_H_INT | SWS_ACCURATE_RND, chroma
# interpolated to full resolution with exact rounding: the flags DALI's CPU video decoder passes to
# swscale, so PyAV then returns DALI's pixels bit for bit.
_REWIND = object()  # seek target meaning "the start of the file"
# What the decoder holds besides the frames a read keeps, in frames of the decoded size: up to 16
# reference frames (H.264's and HEVC's most; a header may claim them all), two per frame-threading
# thread (measured: 8 threads held 17 frames of a 4096x4096 stream) and the one being converted.
REFERENCE_FRAMES = 16
UNKNOWN_PIXEL_BYTES = 6  # a decoder format the header does not name: as much as 16-bit 4:4:4
# FFmpeg decodes a first frame while it reads a header, to learn the pixel format: a claimed frame
# at most this big (4K) is worth that; a bigger claim is read without decoding (format unknown).
PROBE_FRAME_BYTES = 64 * 2**20
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _sws_flags(yuv_to_rgb: str) -> int | None:
    """The swscale flags PyAV's reformatter gets for a conversion (None: PyAV's default)."""
    if yuv_to_rgb not in YUV_TO_RGB:
        raise choice_error("yuv_to_rgb conversion", yuv_to_rgb, YUV_TO_RGB)
    if yuv_to_rgb == "default":
        return None
    from av.video.reformatter import Interpolation

    return int(Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND)


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError, ValueError)


def decoded_frame_bytes(pix_fmt: str, width: int, height: int) -> int:
    """Bytes of one frame as the decoder holds it: its pixel format's planes at this size."""
    import av

    try:
        planes = av.VideoFormat(pix_fmt, width, height).components
    except (ValueError, TypeError):
        return UNKNOWN_PIXEL_BYTES * width * height
    return sum(c.width * c.height * math.ceil(c.bits / 8) for c in planes)


def frame_threads(threads: int | None) -> int:
    """Threads decoding frames in parallel (each holds frames): none with FFmpeg's default slice threading."""
    if threads is None:
        return 0
    return threads or os.cpu_count() or 1


def decode_bytes(info: VideoInfo, distinct: int, threads: int | None) -> tuple[int, int]:
    """What reading ``distinct`` frames of ``info``'s video costs at most: (RGB frames kept, the decoder's frames).

    Both at the header's size; the decoder's share is freed before the kept frames are transformed,
    and it exceeds the float copy of one frame the transforms make then (12 bytes a pixel).
    """
    width, height = max(info.width, 1), max(info.height, 1)
    held = REFERENCE_FRAMES + 2 * frame_threads(threads) + 1
    return distinct * info.frame_bytes, held * decoded_frame_bytes(info.pix_fmt, width, height)


def check_regular_file(path: str | Path) -> None:
    """VideoError unless ``path`` is an existing regular file (FIFOs, devices and sockets would block a read)."""
    if isinstance(path, str) and _URL.match(path):
        raise VideoError(
            f"{path}: a URL; classify reads video files (download it first): read URLs and live sources with "
            "`stdd stream` / Engine.stream"
        )
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise VideoError(f"{p}: no such file") from None
    except OSError as e:
        raise VideoError(f"{p}: cannot read it ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise VideoError(f"{p}: is a directory, not a video file")
    if not stat.S_ISREG(mode):
        raise VideoError(
            f"{p}: not a regular file (a FIFO, device or socket), which could block the reader forever; "
            "pass a video file, or read live sources with Engine.stream"
        )


class _Budget:
    """What one read of a :class:`VideoReader` holds, against ``max_bytes`` (None: no bound): the RGB frames it keeps
    (``held`` bytes) and the decoder's frames; a decoded frame larger than the header said is checked at its size."""

    def __init__(self, path: str, info: VideoInfo, max_bytes: int | None, threads: int | None) -> None:
        self.path, self.info, self.max_bytes, self.threads = path, info, max_bytes, threads
        self.held = 0
        self._largest = info.width * info.height  # the largest frame size checked so far

    def check(self, kept: int, decoder: int, size: tuple[int, int] | None = None) -> None:
        """VideoError when ``kept`` bytes of RGB frames and ``decoder`` bytes of decoder frames exceed the budget."""
        if self.max_bytes is None or kept + decoder <= self.max_bytes:
            return
        width, height = size or (max(self.info.width, 1), max(self.info.height, 1))
        frames, fmt, mib = kept // (width * height * 3), self.info.pix_fmt or "pixel format unknown", 2**20
        raise VideoError(
            f"{self.path}: decoding it needs about {(kept + decoder) / mib:.0f} MiB ({frames} sampled {width}x{height} "
            f"frames as RGB: {kept / mib:.0f} MiB; the decoder's frames on the way, {fmt}: {decoder / mib:.0f} MiB), "
            f"more than the decode memory budget of {self.max_bytes / mib:.0f} MiB; raise "
            "DecodeConfig(frame_budget_mb=...) (stdd: --frame-budget-mb) if this file is what you meant"
        )

    def check_frame(self, frame: object) -> None:
        """A decoded frame larger than the header said (a size change mid-stream): the budget at its size."""
        width, height = frame.width, frame.height
        if width * height <= self._largest:
            return
        self._largest = width * height
        real = dataclasses.replace(self.info, width=width, height=height, pix_fmt=frame.format.name)
        self.check(self.held + width * height * 3, decode_bytes(real, 0, self.threads)[1], (width, height))

    def keep(self, frame: object) -> None:
        """Count a frame converted to RGB (a header may understate its size)."""
        self.held += frame.width * frame.height * 3
        self.check(self.held, 0, (frame.width, frame.height))


class VideoReader:
    """One open video (PyAV container) that returns frames by presentation index.

    ``threads``: decoder threads (None: FFmpeg's default). ``yuv_to_rgb``: the RGB conversion
    ("default" is the released protocol's). ``max_bytes``: the most one read may hold, its RGB frames
    and the decoder's frames (:func:`decode_bytes`; None: no bound); a read that would need more
    fails before decoding. Only regular files are opened (a FIFO or device would block the reader:
    live sources go through :mod:`stdd_fast.stream`). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self, path: str | Path, threads: int | None = None, yuv_to_rgb: str = "default", max_bytes: int | None = None
    ) -> None:
        self.path = str(path)
        self._sws = _sws_flags(yuv_to_rgb)
        self.max_bytes = max_bytes
        check_regular_file(path)
        check_decoder_threads(threads)
        try:
            self._container = _open_container(self.path)
        except _av_errors() as e:
            raise VideoError(f"{self.path}: not a video file FFmpeg can read ({_reason(e)})") from None
        self._decode_errors: list[str] = []
        self._scan_error = ""
        self.frames_decoded = 0  # frames the decoder produced so far (what seeking saves shows here)
        try:
            self._open_stream(threads)
        except BaseException:
            self._container.close()
            raise

    def _open_stream(self, threads: int | None) -> None:
        streams = self._container.streams
        if not streams.video:
            kinds = sorted({s.type for s in streams}) or ["none"]
            raise VideoError(f"{self.path}: has no video stream (streams: {', '.join(kinds)})")
        stream = streams.video[0]
        if threads is not None:
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
        self._stream = stream
        pts, key_pos = self._scan()
        if not pts:
            raise VideoError(f"{self.path}: the video stream has no frames")
        # Presentation order; unusable timestamps (missing, duplicated) force sequential decoding.
        self._seekable = all(p is not None for p in pts) and len(set(pts)) == len(pts)
        if self._seekable:
            order = sorted(range(len(pts)), key=lambda i: pts[i])
            self._index_of_pts = {pts[i]: k for k, i in enumerate(order)}
            # Seek targets are keyframe pts: FFmpeg's MP4 and Matroska demuxers index seeks by pts.
            keys = sorted((self._index_of_pts[pts[i]], pts[i]) for i in key_pos)
            self._key_index = [k for k, _ in keys]
            self._key_ts = [ts for _, ts in keys]
            self._seekable = bool(keys)
        self.info = self._make_info(len(pts))
        self._budget = _Budget(self.path, self.info, self.max_bytes, threads)

    def _scan(self) -> tuple[list[int | None], list[int]]:
        """Demux (no decoding) the video stream: the pts of each packet, and which packets are keyframes."""
        pts: list[int | None] = []
        key_pos: list[int] = []
        try:
            for packet in self._container.demux(self._stream):
                # Skip the flush packet at the end, and packets an edit list marks for discarding
                # (the decoder drops their frames, so they have no presentation index).
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.is_keyframe:
                    key_pos.append(len(pts))
                pts.append(packet.pts)
        except _av_errors() as e:
            if not pts:
                raise VideoError(f"{self.path}: corrupt video data ({_reason(e)})") from None
            # A damaged tail: keep the packets read so far; reading a frame past them fails clearly.
            self._scan_error = _reason(e)
        return pts, key_pos

    def _make_info(self, indexed: int) -> VideoInfo:
        s = self._stream
        duration = s.duration
        header = s.frames or 0
        num_frames = header if (duration is not None and header > 0) else indexed
        return VideoInfo(
            path=self.path,
            num_frames=num_frames,
            indexed_frames=indexed,
            fps=self._frame_rate(indexed),
            duration=duration,
            time_base=s.time_base,
            width=s.codec_context.width,
            height=s.codec_context.height,
            codec=s.codec_context.name,
            pix_fmt=s.codec_context.pix_fmt or "",
        )

    def _frame_rate(self, indexed: int) -> float:
        s = self._stream
        for rate in (s.average_rate, s.guessed_rate):
            if rate and float(rate) > 0:
                return float(rate)
        if self._seekable and indexed > 1 and s.time_base:
            span = (max(self._index_of_pts) - min(self._index_of_pts)) * s.time_base
            if span > 0:
                return float((indexed - 1) / span)
        return 30.0  # no rate anywhere (a single frame): any value samples the same frames

    # -- reading ----------------------------------------------------------------------------------

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        """The frames at ``indices`` (any shape [...], presentation order): uint8 [..., H, W, 3] RGB."""
        frames, inverse = self.read_distinct(indices)
        return frames[inverse]  # [..., H, W, 3]

    def read_distinct(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each distinct frame of ``indices`` once: (uint8 [U, H, W, 3] in increasing index order, inverse).

        ``frames[inverse]`` is :meth:`read`'s result ([..., H, W, 3]); views overlap and the official
        sampler repeats clamped frames, so U is often well below the number of indices.
        """
        idx, lo, hi = frame_indices(indices)
        if lo < 0 or hi >= self.info.num_frames:
            raise VideoError(
                f"{self.path}: frame index {lo if lo < 0 else hi} is out of range for a video of "
                f"{self.info.num_frames} frames; sample indices with this video's frame count"
            )
        unique, inverse = torch.unique(idx, sorted=True, return_inverse=True)
        wanted = unique.tolist()
        self._budget.check(*decode_bytes(self.info, len(wanted), self._budget.threads))
        self._budget.held = 0
        got = self._read_seeking(wanted) if self._seekable else self._read_sequential(wanted)
        frames = np.empty((len(wanted), *got[wanted[0]].shape), np.uint8)  # [U, H, W, 3]
        for i, k in enumerate(wanted):  # each decoded frame freed as it is copied: one extra frame at most
            frame = got.pop(k)
            if frame.shape != frames.shape[1:]:
                raise VideoError(f"{self.path}: the frame size changes within the video; re-encode it")
            frames[i] = frame
        return torch.from_numpy(frames), inverse

    def _missing(self, k: int) -> VideoError:
        if k >= self.info.indexed_frames:
            why = f"the header counts {self.info.num_frames} frames but only {self.info.indexed_frames} have data"
        else:
            why = "; ".join(self._decode_errors[:2]) or self._scan_error or "the decoder produced no frame for it"
        return VideoError(f"{self.path}: frame {k} could not be decoded ({why}): the file is truncated or corrupt")

    def _decoded_from(self, seek_ts: int | object) -> Iterator[object]:
        """Frames decoded forward from the keyframe at or before ``seek_ts`` (or the start); bad packets skipped."""
        if seek_ts is _REWIND:
            self._container.seek(0)  # the packet index scan left the demuxer at the end
        else:
            self._container.seek(seek_ts, backward=True, any_frame=False, stream=self._stream)
        errors = _av_errors()
        for packet in self._container.demux(self._stream):
            try:
                frames = packet.decode()  # the final empty packet flushes the decoder
            except errors as e:
                self._decode_errors.append(_reason(e))
                continue
            for frame in frames:
                self.frames_decoded += 1
                self._budget.check_frame(frame)
                yield frame

    def _read_seeking(self, wanted: list[int]) -> dict[int, np.ndarray]:
        got: dict[int, np.ndarray] = {}
        wanted_set = set(wanted)
        frames: Iterator[object] | None = None  # the open forward decode
        pos = -1  # presentation index of the last frame it produced
        for k in wanted:
            if k in got:
                continue
            key = max(bisect.bisect_right(self._key_index, k) - 1, 0)  # nearest keyframe at or before k
            # Keep decoding forward unless k was passed or a keyframe lies between here and k.
            if frames is not None and (pos >= k or self._key_index[key] > pos):
                frames = None
            while True:
                seeked = frames is None
                if seeked:
                    frames, pos = self._decoded_from(self._key_ts[key]), -1
                floor = self._key_index[key] if seeked else pos + 1
                first = None
                for frame in frames:
                    j = self._index_of_pts.get(frame.pts)
                    if j is None:  # decoder timestamps that match no packet: count frames instead
                        return self._read_sequential(wanted)
                    if j < floor:  # frames before the keyframe (e.g. open-GOP leading pictures)
                        continue
                    first = j if first is None else first
                    pos = j
                    if j in wanted_set and j not in got:
                        got[j] = self._rgb(frame)
                    if j >= k:
                        break
                if k in got:
                    break
                if seeked and first is not None and first > k:
                    # The demuxer landed after k (seek imprecision): back off one keyframe.
                    if key == 0:
                        return self._read_sequential(wanted)
                    key, frames = key - 1, None
                    continue
                raise self._missing(k)
        return got

    def _rgb(self, frame: object) -> np.ndarray:
        """A decoded frame as uint8 RGB [H, W, 3], with this reader's YUV -> RGB conversion.

        The decoded size is checked against the budget too: a header may understate it.
        """
        self._budget.keep(frame)
        if self._sws is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", interpolation=self._sws)

    def _read_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode from the first frame, counting frames in output order (for streams without usable pts)."""
        got: dict[int, np.ndarray] = {}
        wanted_set, last = set(wanted), wanted[-1]
        for j, frame in enumerate(self._decoded_from(_REWIND)):
            if j in wanted_set:
                got[j] = self._rgb(frame)
            if j >= last:
                break
        for k in wanted:
            if k not in got:
                raise self._missing(k)
        return got

    def close(self) -> None:
        self._container.close()
        self._stream = None  # its codec context holds the decoder's frames until it is freed

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_container(path: str):
    """The container of ``path``, its header read without decoding a frame bigger than PROBE_FRAME_BYTES."""
    import av

    container = av.open(path, metadata_errors="ignore", options={"skip_frame": "all"})
    video = container.streams.video
    if video and video[0].codec_context.width * video[0].codec_context.height * UNKNOWN_PIXEL_BYTES > PROBE_FRAME_BYTES:
        return container
    container.close()
    return av.open(path, metadata_errors="ignore")


def _reason(e: BaseException) -> str:
    """A short cause for a message: FFmpeg's own words without the errno and the repeated file name."""
    text = (getattr(e, "strerror", None) or str(e)).strip() or type(e).__name__
    return text if len(text) < 200 else text[:197] + "..."


def probe(path: str | Path) -> VideoInfo:
    """Header and packet-index facts of a video (frame count, fps, duration, size) without decoding."""
    with VideoReader(path) as reader:
        return reader.info
