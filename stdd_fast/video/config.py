"""How videos become clips, as settings: which frames (:class:`SamplingConfig`), how they are decoded
(:class:`DecodeConfig`). Frozen, validated, torch-free: the command line and ``stdd batch`` build and
check them before anything heavy is imported."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stdd_fast.checks import check_choice, check_int, check_number
from stdd_fast.choices import DECODE_BACKENDS, DECODE_CHOICES, SAMPLING_MODES, DecodeChoice, SamplingMode

if TYPE_CHECKING:
    import torch

    from stdd_fast.video.info import VideoInfo


def check_backend(backend: str, allow_auto: bool = False) -> str:
    """Validate a decode backend name ("pyav" | "dali"; also "auto" when ``allow_auto``)."""
    return check_choice("decode backend", backend, DECODE_CHOICES if allow_auto else DECODE_BACKENDS)


def check_target_fps(target_fps: object) -> float:
    """``target_fps`` must be a finite number > 0 (the rate ``sampling_rate`` counts frames at)."""
    return check_number("target_fps", target_fps, unit="frames per second")


def check_decoder_threads(threads: object, name: str = "threads") -> int | None:
    """FFmpeg decoder threads: None (FFmpeg's default) or an int >= 0 (0 = one per core)."""
    return check_int(name, threads, low=0, optional=True)


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
        check_choice("sampling mode", self.mode, SAMPLING_MODES)
        for name in ("num_frames", "sampling_rate", "num_views"):
            check_int(name, getattr(self, name))
        check_target_fps(self.target_fps)

    def indices(self, info: VideoInfo) -> torch.Tensor:
        """Frame indices of this video's views: LongTensor [num_views, num_frames]."""
        from stdd_fast.video.sampling import sample_indices

        return sample_indices(
            info,
            num_frames=self.num_frames,
            sampling_rate=self.sampling_rate,
            target_fps=self.target_fps,
            num_views=self.num_views,
            mode=self.mode,
        )


@dataclass(frozen=True)
class DecodeConfig:
    """How videos are decoded.

    backend: ``"auto"`` (DALI when the clips go to a CUDA device, DALI is installed and NVDEC decodes
    the codec; else PyAV), ``"pyav"``, or ``"dali"`` (DALI on this device; its CPU decoder reads
    VP8/VP9/MJPEG only). workers: threads decoding ahead (None: min(4, CPU cores)). threads:
    FFmpeg decoder threads per video (None: FFmpeg's default; 0: one per core). dali_batch: videos
    per DALI pipeline run. frame_budget_mb: the most memory decoding one video may take, MiB: its
    distinct sampled frames as RGB at the header's size, and what the decoder allocates for frames of
    that size on the way; a video that would need more fails before decoding.
    """

    backend: DecodeChoice = "auto"
    workers: int | None = None
    threads: int | None = None
    dali_batch: int = 8
    frame_budget_mb: float = 2048.0

    def __post_init__(self) -> None:
        check_backend(self.backend, allow_auto=True)
        check_decoder_threads(self.threads, "decode_threads")
        check_int("decode_workers", self.workers, optional=True)
        check_int("decode_batch", self.dali_batch)
        check_number("decode frame_budget_mb", self.frame_budget_mb, unit="MiB")

    @property
    def num_workers(self) -> int:
        return self.workers if self.workers is not None else min(4, os.cpu_count() or 1)
