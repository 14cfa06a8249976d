"""Reliability class 2: every input is bounded before work starts; bad ones fail fast with a typed error.

Each case runs in a child process with its time and resident memory measured and capped (bounds.py).
"""

import os
from pathlib import Path

import av
import numpy as np
import pytest
from bounds import run_bounded
from helpers import randomize_
from video_fixtures import write_clip

from stdd_fast import create_model, save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("res") / "tiny.safetensors"
    return save_checkpoint(randomize_(create_model("test-tiny"), seed=1), path)


def _yuv_video(path: Path, width: int, height: int, frames: int) -> Path:
    """A flat video written from YUV planes directly (no RGB conversion: large sizes encode in seconds)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "45"}
        plane = np.zeros((height * 3 // 2, width), np.uint8)
        for i in range(frames):
            plane[:] = 16 + (8 * i) % 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(plane, format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_yaml_alias_bomb_is_refused_without_expanding(tmp_path):
    levels = "\n".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10))
    bomb = tmp_path / "classes_xprompt_bomb.yml"
    bomb.write_text(f"l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n{levels}\n")
    out = run_bounded(
        "YAML alias bomb",
        f"""
        from stdd_fast.prompts import read_xprompt
        from stdd_fast import ClassifierError
        try:
            read_xprompt({str(bomb)!r})
        except ClassifierError as e:
            print(e)
        """,
        seconds=60,
        rss_mb=1024,
    )
    assert out.returncode == 0 and "YAML aliases (*l0) are not allowed" in out.stdout, out.stderr


def test_oversized_label_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "classes_label_big.yml"
    big.write_text("classes:\n" + "".join(f"- class {i}\n" for i in range(150_000)))  # ~2 MB
    out = run_bounded(
        "oversized label file",
        f"""
        from stdd_fast.prompts import read_class_names
        from stdd_fast import ClassifierError
        try:
            read_class_names({str(big)!r})
        except ClassifierError as e:
            print(e)
        """,
        env={"STDD_MAX_YAML_MB": "1"},
        seconds=60,
    )
    assert "more than the 1 MiB a class-list file may have; set STDD_MAX_YAML_MB" in out.stdout, out.stderr


def test_a_huge_frame_size_fails_before_decoding_and_the_batch_goes_on(tmp_path, ckpt):
    huge = _yuv_video(tmp_path / "huge.mp4", 8192, 8192, 3)  # 201 MB per RGB frame
    good = write_clip(tmp_path / "good.mp4", 40)
    out = run_bounded(
        "8192x8192 video, 256 MiB decode budget",
        f"""
        from stdd_fast import Engine
        from stdd_fast.video import DecodeConfig
        engine = Engine({str(ckpt)!r}, classes=["a", "b"], decode=DecodeConfig(frame_budget_mb=256))
        base = _rss()
        for r in engine.classify([{str(huge)!r}, {str(good)!r}]):
            print(type(r.error).__name__ if r.error else "ok", r.error)
        print((_PEAK[0] - base) / 2**20)
        """,
        seconds=120,
        rss_mb=1500,
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("VideoError") and "needs 384 MiB (8192x8192 RGB frames)" in lines[0], out.stdout
    assert "decode memory budget of 256 MiB; raise DecodeConfig(frame_budget_mb=...)" in lines[0]
    assert lines[1].startswith("ok")
    print(f"[measured] peak RSS growth with the 8192x8192 file in the batch: {float(lines[2]):.0f} MiB")
    assert float(lines[2]) < 201  # not one 8192x8192 RGB frame was held


def test_an_ordinary_1080p_clip_costs_little_memory(tmp_path, ckpt):
    """Distinct frames once, uint8 until a chunk becomes float: well under the old +1.3 GB for one 1080p clip."""
    clip = _yuv_video(tmp_path / "hd.mp4", 1920, 1080, 150)
    out = run_bounded(
        "classify a 1080p clip",
        f"""
        from stdd_fast import Engine
        engine = Engine({str(ckpt)!r}, classes=["a", "b"], decode_workers=1)
        import os
        base = _rss()
        r = engine.classify({str(clip)!r})[0]
        print(r.ok, (_PEAK[0] - base) / 2**20)
        """,
        seconds=120,
    )
    ok, growth = out.stdout.split()
    print(f"[measured] peak RSS growth while classifying a 1080p clip: {float(growth):.0f} MiB")
    assert ok == "True" and float(growth) < 600


def test_a_fifo_fails_at_once_and_the_batch_goes_on(tmp_path, ckpt):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    good = write_clip(tmp_path / "good.mp4", 40)
    out = run_bounded(
        "a FIFO in a batch",
        f"""
        from stdd_fast import Engine
        engine = Engine({str(ckpt)!r}, classes=["a", "b"])
        for r in engine.classify([{str(fifo)!r}, {str(good)!r}]):
            print(type(r.error).__name__ if r.error else "ok", r.error)
        """,
        seconds=60,
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("VideoError") and "not a regular file (a FIFO, device or socket)" in lines[0]
    assert lines[1].startswith("ok") and out.seconds < 60
