"""Decoding sampled frames with either reader: PyAV (:mod:`~stdd_fast.video.pyav`) or DALI (``.dali``).

The one place that knows both decoders; the DALI module is imported only when it is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from stdd_fast.errors import ConfigError
from stdd_fast.video.config import SamplingConfig, check_backend
from stdd_fast.video.info import VideoInfo
from stdd_fast.video.pyav import VideoReader, probe
from stdd_fast.video.transforms import preprocess


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
    "accurate", see :mod:`stdd_fast.video.pyav`) and moves the frames to ``device`` if one is given.
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


@dataclass(frozen=True)
class DecodedClips:
    """The sampled frames of one video. frames: uint8 [V, T, H, W, 3]; indices: LongTensor [V, T]."""

    frames: torch.Tensor
    indices: torch.Tensor
    info: VideoInfo


def read_clips(
    path: str | Path,
    sampling: SamplingConfig = SamplingConfig(),
    backend: str = "pyav",
    threads: int | None = None,
    device: str | torch.device | None = None,
) -> DecodedClips:
    """Sample and decode the views of one video: frames uint8 [V, T, H, W, 3].

    ``backend="pyav"``: one open container (demux index, seek, decode). ``backend="dali"``: the
    packet index from PyAV (no decoding), the frames from DALI on ``device`` (None: its CPU variant;
    a CUDA device: NVDEC, frames left on the GPU).
    """
    check_backend(backend)
    if backend == "dali":
        info = probe(path)
        idx = sampling.indices(info)
        return DecodedClips(decode(path, idx, "dali", device=device), idx, info)
    with VideoReader(path, threads=threads) as reader:
        idx = sampling.indices(reader.info)
        frames = reader.read(idx)
    return DecodedClips(frames if device is None else frames.to(device), idx, reader.info)


def load_clips(
    path: str | Path,
    num_frames: int = 8,
    sampling_rate: int = 16,
    target_fps: float = 30,
    num_views: int = 3,
    mode: str = "official",
    size: int = 224,
    device: str | torch.device | None = None,
    backend: str = "pyav",
    threads: int | None = None,
) -> torch.Tensor:
    """The released test protocol end to end: float32 [V, T, 3, size, size], CLIP-normalised.

    ``size`` is the model's input side (``model.arch.image_size``); ``device`` where the transforms
    run (None: CPU; with ``backend="dali"`` also where DALI decodes). Raises VideoError naming the file.
    """
    sampling = SamplingConfig(num_frames, sampling_rate, target_fps, num_views, mode)
    decode_device = device if backend == "dali" else None
    return preprocess(read_clips(path, sampling, backend, threads, decode_device).frames, size, device)
