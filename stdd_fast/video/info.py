"""What a video is, before any frame is decoded: its header and packet-index facts, and frame indices.

:class:`VideoInfo` is what sampling needs (:mod:`stdd_fast.video.sampling`); it is read by the PyAV
reader (:func:`stdd_fast.video.pyav.probe`) and used by both decoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch

from stdd_fast.errors import ConfigError


def frame_indices(indices) -> tuple[torch.Tensor, int, int]:
    """Integer frame indices as a tensor, with their min and max (ConfigError for float, bool or none)."""
    idx = torch.as_tensor(indices)
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ConfigError(f"frame indices must be integers; got dtype {idx.dtype}")
    if idx.numel() == 0:
        raise ConfigError("no frame indices given")
    return idx, int(idx.min()), int(idx.max())


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
    pix_fmt: str = ""  # the decoder's pixel format (e.g. "yuv420p"); "" when the header does not say or the
    # claimed frame is too big to decode while reading it (video.pyav.PROBE_FRAME_BYTES)

    @property
    def duration_known(self) -> bool:
        return self.duration is not None

    @property
    def pts_per_frame(self) -> float | None:
        """Stream duration / frame count (PySlowFast's ``timebase``), None without a duration."""
        if self.duration is None or self.num_frames < 1:
            return None
        return self.duration / self.num_frames

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded frame as uint8 RGB."""
        return max(self.width, 1) * max(self.height, 1) * 3
