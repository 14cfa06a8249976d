"""Video input: frame sampling, decoding, transforms (STDD-SPEC §6), and the loader that runs them.

Stage by stage: ``probe`` -> ``sample_indices(info)`` -> ``decode`` -> ``preprocess``; ``load_clips``
runs all four, and :class:`VideoLoader` runs them for many videos ahead of a model. Modules:
``info`` (what a video is), ``sampling``, ``pyav`` and ``dali`` (the two readers), ``decode`` (the
one place that chooses a reader), ``transforms``, ``loader``. PyAV is imported only when a video is
opened; DALI only when it is asked for.
"""

from stdd_fast.choices import DECODE_BACKENDS, DECODE_CHOICES, SAMPLING_MODES, YUV_TO_RGB
from stdd_fast.video.decode import DecodedClips, decode, load_clips, read_clips
from stdd_fast.video.info import VideoInfo, check_backend
from stdd_fast.video.loader import DecodeConfig, LoadedVideo, VideoLoader
from stdd_fast.video.pyav import VideoReader, probe
from stdd_fast.video.sampling import SamplingConfig, official_clip_sizes, sample_indices
from stdd_fast.video.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    center_crop,
    crop_offsets,
    normalize,
    preprocess,
    resize_short_side,
    short_side_shape,
    transform_frames,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DECODE_BACKENDS",
    "DECODE_CHOICES",
    "SAMPLING_MODES",
    "YUV_TO_RGB",
    "DecodeConfig",
    "DecodedClips",
    "LoadedVideo",
    "SamplingConfig",
    "VideoInfo",
    "VideoLoader",
    "VideoReader",
    "center_crop",
    "check_backend",
    "crop_offsets",
    "decode",
    "load_clips",
    "normalize",
    "official_clip_sizes",
    "preprocess",
    "probe",
    "read_clips",
    "resize_short_side",
    "sample_indices",
    "short_side_shape",
    "transform_frames",
]
