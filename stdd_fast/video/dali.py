"""NVIDIA DALI decoding: the sampled frames of many videos per pipeline run, NVDEC on a GPU.

Imported only when a DALI backend is asked for (``import stdd_fast`` never imports DALI). The frame
count and packet index come from the PyAV reader (:func:`stdd_fast.video.pyav.probe`, demux only).

**Which DALI operator.** ``fn.decoders.video`` takes the encoded file from memory and, per sample,
an explicit list of frame indices (``frames=``), so exactly the sampled frames are decoded: no span
is decoded and then subsampled, nothing past the last needed frame. Each distinct index is asked for
once, in increasing order, and the output is gathered back into [V, T]: overlapping views and the
official sampler's repeated last frames would otherwise make the decoder seek backwards (8x slower
on CPU in our measurement). ``fn.experimental.readers.video`` reads files itself and only knows
start/stride sequences, which cannot express the official views (the last index of each view is
clamped). Frame k is the k-th frame in presentation order, as in the PyAV backend.

**What a pipeline run does.** One run decodes up to ``batch_size`` videos (one sample each; the
encoded bytes, the distinct frame indices and, for the transform path, the per-video resize and crop
parameters come in through ``external_source``). Two output modes:

* ``size=None``: uint8 frames [V*T, H, W, 3] per video (``video.decode(..., backend="dali")``);
* ``size=S``: the model input, float32 [V*T, 3, S, S] per video, computed in the pipeline: short side
  to S (``fn.resize``, bilinear, no antialiasing, output in float so nothing is rounded to uint8),
  centre crop at the released offsets ``ceil((H'-S)/2), ceil((W'-S)/2)`` and CLIP mean/std with the
  layout change to channels-first (``fn.crop_mirror_normalize``). On a GPU this is the fast path:
  decoded, resized and normalised on the device, handed to torch by DLPack (no host copy).

**Devices.** A CPU device uses DALI's CPU decoder (libavcodec; VP8, VP9 and MJPEG only). A CUDA
device uses the mixed decoder (NVDEC: H.264, HEVC, VP8, VP9, MJPEG, AV1, MPEG-4 part 2; 4:2:0).

**Equivalence with PyAV.** Frame identity is exact. Pixels: DALI's CPU decoder converts YUV to RGB
with swscale flags ``SWS_BILINEAR | SWS_FULL_CHR_H_INT | SWS_ACCURATE_RND``; PyAV with
``yuv_to_rgb="accurate"`` uses the same and returns identical uint8 frames. PyAV's default (the
released protocol) lets swscale take its fast path for even frame heights, which does not
interpolate chroma, so it differs from DALI at colour edges (mean |diff| 1.5 uint8 levels on camera
footage; odd heights come out identical). NVDEC's conversion is DALI's own CUDA kernel.
The in-pipeline resize/crop/normalise matches :func:`stdd_fast.video.preprocess` on the same uint8
frames within :func:`transform_atol` (CLIP-normalised units; see there).

**Errors.** A DALI run that fails for one video is retried one video at a time, so only the bad
file gets its error (a :class:`~stdd_fast.errors.VideoError` naming it); callers such as the Engine
then fall back to PyAV for that file.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from stdd_fast.checks import check_int
from stdd_fast.deps import require
from stdd_fast.errors import BackendUnavailableError, ConfigError, VideoError
from stdd_fast.video.info import VideoInfo, frame_indices
from stdd_fast.video.pyav import probe
from stdd_fast.video.transforms import CLIP_MEAN, CLIP_STD, crop_offsets, short_side_shape

# Codecs each decoder variant reads (``fn.decoders.video`` documentation, DALI 2.x).
CPU_CODECS: tuple[str, ...] = ("vp8", "vp9", "mjpeg")
GPU_CODECS: tuple[str, ...] = ("h264", "hevc", "vp8", "vp9", "mjpeg", "av1", "mpeg4")
# NVDEC decodes 4:2:0 (8-bit, and 10-bit for HEVC/VP9/AV1); 4:2:2 and 4:4:4 H.264 it does not.
GPU_PIX_FMTS: tuple[str, ...] = ("yuv420p", "yuvj420p", "nv12", "yuv420p10le", "p010le")
# FFmpeg decoder names -> the codec they decode (VideoInfo.codec holds the decoder's name).
_CODEC_OF_DECODER = {"libvpx": "vp8", "libvpx-vp9": "vp9", "libdav1d": "av1", "libaom-av1": "av1", "h265": "hevc"}


def transform_atol(height: int, width: int) -> float:
    """The guaranteed max abs difference of DALI's resize/crop/normalise to the torch transforms.

    In CLIP-normalised units (values span about [-1.8, 2.2]; one uint8 level is about 0.015) for
    frames of ``height`` x ``width``. Both paths are bilinear without antialiasing at the same sample
    positions, in float32; they differ in float rounding: the order of operations (normalise then
    resize vs resize then normalise) and how the source coordinates are computed, an error that grows
    with the coordinates, i.e. with the input size. Measured on uniform noise (the worst case):
    at most 4.5e-7 x max(H, W) (7.4e-4 at 1920x1080 -> 224, 1.4e-4 at 320x240); the bound has a
    margin of 2 or more: 1e-5 + 1e-6 x max(H, W) (2e-3 at 1080p, 0.13 of a uint8 level).
    """
    return 1e-5 + 1e-6 * max(height, width)


def import_dali() -> ModuleType:
    """``nvidia.dali`` with its operator namespace, or BackendUnavailableError saying how to install it."""
    dali = require("dali")
    importlib.import_module("nvidia.dali.fn")  # the operator namespace the pipelines use
    return dali


def canonical_codec(name: str) -> str:
    """The codec a decoder name stands for ("libvpx-vp9" -> "vp9"); other names unchanged."""
    return _CODEC_OF_DECODER.get(name, name)


def device_problem(device: str | torch.device | None) -> str | None:
    """Why DALI cannot run on ``device`` here (not installed, no CUDA), or None when it can."""
    dev = torch.device("cpu" if device is None else device)
    if dev.type not in ("cpu", "cuda"):
        return f"DALI decodes on 'cpu' or 'cuda' devices, not {str(dev)!r}"
    try:
        import_dali()
    except BackendUnavailableError as e:
        return str(e)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"device {str(dev)!r} was asked for but CUDA is not available here"
    return None


def codec_problem(info: VideoInfo, device: str | torch.device | None) -> str | None:
    """Why the DALI decoder for ``device`` cannot read this video's codec, or None when it can."""
    codec = canonical_codec(info.codec)
    if torch.device("cpu" if device is None else device).type == "cuda":
        if codec not in GPU_CODECS:
            return f"codec {codec} is not decoded by NVDEC through DALI (it decodes {', '.join(GPU_CODECS)})"
        if info.pix_fmt and info.pix_fmt not in GPU_PIX_FMTS:
            return f"pixel format {info.pix_fmt}: NVDEC decodes 4:2:0 video only ({', '.join(GPU_PIX_FMTS)})"
        return None
    if codec not in CPU_CODECS:
        return (
            f"codec {codec} is not supported by DALI's CPU decoder (it decodes {', '.join(CPU_CODECS)}; "
            f"NVDEC on a GPU also decodes h264, hevc, av1, mpeg4)"
        )
    return None


@dataclass(frozen=True)
class DaliJob:
    """One video for a DALI run: its encoded bytes and the frames wanted.

    data: uint8 [nbytes], the whole file. indices: LongTensor [V, T] (any shape), presentation order.
    """

    source: str
    data: np.ndarray
    indices: torch.Tensor
    info: VideoInfo

    @classmethod
    def from_file(cls, path: str | Path, indices: torch.Tensor, info: VideoInfo | None = None) -> DaliJob:
        """Read the file and check the indices against its packet index (VideoError naming the file)."""
        info = probe(path) if info is None else info
        idx, lo, hi = frame_indices(indices)
        # DALI pads indices past the end with black frames instead of failing: check them here.
        if lo < 0 or hi >= info.indexed_frames:
            raise VideoError(
                f"{path}: frame index {lo if lo < 0 else hi} is out of range for the "
                f"{info.indexed_frames} frames present (header: {info.num_frames})"
            )
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
        except OSError as e:
            raise VideoError(f"{path}: cannot read the file ({e.strerror or e})") from None
        return cls(str(path), data, idx, info)


class DaliDecoder:
    """A DALI pipeline that decodes up to ``batch_size`` videos per run (one pipeline, reused).

    device: "cpu" (DALI's CPU decoder) or a CUDA device (NVDEC; outputs stay on that GPU).
    size: None returns uint8 frames [V, T, H, W, 3] per video; an int returns the model input
    float32 [V, T, 3, size, size] (resize/crop/normalise in the pipeline; ``mean``/``std`` in 0-1
    units). num_threads: DALI's CPU worker threads. Not thread-safe: one caller at a time (the
    Engine runs it on one dedicated thread, which is what lets decoding overlap the model).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        size: int | None = None,
        batch_size: int = 8,
        num_threads: int = 2,
        mean: tuple[float, ...] = CLIP_MEAN,
        std: tuple[float, ...] = CLIP_STD,
    ) -> None:
        self.device = torch.device(device)
        problem = device_problem(self.device)
        if problem is not None:
            raise BackendUnavailableError(problem)
        check_int("batch_size", batch_size)
        check_int("num_threads", num_threads)
        check_int("size", size, optional=True, hint="None: uint8 frames; else the model's image size")
        self.size, self.batch_size, self.num_threads = size, batch_size, num_threads
        self.mean, self.std = tuple(mean), tuple(std)
        self._pipe = None
        self.runs = 0  # pipeline runs so far (batching shows here)

    # -- the pipeline --------------------------------------------------------------------------------

    def _build(self) -> object:
        dali = import_dali()
        fn, types = dali.fn, dali.types
        gpu = self.device.type == "cuda"
        # exec_dynamic: every output owns its memory, so a DLPack view stays valid after later runs.
        pipe = dali.Pipeline(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=_device_id(self.device),
            prefetch_queue_depth=1,
            exec_dynamic=True,
        )
        with pipe:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
            out = fn.decoders.video(encoded, frames=frames, device="mixed" if gpu else "cpu")  # [F, H, W, 3]
            if self.size is not None:
                geometry = [fn.external_source(name=n, dtype=types.FLOAT, ndim=0) for n in _GEOMETRY]
                out = _transform(fn, types, out, self.size, self.mean, self.std, *geometry)  # [F, 3, S, S]
            pipe.set_outputs(out)
        pipe.build()
        return pipe

    def _run_batch(self, jobs: Sequence[DaliJob]) -> list[torch.Tensor]:
        if self._pipe is None:
            self._pipe = self._build()
        pipe = self._pipe
        pipe.feed_input("encoded", [j.data for j in jobs])
        # Each distinct frame once, in increasing order: the decoder then never seeks backwards
        # (views overlap; the official sampler repeats clamped last frames). Gathered back below.
        wanted = [torch.unique(j.indices.flatten(), sorted=True, return_inverse=True) for j in jobs]
        pipe.feed_input("frames", [u.numpy().astype(np.int32) for u, _ in wanted])
        if self.size is not None:
            params = [_geometry(j.info.height, j.info.width, self.size) for j in jobs]
            for k, name in enumerate(_GEOMETRY):
                pipe.feed_input(name, [np.float32(p[k]) for p in params])
        (out,) = pipe.run()
        self.runs += 1
        tensors = [_to_torch(out[i]) for i in range(len(jobs))]
        results = []
        for job, t, (unique, inverse) in zip(jobs, tensors, wanted, strict=True):
            if t.shape[0] != unique.numel():
                raise VideoError(f"{job.source}: DALI returned {t.shape[0]} frames for the {unique.numel()} asked for")
            frames = t[inverse.to(t.device)]  # [V*T, ...]: a gather on the output's device
            results.append(frames.view(*job.indices.shape, *t.shape[1:]))  # [V, T, ...]
        return results

    def run(self, jobs: Sequence[DaliJob]) -> list[torch.Tensor | VideoError]:
        """Decode the jobs, ``batch_size`` per pipeline run, in order.

        Returns per job uint8 [V, T, H, W, 3] (``size=None``) or float32 [V, T, 3, S, S], on this
        decoder's device, or the VideoError that stopped that job (the others are unaffected).
        """
        out: list[torch.Tensor | VideoError] = []
        for start in range(0, len(jobs), self.batch_size):
            chunk = list(jobs[start : start + self.batch_size])
            try:
                out.extend(self._run_batch(chunk))
            except Exception as e:
                if len(chunk) == 1:
                    out.append(_as_video_error(chunk[0].source, e))
                    self._pipe = None  # rebuild after a failure rather than trust its state
                    continue
                self._pipe = None
                for job in chunk:  # isolate the failing video(s)
                    out.extend(self.run([job]))
        return out

    def close(self) -> None:
        self._pipe = None


_GEOMETRY = ("resize_x", "resize_y", "crop_x", "crop_y")


def _geometry(height: int, width: int, size: int) -> tuple[float, float, float, float]:
    """Resize target and normalised crop position that reproduce the released transforms.

    (resize_x, resize_y) is ``short_side_shape`` (long side floored, as released). DALI places a
    crop at ``crop_pos * (extent - size)``; ``offset / (extent - size)`` lands on the integer offset.
    """
    h2, w2 = short_side_shape(height, width, size)
    y0, x0 = crop_offsets(h2, w2, size)
    cx = x0 / (w2 - size) if w2 > size else 0.0
    cy = y0 / (h2 - size) if h2 > size else 0.0
    return float(w2), float(h2), cx, cy


def _device_id(device: torch.device) -> int | None:
    """DALI's device_id: the CUDA ordinal, None for a CPU-only pipeline."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def _transform(
    fn: ModuleType,
    types: ModuleType,
    frames: object,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    resize_x: object,
    resize_y: object,
    crop_x: object,
    crop_y: object,
) -> object:
    """Pipeline graph: uint8 [F, H, W, 3] -> float32 [F, 3, size, size], CLIP-normalised (DataNodes)."""
    x = fn.resize(
        frames,
        resize_x=resize_x,
        resize_y=resize_y,
        interp_type=types.INTERP_LINEAR,
        antialias=False,  # F.interpolate(bilinear) does not antialias either
        dtype=types.FLOAT,  # keep the resampled values unrounded, as the torch path does
    )  # [F, H', W', 3]
    return fn.crop_mirror_normalize(
        x,
        crop=(size, size),
        crop_pos_x=crop_x,
        crop_pos_y=crop_y,
        mean=[m * 255.0 for m in mean],
        std=[s * 255.0 for s in std],
        output_layout="FCHW",
        dtype=types.FLOAT,
    )  # [F, 3, size, size]


def _to_torch(tensor: object) -> torch.Tensor:
    """A DALI tensor as a torch tensor on the same device, without a host copy.

    DLPack shares the memory (torch passes its current stream, so DALI's work is ordered before
    torch's). If this DALI build's DLPack export fails, copy device-to-device with the torch plugin.
    """
    try:
        return torch.from_dlpack(tensor)
    except (TypeError, RuntimeError, BufferError):
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        device = torch.device("cuda", tensor.device_id()) if hasattr(tensor, "device_id") else torch.device("cpu")
        dst = torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=device)
        feed_ndarray(tensor, dst, cuda_stream=torch.cuda.current_stream(device) if device.type == "cuda" else None)
        return dst


def _as_video_error(source: str, e: BaseException) -> VideoError:
    if isinstance(e, VideoError):
        return e
    # DALI's message repeats the pipeline traceback: keep the operator's own words.
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("Assert")), None) or (lines[-1] if lines else "")
    err = VideoError(f"{source}: DALI could not decode it ({type(e).__name__}: {detail[:300]})")
    err.__cause__ = e
    return err


# -- functional API (one cached decoder per device and mode) -------------------------------------------

_CACHE: dict[tuple, tuple[DaliDecoder, threading.Lock]] = {}
_CACHE_LOCK = threading.Lock()


def _shared(device: torch.device, size: int | None) -> tuple[DaliDecoder, threading.Lock]:
    key = (str(device), size)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = (DaliDecoder(device, size=size, batch_size=1), threading.Lock())
        return _CACHE[key]


def decode_frames(
    path: str | Path,
    indices: torch.Tensor,
    info: VideoInfo | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The frames of ``path`` at ``indices`` decoded by DALI: uint8 [..., H, W, 3] on ``device``.

    indices: LongTensor of any shape ([V, T] from the sampler). device None or CPU: DALI's CPU decoder
    (VP8, VP9, MJPEG); CUDA: NVDEC. ``info``: the file's :func:`probe` result if already known.
    Raises BackendUnavailableError (no DALI / no CUDA) or VideoError (codec, corrupt data, range).
    """
    dev = torch.device("cpu" if device is None else device)
    problem = device_problem(dev)
    if problem is not None:
        raise BackendUnavailableError(problem)
    info = probe(path) if info is None else info
    problem = codec_problem(info, dev)
    if problem is not None:
        raise VideoError(f"{path}: {problem}; decode it with backend='pyav'")
    job = DaliJob.from_file(path, indices, info)
    decoder, lock = _shared(dev, None)
    with lock:
        (out,) = decoder.run([job])
    if isinstance(out, VideoError):
        raise out
    return out


def preprocess_in_pipeline(
    frames: torch.Tensor,
    size: int,
    device: str | torch.device | None = None,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
) -> torch.Tensor:
    """DALI's in-pipeline transforms on decoded frames: uint8 [V, T, H, W, 3] -> float32 [V, T, 3, S, S].

    The same operators as the GPU fast path (``fn.resize`` + ``fn.crop_mirror_normalize``), for
    frames already in memory; equals :func:`stdd_fast.video.preprocess` within :func:`transform_atol`.
    Runs on ``device`` (None: CPU).
    """
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ConfigError(f"expected uint8 frames [V, T, H, W, 3]; got {frames.dtype} {tuple(frames.shape)}")
    dev = torch.device("cpu" if device is None else device)
    problem = device_problem(dev)
    if problem is not None:
        raise BackendUnavailableError(problem)
    dali = import_dali()
    fn, types = dali.fn, dali.types
    v, t, h, w, _ = frames.shape
    gpu = dev.type == "cuda"
    pipe = dali.Pipeline(
        batch_size=1,
        num_threads=1,
        device_id=_device_id(dev),
        prefetch_queue_depth=1,
        exec_dynamic=True,
    )
    with pipe:
        x = fn.external_source(name="frames", dtype=types.UINT8, ndim=4, layout="FHWC", device="gpu" if gpu else "cpu")
        geometry = [fn.external_source(name=n, dtype=types.FLOAT, ndim=0) for n in _GEOMETRY]
        pipe.set_outputs(_transform(fn, types, x, size, tuple(mean), tuple(std), *geometry))
    pipe.build()
    flat = frames.reshape(v * t, h, w, 3).to(dev).contiguous()  # [F, H, W, 3]
    pipe.feed_input("frames", [flat if gpu else flat.numpy()])
    for k, name in enumerate(_GEOMETRY):
        pipe.feed_input(name, [np.float32(_geometry(h, w, size)[k])])
    (out,) = pipe.run()
    return _to_torch(out[0]).reshape(v, t, 3, size, size)


def timed_run(decoder: DaliDecoder, jobs: Sequence[DaliJob]) -> tuple[list[torch.Tensor | VideoError], float]:
    """``decoder.run(jobs)`` and its wall seconds, synchronised on a GPU (for benchmarks)."""
    start = time.perf_counter()
    out = decoder.run(jobs)
    if decoder.device.type == "cuda":
        torch.cuda.synchronize(decoder.device)
    return out, time.perf_counter() - start
