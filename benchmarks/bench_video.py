"""Frame sampling and PyAV decoding of a 10 s 320x240 H.264 clip written on the fly (group "video").

pytest benchmarks/bench_video.py --benchmark-only
"""

import av
import numpy as np
import pytest

from stdd_fast import video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(300):
            frame = np.full((240, 320, 3), i % 256, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_sample_indices(benchmark):
    benchmark.group = "video"
    benchmark(video.sample_indices, 300, 30.0)


def test_decode_three_views(benchmark, clip):
    benchmark.group = "video"
    idx = video.sample_indices(300, 30.0)
    benchmark(video.decode, clip, idx)


def test_load_clips(benchmark, clip):
    benchmark.group = "video"
    benchmark(video.load_clips, clip)
