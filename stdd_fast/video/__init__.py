"""Video input: frame sampling, decoding, transforms (STDD-SPEC §6), and the loader that runs them.

Stage by stage: ``probe`` -> ``sample_indices(info)`` -> ``decode`` -> ``preprocess``; ``load_clips``
runs all four, and :class:`VideoLoader` runs them for many videos ahead of a model. Modules:
``config`` (the settings: SamplingConfig, DecodeConfig; torch-free), ``info`` (what a video is),
``sampling``, ``pyav`` and ``dali`` (the two readers), ``decoding`` (the one place that chooses a
reader), ``transforms``, ``loader``. Names are imported on first use (``import stdd_fast.video.config``
loads no torch); PyAV is imported only when a video is opened, DALI only when it is asked for.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "DECODE_BACKENDS": "stdd_fast.choices",
    "DECODE_CHOICES": "stdd_fast.choices",
    "SAMPLING_MODES": "stdd_fast.choices",
    "YUV_TO_RGB": "stdd_fast.choices",
    "DecodeConfig": "stdd_fast.video.config",
    "SamplingConfig": "stdd_fast.video.config",
    "check_backend": "stdd_fast.video.config",
    "DecodedClips": "stdd_fast.video.decoding",
    "decode": "stdd_fast.video.decoding",
    "load_clips": "stdd_fast.video.decoding",
    "read_clips": "stdd_fast.video.decoding",
    "VideoInfo": "stdd_fast.video.info",
    "LoadedVideo": "stdd_fast.video.loader",
    "VideoLoader": "stdd_fast.video.loader",
    "VideoReader": "stdd_fast.video.pyav",
    "probe": "stdd_fast.video.pyav",
    "official_clip_sizes": "stdd_fast.video.sampling",
    "sample_indices": "stdd_fast.video.sampling",
    "CLIP_MEAN": "stdd_fast.video.transforms",
    "CLIP_STD": "stdd_fast.video.transforms",
    "center_crop": "stdd_fast.video.transforms",
    "crop_offsets": "stdd_fast.video.transforms",
    "normalize": "stdd_fast.video.transforms",
    "preprocess": "stdd_fast.video.transforms",
    "resize_short_side": "stdd_fast.video.transforms",
    "short_side_shape": "stdd_fast.video.transforms",
    "transform_frames": "stdd_fast.video.transforms",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
