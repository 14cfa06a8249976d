"""Streaming: sliding windows give the scores of classifying those frames directly; failures, memory,
batching across streams, backpressure, and the `stdd stream` command."""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from helpers import randomize_, report
from video_fixtures import frame_pattern, sequential_decode, write_clip

from stdd_fast import ConfigError, StreamError, create_model, save_checkpoint
from stdd_fast.engine import Engine
from stdd_fast.numerics import FP32_MAX_REL, max_rel_err
from stdd_fast.results import WindowResult
from stdd_fast.stream import Span, StreamConfig, WindowStream, parse_span, window_layout
from stdd_fast.video import SamplingConfig

CLASSES = ["run", "jump", "swim", "dance", "climb", "throw"]
FPS = 30


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("test-tiny"), seed=7)


@pytest.fixture(scope="module")
def engine(model):
    return Engine(model, classes=CLASSES, num_views=1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = write_clip(tmp_path_factory.mktemp("stream") / "live.mp4", 190)
    return path, sequential_decode(path)


def synthetic(count, height=48, width=64, fps=FPS, start=0):
    """A fresh iterator of (frame, seconds) pairs: the numbered test pattern, new arrays every frame."""
    for i in range(start, start + count):
        yield frame_pattern(i % 256, height, width), i / fps


def direct_logits(engine, frames):
    """Engine.classify on uint8 frames [T, H, W, 3] of one window (one view): float32 [K]."""
    return engine.classify(torch.from_numpy(np.ascontiguousarray(frames))[None], top_k=1)[0].logits


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- window layout ------------------------------------------------------------------------------------------


def test_window_layout():
    default = window_layout(SamplingConfig(8, 16, 30), StreamConfig(), fps=30.0)
    assert default.offsets == (0, 16, 32, 48, 64, 80, 96, 112) and default.span == 113 and default.stride == 16
    # 25 fps: the offline clip_size is ceil(16*7/30*25) = 94 frames, and so is the span.
    assert window_layout(SamplingConfig(8, 16, 30), StreamConfig(), fps=25.0).span == 94
    given = window_layout(
        SamplingConfig(5, 16, 30), StreamConfig(window=Span(41, "frames"), stride=Span(0.5, "seconds")), 30.0
    )
    assert given.offsets == (0, 10, 20, 30, 40) and given.span == 41 and given.stride == 15
    assert window_layout(SamplingConfig(1, 16, 30), StreamConfig(window=Span(7, "frames")), None).offsets == (0,)
    assert parse_span(16, "stride") == Span(16, "frames") == parse_span("16f", "stride")
    assert parse_span("0.5s", "stride") == Span(0.5, "seconds")
    for bad in (0.5, "abc", 0, "-1s", True):
        with pytest.raises(ConfigError, match="stride="):
            parse_span(bad, "stride")
    with pytest.raises(ConfigError, match="unknown on_backpressure policy 'wait'; valid values: 'block', 'drop'"):
        StreamConfig(on_backpressure="wait")
    for bad in (0, -1, float("nan"), float("inf"), "30", True):
        with pytest.raises(ConfigError, match="fps="):
            StreamConfig(fps=bad)
    with pytest.raises(ConfigError, match="needs the frame rate"):
        window_layout(SamplingConfig(8, 16, 30), StreamConfig(), fps=None)


# -- equivalence with direct classification -----------------------------------------------------------------------


@pytest.mark.parametrize(("window", "stride", "frames"), [(None, 16, 8), (41, "0.5s", 5), ("1s", 23, 7)])
def test_file_stream_equals_classifying_the_frame_ranges(model, clip, window, stride, frames):
    path, seq = clip
    engine = Engine(model, classes=CLASSES, num_views=1, num_frames=frames)
    results = list(engine.stream(path, window=window, stride=stride, top_k=3))
    layout = window_layout(
        SamplingConfig(frames, 16, 30),
        StreamConfig(window=window and parse_span(window, "w"), stride=parse_span(stride, "s")),
        FPS,
    )
    expected = (len(seq) - layout.span) // layout.stride + 1
    assert [r.index for r in results] == list(range(expected)) and all(r.ok for r in results)
    worst = 0.0
    for r in results:
        start = r.index * layout.stride
        assert r.frames.tolist() == [start + o for o in layout.offsets]
        assert (r.start_frame, r.end_frame) == (start, start + layout.span - 1)
        assert r.start_time == pytest.approx(start / FPS) and r.end_time == pytest.approx(r.end_frame / FPS)
        direct = direct_logits(engine, seq[r.frames.numpy()])
        worst = max(worst, max_rel_err(r.logits, direct))
        assert r.labels == [CLASSES[i] for i in direct.topk(3).indices] and r.latency >= 0
    report(f"stream vs classify on the window's frames (window={window}, stride={stride}, T={frames}) max rel", worst)
    assert worst <= FP32_MAX_REL


def test_iterator_source_estimates_the_frame_rate(engine):
    results = list(engine.stream(synthetic(150, fps=25), stride=20))
    # 25 fps: step 16*25/30, span floor(7*13.33)+1 = 94 frames; windows start every 20 frames.
    assert [(r.start_frame, r.end_frame) for r in results] == [(0, 93), (20, 113), (40, 133)]
    assert results[0].frames.tolist() == [0, 13, 26, 40, 53, 66, 80, 93]
    assert results[1].start_time == pytest.approx(20 / 25)


# -- failures ------------------------------------------------------------------------------------------------------


def test_source_that_raises_ends_with_a_typed_error_after_the_retries(engine):
    opened = []

    def camera():  # reconnectable: each call is a new connection; it always dies at frame 150
        opened.append(time.monotonic())
        yield from synthetic(150)
        raise RuntimeError("camera unplugged")

    run = engine.stream_many([camera, synthetic(200)], stride=16, max_retries=2, retry_delay=0.01, names=["cam", "ok"])
    results = list(run)
    cam = [r for r in results if r.source == "cam"]
    ok = [r for r in results if r.source == "ok"]
    assert [r.index for r in cam[:-1]] == [0, 1, 2]  # the windows ending at frames 112, 128, 144 (< 150)
    last = cam[-1]
    assert not last.ok and last.index == -1 and isinstance(last.error, StreamError)
    assert str(last.error) == "cam: RuntimeError: camera unplugged (gave up after 2 reconnect(s) without a new frame)"
    assert isinstance(last.error.__cause__, RuntimeError) and len(opened) == 3  # first connection + 2 retries
    assert [r.index for r in ok] == list(range((200 - 113) // 16 + 1)) and all(r.ok for r in ok)  # unaffected
    assert run.stats.streams["cam"]["reconnects"] == 2 and run.stats.streams["cam"]["error"] == str(last.error)
    assert last.to_dict()["error"] == {"type": "StreamError", "message": str(last.error)}


def test_stalled_source_reconnects_then_gives_up(engine):
    """A read that never returns is waited for, not abandoned: no second reader thread starts beside it."""
    release = threading.Event()
    opened = []

    def stalls():
        opened.append(1)
        yield from synthetic(10)
        release.wait(30)  # a source that stops sending without closing

    try:
        results = list(engine.stream(stalls, stall_timeout=0.2, max_retries=1, retry_delay=0.0, fps=FPS))
        feeds = [t for t in threading.enumerate() if t.name.startswith("stdd-feed-")]
    finally:
        release.set()
    assert len(results) == 1 and isinstance(results[0].error, StreamError)
    message = str(results[0].error)
    assert message.startswith("<stream 0>: no frame for 0.2 s; the stalled read has not returned") and (
        "gave up after 1 reconnect(s)" in message
    )
    assert len(opened) == 1 and len(feeds) == 1  # the blocked reader, and no other


def test_reconnect_resumes_after_the_last_frame(engine):
    calls = []

    def flaky():  # the first connection breaks at frame 130; a reopened file starts again at frame 0
        calls.append(1)
        for i, (frame, ts) in enumerate(synthetic(200)):
            if len(calls) == 1 and i == 130:
                raise ConnectionError("reset by peer")
            yield frame, ts

    resumed = list(engine.stream(flaky, stride=16, retry_delay=0.0))
    clean = list(engine.stream(synthetic(200), stride=16))
    assert len(calls) == 2 and [r.index for r in resumed] == [r.index for r in clean]
    for a, b in zip(resumed, clean, strict=True):
        assert a.frames.equal(b.frames) and max_rel_err(a.logits, b.logits) <= FP32_MAX_REL


def test_one_shot_iterator_and_bad_frames(engine):
    def broken():
        yield from synthetic(20)
        raise OSError("device gone")

    (r,) = list(engine.stream(broken(), fps=FPS))  # a generator object cannot be reopened
    assert isinstance(r.error, StreamError) and "one-shot iterator" in str(r.error) and "device gone" in str(r.error)
    floats = ((np.zeros((8, 8, 3), np.float32), i / 30) for i in range(5))
    (r,) = list(engine.stream(floats, fps=FPS))
    assert "frame 0: expected uint8 RGB [H, W, 3]; got float32 (8, 8, 3)" in str(r.error)
    with pytest.raises(ConfigError, match="expected a path or URL"):
        engine.stream(42)
    with pytest.raises(ConfigError, match="has no classifier"):
        Engine(engine.model).stream(synthetic(5))


# -- memory, batching, backpressure, callbacks ------------------------------------------------------------------------


def test_memory_stays_flat_over_10000_frames(engine):
    marks = {}

    def source():
        for i, item in enumerate(synthetic(10_000, height=64, width=96)):
            if i in (2_000, 9_999):
                marks[i] = rss_bytes()
            yield item

    run = engine.stream(source(), stride=16)
    count = sum(1 for r in run if r.ok)
    stats = run.stats.streams["<stream 0>"]
    assert stats["frames"] == 10_000 and count == (10_000 - 113) // 16 + 1
    growth = marks[9_999] - marks[2_000]
    report("RSS growth from frame 2,000 to 10,000 (MB)", growth / 2**20)
    report("frames held at most", stats["max_buffered"])
    # Held: the sampled frames of the open windows, at most T * ceil(span / stride) = 8 * 8.
    assert stats["max_buffered"] <= 64
    assert growth < 48 * 2**20  # all 8,000 frames kept would be ~150 MB (raw) or ~100 MB (transformed)


def test_two_streams_batched_give_the_same_results_as_each_alone(engine):
    def a():
        return synthetic(170)

    def b():
        return synthetic(150, height=40, width=72, start=50)

    together = engine.stream_many([a, b], stride=8, names=["a", "b"], max_delay=0.05)
    both = list(together)
    alone = {"a": list(engine.stream(a, stride=8, name="a")), "b": list(engine.stream(b, stride=8, name="b"))}
    for name in ("a", "b"):
        mine = [r for r in both if r.source == name]
        assert [r.index for r in mine] == [r.index for r in alone[name]] and mine
        err = max(max_rel_err(x.logits, y.logits) for x, y in zip(mine, alone[name], strict=True))
        report(f"stream {name}: batched with another stream vs alone, max rel", err)
        assert err <= FP32_MAX_REL
    # One window each, a batch of two: the model call necessarily holds both streams.
    shared = engine.stream_many([lambda: synthetic(113), lambda: synthetic(113, start=9)], max_delay=5.0)
    assert len(list(shared)) == 2 and shared.stats.model_calls == 1 and shared.stats.shared_calls == 1
    report("model calls for two streams together / apart", together.stats.model_calls)


@pytest.mark.parametrize("policy", ["drop", "block"])
def test_slow_consumer(engine, policy):
    total = (400 - 113) // 8 + 1
    run = engine.stream(synthetic(400), stride=8, on_backpressure=policy, max_pending=1)
    results = []
    for r in run:
        results.append(r)
        time.sleep(0.1 if policy == "drop" else 0.005)  # a consumer slower than the source
    dropped = run.stats.streams["<stream 0>"]["dropped"]
    report(f"windows dropped ({policy})", dropped)
    assert all(r.ok for r in results) and len(results) + dropped == total
    indices = [r.index for r in results]
    assert indices == sorted(indices)
    if policy == "block":
        assert dropped == 0 and indices == list(range(total))
    else:
        assert dropped > 0 and sum(r.dropped for r in results) <= dropped


def test_callback_and_run(engine):
    seen: list[WindowResult] = []
    run = engine.stream(synthetic(160), stride=16, callback=seen.append)
    assert isinstance(run, WindowStream)
    stats = run.run()
    assert [r.index for r in seen] == [0, 1, 2] and stats.streams["<stream 0>"]["windows"] == 3
    assert json.loads(json.dumps(seen[0].to_dict()))["window"] == 0
    with pytest.raises(ConfigError, match="can be iterated once"):
        iter(run)


# -- the command line ------------------------------------------------------------------------------------------------


def test_cli_stream(model, clip, tmp_path):
    path, seq = clip
    ckpt = save_checkpoint(model, tmp_path / "tiny.safetensors")
    base = [sys.executable, "-m", "stdd_fast.cli", "stream"]
    opts = ["--weights", str(ckpt), "--classes", ",".join(CLASSES)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def launch(*args):
        return subprocess.Popen(
            [*base, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    procs = {
        "json": launch(path, *opts, "--stride", "32", "--json", "--top-k", "2"),
        "text": launch(path, *opts, "--window", "2s", "--stride", "1s", "--frames", "5"),
        "missing": launch(tmp_path / "absent.mp4", path, *opts, "--max-retries", "0", "--stride", "64"),
        "usage": launch(path, *opts, "--stride", "0.5"),
    }
    out = {name: (p.communicate(timeout=300), p.returncode) for name, p in procs.items()}
    (stdout, stderr), rc = out["json"]
    assert rc == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [w["window"] for w in lines] == list(range((len(seq) - 113) // 32 + 1))
    engine = Engine(model, classes=CLASSES, num_views=1)
    for w in lines:
        frames = seq[[w["start_frame"] + o for o in range(0, 113, 16)]]
        direct = direct_logits(engine, frames).topk(2)
        assert w["labels"] == [CLASSES[i] for i in direct.indices]
        assert w["scores"] == pytest.approx(direct.values.tolist(), rel=1e-5, abs=1e-5)
    (stdout, stderr), rc = out["text"]
    assert rc == 0 and len(stdout.splitlines()) == (len(seq) - 60) // 30 + 1, stderr
    assert stdout.splitlines()[1].startswith("[    1.000s -     2.967s] ")
    (stdout, stderr), rc = out["missing"]
    assert rc == 1 and len(stdout.splitlines()) == (len(seq) - 113) // 64 + 1
    assert stdout.splitlines()[0].startswith(f"{path} [")  # two sources: lines name theirs
    backend, *err = stderr.splitlines()
    assert backend == "stdd: backend: STDD_BACKEND=torch"  # conftest pins the torch path; the line says so
    assert err[0].startswith(f"stdd: error: {tmp_path / 'absent.mp4'}: no such file")  # at once, not reopened
    assert err[-1] == "stdd: 1 of 2 streams ended with an error" and "Traceback" not in stderr
    (stdout, stderr), rc = out["usage"]
    assert rc == 2 and stderr.strip() == (
        "stdd: error: stride='0.5': give frames as an int (16) or seconds as a string ('0.5s')"
    )
