"""Video input: frame sampling, decoding, transforms (STDD-SPEC §6).

``sample_indices`` -> ``decode`` -> ``preprocess``; ``load_clips`` runs all three. PyAV is imported
only when a video is opened; the DALI backend (``stdd_fast.video.dali``) only when it is asked for.
"""

from stdd_fast.video.clips import DecodedClips, SamplingConfig, load_clips, read_clips
from stdd_fast.video.decode import (
    BACKENDS,
    DECODE_CHOICES,
    YUV_TO_RGB,
    VideoInfo,
    VideoReader,
    check_backend,
    decode,
    probe,
)
from stdd_fast.video.sampling import SAMPLING_MODES, official_clip_sizes, sample_indices
from stdd_fast.video.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    center_crop,
    crop_offsets,
    normalize,
    preprocess,
    resize_short_side,
    short_side_shape,
)

__all__ = [
    "BACKENDS",
    "CLIP_MEAN",
    "CLIP_STD",
    "DECODE_CHOICES",
    "SAMPLING_MODES",
    "YUV_TO_RGB",
    "DecodedClips",
    "SamplingConfig",
    "VideoInfo",
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
]
