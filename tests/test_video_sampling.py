"""Frame sampling (STDD-SPEC §6.2) against index lists computed by hand.

Notation: N frames, T = 8, sr = 16, target 30 fps, V views.
clip_size = max(1, ceil(sr·(T−1)/30·fps)); clip_size2 = max(1, sr·T/30·fps).
The offsets linspace(0, clip_size2 − 1, 8) truncated are:
  30 fps (clip_size2 = 128): 0, 18.14, 36.29, 54.43, 72.57, 90.71, 108.86, 127 -> 0 18 36 54 72 90 108 127
  25 fps (clip_size2 = 106.67): 0, 15.10, 30.19, 45.29, 60.38, 75.48, 90.57, 105.67 -> 0 15 30 45 60 75 90 105
and the last one clamps to n_dec − 1, where n_dec = frames in [start, start + clip_size − 1] plus
the frame after (PySlowFast keeps it).
"""

import math

import pytest
import torch

from stdd_fast import video
from stdd_fast.errors import ConfigError, VideoError

OFF30 = [0, 18, 36, 54, 72, 90, 108]  # first 7 offsets at 30 fps
OFF25 = [0, 15, 30, 45, 60, 75, 90]  # first 7 offsets at 25 fps


def rows(*starts_and_last):
    return [[s + o for o in off] + [last] for s, off, last in starts_and_last]


def test_clip_sizes():
    assert video.official_clip_sizes(30.0, 8, 16, 30) == (112.0, 128.0)
    size, size2 = video.official_clip_sizes(25.0, 8, 16, 30)
    assert size == 94.0 and size2 == pytest.approx(106.6667, abs=1e-4)
    assert video.official_clip_sizes(30000 / 1001, 8, 16, 30)[0] == 112.0  # ceil(111.89)


def test_30fps_three_views():
    # N = 300: clip_size 112, max_start 188, starts 0, 62.67, 125.33.
    # view 0: frames 0..111 + 112 -> n_dec 113, last = min(127, 112) = 112
    # view 1: first ceil(62.67) = 63, last floor(173.67) = 173, + 174 -> n_dec 112, last 63 + 111 = 174
    # view 2: first 126, last 236, + 237 -> n_dec 112, last 126 + 111 = 237
    expected = rows((0, OFF30, 112), (63, OFF30, 174), (126, OFF30, 237))
    assert video.sample_indices(300, 30.0).tolist() == expected


def test_25fps_three_views():
    # N = 250: clip_size 94, max_start 156, starts 0, 52, 104 (exact).
    # n_dec = 94 + 1 = 95 in every view, so the last offset is min(105, 94) = 94.
    expected = rows((0, OFF25, 94), (52, OFF25, 146), (104, OFF25, 198))
    assert video.sample_indices(250, 25.0).tolist() == expected


@pytest.mark.parametrize(("total", "fps", "expected"), [(300, 30.0, [[*OFF30, 112]]), (250, 25.0, [[*OFF25, 94]])])
def test_one_view_starts_at_zero(total, fps, expected):
    # V = 1: start = max_start * 0 / 1 = 0 (the released loader does not centre it).
    assert video.sample_indices(total, fps, num_views=1).tolist() == expected


def test_coarse_time_base_truncates_like_pyav():
    # AVI-style time base 1/fps (1 pts per frame): int(62.67) = 62 pts admits frame 62, so view 1
    # decodes frames 62..173 + 174 (n_dec 113) -> last 62 + 112 = 174.
    expected = rows((0, OFF30, 112), (62, OFF30, 174), (125, OFF30, 237))
    assert video.sample_indices(300, 30.0, pts_per_frame=1.0).tolist() == expected
    # A fine time base (MP4's 512 pts per frame) gives the exact bounds.
    assert video.sample_indices(300, 30.0, pts_per_frame=512.0).equal(video.sample_indices(300, 30.0))


def test_short_video_repeats_the_last_frame():
    # N = 50 < clip_size 112: max_start 0, every view decodes frames 0..49 (no frame after) -> clamp 49.
    short = [0, 18, 36, 49, 49, 49, 49, 49]
    assert video.sample_indices(50, 30.0).tolist() == [short] * 3
    assert video.sample_indices(50, 30.0, num_views=1).tolist() == [short]
    assert video.sample_indices(1, 30.0).tolist() == [[0] * 8] * 3
    # 25 fps, N = 60: offsets 0 15 30 45 then 59.
    assert video.sample_indices(60, 25.0, num_views=1).tolist() == [[0, 15, 30, 45, 59, 59, 59, 59]]


def test_unknown_duration_decodes_the_whole_video():
    # N = 300, clip_size2 = 128, max_start 172: starts i * floor(172 / 2) = 0, 86, 172 (offset sampling),
    # end = start + 127; linspace over the whole video.
    expected = [[s + o for o in [*OFF30, 127]] for s in (0, 86, 172)]
    assert video.sample_indices(300, 30.0, duration_known=False).tolist() == expected
    # V = 1: the centre, floor(172 / 2) = 86.
    assert video.sample_indices(300, 30.0, num_views=1, duration_known=False).tolist() == [expected[1]]
    # Short: clamp to N - 1 = 49.
    assert video.sample_indices(50, 30.0, duration_known=False).tolist() == [[0, 18, 36, 49, 49, 49, 49, 49]] * 3


def test_uniform_mode():
    # V = 1: floor((2t + 1) * N / 16), N = 10 -> 0 1 3 4 5 6 8 9.
    assert video.sample_indices(10, 30.0, num_views=1, mode="uniform").tolist() == [[0, 1, 3, 4, 5, 6, 8, 9]]
    # V = 3, N = 100: floor((4t + v + 1) * 100 / 32).
    idx = video.sample_indices(100, 30.0, mode="uniform")
    assert idx[0].tolist() == [3, 15, 28, 40, 53, 65, 78, 90]
    assert idx[2].tolist() == [9, 21, 34, 46, 59, 71, 84, 96]
    # The fps is irrelevant to uniform sampling.
    assert idx.equal(video.sample_indices(100, 0.0, mode="uniform"))


@pytest.mark.parametrize("mode", ["official", "uniform"])
@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("total", [1, 7, 113, 301, 5000])
@pytest.mark.parametrize("fps", [12.0, 30000 / 1001, 60.0])
@pytest.mark.parametrize(("views", "frames"), [(1, 8), (3, 8), (2, 5)])
def test_invariants(mode, known, total, fps, views, frames):
    idx = video.sample_indices(total, fps, num_frames=frames, num_views=views, mode=mode, duration_known=known)
    assert idx.dtype == torch.long and idx.shape == (views, frames)
    assert int(idx.min()) >= 0 and int(idx.max()) < total
    assert (idx.diff(dim=1) >= 0).all()  # time runs forward inside a view
    assert (idx[:, 0].diff() >= 0).all()  # views start in order


def test_validation():
    with pytest.raises(ConfigError, match="unknown sampling mode 'uniformly'; valid values: 'official', 'uniform'"):
        video.sample_indices(100, 30.0, mode="uniformly")
    with pytest.raises(ConfigError, match="num_frames=0"):
        video.sample_indices(100, 30.0, num_frames=0)
    with pytest.raises(ConfigError, match=r"fps=0\.0"):
        video.sample_indices(100, 0.0)
    with pytest.raises(VideoError, match="0 frames"):
        video.sample_indices(0, 30.0)
    with pytest.raises(ConfigError, match="num_views"):
        video.SamplingConfig(num_views=0)


def pyslowfast_pts_selection(total, fps, views, pts_per_frame):
    """The released selective decode, literally: frames at integer pts k·tb, kept when
    int(start·tb) <= pts <= int(end·tb), plus the first frame after; then linspace and clamp."""
    clip_size = max(1.0, float(math.ceil(16 * (8 - 1) / 30 * fps)))
    clip_size2 = max(1.0, 16 * 8 / 30 * fps)
    out = []
    for i in range(views):
        start = max(total - clip_size, 0) * i / views
        lo, hi = int(start * pts_per_frame), int((start + clip_size - 1) * pts_per_frame)
        kept = []
        for k in range(total):
            pts = k * pts_per_frame
            if pts < lo:
                continue
            kept.append(k)
            if pts > hi:
                break
        rel = torch.clamp(torch.linspace(0, clip_size2 - 1, 8), 0, len(kept) - 1).long()
        out.append([kept[j] for j in rel.tolist()])
    return out


@pytest.mark.parametrize("pts_per_frame", [1, 512, 1001])
@pytest.mark.parametrize(("total", "fps"), [(300, 30.0), (250, 25.0), (120, 30000 / 1001), (1000, 24.0), (97, 60.0)])
def test_pts_bounds_match_a_literal_pts_filter(total, fps, pts_per_frame):
    for views in (1, 3, 4):
        got = video.sample_indices(total, fps, num_views=views, pts_per_frame=float(pts_per_frame)).tolist()
        assert got == pyslowfast_pts_selection(total, fps, views, pts_per_frame)


@pytest.mark.parametrize(
    "name, frames, options",
    [("coarse_time_base.avi", 101, {"codec": "mpeg4", "fps": 25, "bframes": 0}), ("no_duration.mkv", 200, {})],
)
def test_readme_stage_by_stage_indices_equal_the_engines(tmp_path, name, frames, options):
    """``video.sample_indices(video.probe(path))`` (README) samples what Engine.classify samples.

    A 1/25 time base (AVI) makes the segment bounds truncate to whole pts; an MKV stream without a
    duration takes the whole-video fallback: the bare frame count and rate would sample other frames.
    """
    from helpers import randomize_
    from video_fixtures import write_clip

    from stdd_fast import Engine, create_model

    path = write_clip(tmp_path / name, frames, **options)
    info = video.probe(path)
    readme = video.sample_indices(info)
    engine = Engine(randomize_(create_model("test-tiny"), seed=1), classes=["a", "b"])
    assert torch.equal(engine.classify(path)[0].indices, readme)
    assert not torch.equal(video.sample_indices(info.num_frames, info.fps), readme)  # why the VideoInfo form exists
    with pytest.raises(ConfigError, match="drop fps="):
        video.sample_indices(info, 30.0)
