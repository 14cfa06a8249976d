"""Decoding the sampled frames with PyAV: exact frame identity, seek to a keyframe, decode forward.

A :class:`VideoReader` holds one container per video. Opening it indexes the video stream's
packets (demux only, no decoding): sorting their pts gives the presentation order, so frame ``k``
is the k-th frame a full sequential decode would return, also for variable frame rate. Reading
indices then seeks to the nearest keyframe before each needed run of frames and decodes forward,
continuing instead of seeking when the next frame is closer than the next keyframe. Streams whose
packets carry no usable pts are decoded sequentially from the start.

Every failure is a :class:`~stdd_fast.errors.VideoError` naming the file: missing, not a video, no
video stream, no frames, corrupt or truncated data, an index out of range.

Two backends return the same frames (same indices, same presentation order): ``"pyav"`` (this module)
and ``"dali"`` (:mod:`stdd_fast.video.dali`, NVIDIA DALI, imported only when asked for). They differ in
the YUV -> RGB conversion only: PyAV's default is FFmpeg's default (what the released loader's
``frame.to_rgb()`` gives); ``yuv_to_rgb="accurate"`` asks PyAV for the conversion DALI's CPU decoder
uses, and then the two are bit-identical (see :data:`YUV_TO_RGB`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from stdd_fast.errors import ConfigError, VideoError, choice_error

Backend = Literal["pyav", "dali"]
BACKENDS: tuple[str, ...] = get_args(Backend)
# What an Engine accepts: a backend, or "auto" (DALI on a GPU for the codecs NVDEC decodes, else PyAV).
DecodeChoice = Literal["auto", "pyav", "dali"]
DECODE_CHOICES: tuple[str, ...] = get_args(DecodeChoice)
# YUV -> RGB conversion of the PyAV backend. "default": FFmpeg's default swscale conversion, as the
# released loader's frame.to_rgb() (for even-height 4:2:0 swscale takes its fast unscaled path, which
# does not interpolate chroma). "accurate": SWS_BILINEAR | SWS_FULL_CHR_H_INT |
# SWS_ACCURATE_RND, chroma interpolated to full resolution with exact rounding: the flags DALI's CPU
# video decoder passes to swscale, so PyAV then returns DALI's pixels bit for bit.
YuvToRgb = Literal["default", "accurate"]
YUV_TO_RGB: tuple[str, ...] = get_args(YuvToRgb)
_REWIND = object()  # seek target meaning "the start of the file"


def check_backend(backend: str, allow_auto: bool = False) -> str:
    """Validate a decode backend name ("pyav" | "dali"; also "auto" when ``allow_auto``)."""
    valid = DECODE_CHOICES if allow_auto else BACKENDS
    if backend not in valid:
        raise choice_error("decode backend", backend, valid)
    return backend


def frame_indices(indices) -> tuple[torch.Tensor, int, int]:
    """Integer frame indices as a tensor, with their min and max (ConfigError for float, bool or none)."""
    idx = torch.as_tensor(indices)
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ConfigError(f"frame indices must be integers; got dtype {idx.dtype}")
    if idx.numel() == 0:
        raise ConfigError("no frame indices given")
    return idx, int(idx.min()), int(idx.max())


def _sws_flags(yuv_to_rgb: str) -> int | None:
    """The swscale flags PyAV's reformatter gets for a conversion (None: PyAV's default)."""
    if yuv_to_rgb not in YUV_TO_RGB:
        raise choice_error("yuv_to_rgb conversion", yuv_to_rgb, YUV_TO_RGB)
    if yuv_to_rgb == "default":
        return None
    from av.video.reformatter import Interpolation

    return int(Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND)


@dataclass(frozen=True)
class VideoInfo:
    """What sampling needs to know about a video stream, read from its header and packet index.

    num_frames: the frame count sampling uses: the header's count when the stream has a duration
    (as the released loader does), else the frames actually present. indexed_frames: frames present
    in the file (packets with data). duration: stream duration in ``time_base`` units, None when
    the stream does not declare one (the released loader then decodes the whole video).
    """

    path: str
    num_frames: int
    indexed_frames: int
    fps: float
    duration: int | None
    time_base: Fraction | None
    width: int
    height: int
    codec: str
    pix_fmt: str = ""  # the decoder's pixel format (e.g. "yuv420p"), "" when the header does not say

    @property
    def duration_known(self) -> bool:
        return self.duration is not None

    @property
    def pts_per_frame(self) -> float | None:
        """Stream duration / frame count (PySlowFast's ``timebase``), None without a duration."""
        if self.duration is None or self.num_frames < 1:
            return None
        return self.duration / self.num_frames


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError, ValueError)


def check_decoder_threads(threads: object, name: str = "threads") -> None:
    """FFmpeg decoder threads: None (FFmpeg's default) or an int >= 0 (0 = one per core)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ConfigError(f"{name}={threads!r}: must be None or an int >= 0 (0 = one per core)")


class VideoReader:
    """One open video (PyAV container) that returns frames by presentation index.

    ``threads``: decoder threads (None: FFmpeg's default). ``yuv_to_rgb``: the RGB conversion (see
    :data:`YUV_TO_RGB`; "default" is the released protocol's). Use as a context manager or call
    :meth:`close`.
    """

    def __init__(self, path: str | Path, threads: int | None = None, yuv_to_rgb: str = "default") -> None:
        self.path = str(path)
        self._sws = _sws_flags(yuv_to_rgb)
        p = Path(path)
        if not p.exists():
            raise VideoError(f"{self.path}: no such file")
        if p.is_dir():
            raise VideoError(f"{self.path}: is a directory, not a video file")
        check_decoder_threads(threads)
        import av

        try:
            self._container = av.open(self.path, metadata_errors="ignore")
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
        idx, lo, hi = frame_indices(indices)
        if lo < 0 or hi >= self.info.num_frames:
            raise VideoError(
                f"{self.path}: frame index {lo if lo < 0 else hi} is out of range for a video of "
                f"{self.info.num_frames} frames; sample indices with this video's frame count"
            )
        wanted = sorted(set(idx.flatten().tolist()))
        got = self._read_seeking(wanted) if self._seekable else self._read_sequential(wanted)
        try:
            frames = np.stack([got[k] for k in idx.flatten().tolist()])  # [n, H, W, 3]
        except ValueError:
            raise VideoError(f"{self.path}: the frame size changes within the video; re-encode it") from None
        return torch.from_numpy(frames).view(*idx.shape, *frames.shape[1:])  # [..., H, W, 3]

    def _missing(self, k: int) -> VideoError:
        detail = "; ".join(self._decode_errors[:2]) or self._scan_error or "no frame was produced"
        return VideoError(
            f"{self.path}: frame {k} of {self.info.num_frames} could not be decoded "
            f"(only {self.info.indexed_frames} frames present; {detail}): the file is truncated or corrupt"
        )

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
        """A decoded frame as uint8 RGB [H, W, 3], with this reader's YUV -> RGB conversion."""
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

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(e: BaseException) -> str:
    """A short cause for a message: FFmpeg's own words without the errno and the repeated file name."""
    text = (getattr(e, "strerror", None) or str(e)).strip() or type(e).__name__
    return text if len(text) < 200 else text[:197] + "..."


def probe(path: str | Path) -> VideoInfo:
    """Header and packet-index facts of a video (frame count, fps, duration, size) without decoding."""
    with VideoReader(path) as reader:
        return reader.info


def decode(
    path: str | Path,
    indices: torch.Tensor,
    backend: str = "pyav",
    threads: int | None = None,
    yuv_to_rgb: str | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The frames of ``path`` at ``indices`` (presentation order), e.g. from :func:`sample_indices`.

    indices: LongTensor of any shape, typically [V, T]. Returns uint8 [..., H, W, 3] RGB, the frames
    a full sequential decode returns at those positions. Raises VideoError naming the file.

    ``backend="pyav"`` decodes on the CPU (``threads`` decoder threads; ``yuv_to_rgb`` "default" or
    "accurate", see :data:`YUV_TO_RGB`) and moves the frames to ``device`` if one is given.
    ``backend="dali"`` decodes with NVIDIA DALI: the CPU variant (VP8, VP9, MJPEG) when ``device`` is
    None or CPU, NVDEC when ``device`` is a CUDA device (the frames stay there; no host copy). Raises
    BackendUnavailableError without DALI or CUDA, VideoError for a codec that variant cannot decode.
    """
    check_backend(backend)
    if backend == "dali":
        if yuv_to_rgb is not None:
            raise ConfigError(
                f"yuv_to_rgb={yuv_to_rgb!r} applies to backend='pyav' only: DALI converts with its own "
                "decoder (its CPU variant equals PyAV's yuv_to_rgb='accurate')"
            )
        from stdd_fast.video import dali

        return dali.decode_frames(path, indices, device=device)
    with VideoReader(path, threads=threads, yuv_to_rgb=yuv_to_rgb or "default") as reader:
        frames = reader.read(indices)
    return frames if device is None else frames.to(device)
