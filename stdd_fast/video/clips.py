"""From a video file to model input: sampling config, one reader per video, transforms."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from stdd_fast.errors import ConfigError, choice_error
from stdd_fast.video.decode import VideoInfo, VideoReader, check_backend, probe
from stdd_fast.video.sampling import SAMPLING_MODES, SamplingMode, check_target_fps, sample_indices
from stdd_fast.video.transforms import preprocess


@dataclass(frozen=True)
class SamplingConfig:
    """How frames are sampled from a video (defaults: the released test protocol, STDD-SPEC §6).

    num_frames T per view, sampling_rate in frames at ``target_fps``, num_views V temporal views,
    mode ``"official"`` or ``"uniform"`` (see :func:`~stdd_fast.video.sample_indices`).
    """

    num_frames: int = 8
    sampling_rate: int = 16
    target_fps: float = 30
    num_views: int = 3
    mode: SamplingMode = "official"

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise choice_error("sampling mode", self.mode, SAMPLING_MODES)
        for name in ("num_frames", "sampling_rate", "num_views"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: must be an int >= 1")
        check_target_fps(self.target_fps)

    def indices(self, info: VideoInfo) -> torch.Tensor:
        """Frame indices of this video's views: LongTensor [num_views, num_frames]."""
        return sample_indices(
            info.num_frames,
            info.fps,
            num_frames=self.num_frames,
            sampling_rate=self.sampling_rate,
            target_fps=self.target_fps,
            num_views=self.num_views,
            mode=self.mode,
            duration_known=info.duration_known,
            pts_per_frame=info.pts_per_frame,
        )


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
        from stdd_fast.video import dali

        info = probe(path)
        idx = sampling.indices(info)
        return DecodedClips(dali.decode_frames(path, idx, info=info, device=device), idx, info)
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
