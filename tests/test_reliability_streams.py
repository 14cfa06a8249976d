"""Reliability class 4: streams and batches never hang and never lose work without saying so."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import interruptible, randomize_
from training_fixtures import tiny_checkpoint, tiny_dataset, tiny_recipe
from video_fixtures import frame_pattern, write_clip

from stdd_fast import ConfigError, Engine, StreamError, create_model, save_checkpoint

CLASSES = ["run", "jump", "swim"]


@pytest.fixture(scope="module")
def engine():
    return Engine(randomize_(create_model("test-tiny"), seed=2), classes=CLASSES, num_views=1)


def endless(fps=30.0):
    """A live source that never ends (frames as fast as they are read)."""
    i = 0
    while True:
        yield frame_pattern(i % 256, 48, 64), i / fps
        i += 1


def _bounded(fn, seconds: float):
    """Run ``fn`` on a thread; fail if it does not return within ``seconds`` (a hang is a failure, not a stall)."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", fn()), daemon=True)
    start = time.monotonic()
    t.start()
    t.join(seconds)
    elapsed = time.monotonic() - start
    assert not t.is_alive(), f"did not return within {seconds} s"
    print(f"[measured] returned in {elapsed:.2f} s")
    return box.get("out"), elapsed


def test_close_from_the_callback_returns_and_ends_the_run(engine):
    seen = []

    def callback(result):
        seen.append(result)
        if len(seen) == 2:
            run.close()

    run = engine.stream(endless, window=8, stride=8, fps=30, callback=callback)
    _bounded(run.run, 30)
    assert 2 <= len(seen) <= 2 + 8  # what was already scored with the second result may still be delivered
    assert run.stats.streams["<stream 0>"]["ended"] == "closed"


def test_close_from_inside_the_loop_returns(engine):
    def loop():
        got = []
        with engine.stream(endless, window=8, stride=8, fps=30) as run:
            for w in run:
                got.append(w)
                if len(got) == 3:
                    run.close()
        return got

    got, _ = _bounded(loop, 30)
    assert len(got) >= 3 and all(w.ok for w in got)


def test_close_from_another_thread_returns(engine):
    run = engine.stream(endless, window=8, stride=8, fps=30)
    results = []
    consumer = threading.Thread(target=lambda: results.extend(run), daemon=True)
    consumer.start()
    deadline = time.monotonic() + 30
    while not results and time.monotonic() < deadline:
        time.sleep(0.05)
    _, elapsed = _bounded(run.close, 5)
    consumer.join(10)
    assert not consumer.is_alive() and results and elapsed < 1


def test_a_stream_shorter_than_one_window_says_why(engine):
    frames = [(frame_pattern(i, 48, 64), i / 30) for i in range(40)]
    results = list(engine.stream(iter(frames)))  # window=None spans 113 frames at 30 fps
    assert len(results) == 1 and isinstance(results[0].error, StreamError) and results[0].index == -1
    message = str(results[0].error)
    assert "produced no window: it ended after 40 frame(s) but a window spans 113 frames" in message
    assert "pass window=40" in message


def test_an_empty_source_says_so(engine):
    results = list(engine.stream(iter([])))
    assert len(results) == 1 and "produced no window: the source gave no frame" in str(results[0].error)


def test_empty_frames_end_the_stream_with_a_typed_error(engine):
    import numpy as np

    results = list(engine.stream(iter([(np.zeros((0, 0, 3), np.uint8), 0.0)]), fps=30))
    assert len(results) == 1 and isinstance(results[0].error, StreamError)
    assert "frame 0: an empty 0x0 frame" in str(results[0].error)


def test_stdd_stream_on_a_short_file_says_what_it_produced(tmp_path):
    clip = write_clip(tmp_path / "short.mp4", 30)
    ckpt = save_checkpoint(randomize_(create_model("test-tiny"), seed=2), tmp_path / "tiny.safetensors")
    cmd = [sys.executable, "-m", "stdd_fast.cli", "stream", str(clip), "--weights", str(ckpt), "--classes", "a,b"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "produced no window: it ended after 30 frame(s)" in proc.stderr and "--window 30" in proc.stderr
    assert f"stdd: {clip}: 0 windows from 30 frames (error)" in proc.stderr


def test_stream_options_are_checked(engine):
    with pytest.raises(ConfigError, match=r"unknown stream option\(s\) \['strid'\]"):
        engine.stream(endless, strid=4)


# -- stdd classify: results as they complete, and an interrupt keeps them -------------------------------


def test_classify_prints_each_result_as_it_completes_and_ctrl_c_keeps_them(tmp_path):
    clips = [write_clip(tmp_path / f"v{i}.mp4", 40) for i in range(3)]
    ckpt = save_checkpoint(randomize_(create_model("test-tiny"), seed=2), tmp_path / "tiny.safetensors")
    results = tmp_path / "results.jsonl"
    fifo_free = [str(c) for c in clips] * 60  # enough work to be interrupted half way
    cmd = [sys.executable, "-m", "stdd_fast.cli", "classify", *fifo_free, "--weights", str(ckpt)]
    cmd += ["--classes", "a,b", "--json", "--output", str(results), "--batch-clips", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    first = proc.stdout.readline()  # printed while the rest is still running
    assert json.loads(first)["error"] is None and proc.poll() is None
    os.kill(proc.pid, signal.SIGINT)
    rest, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    printed = [first, *rest.splitlines()]
    kept = results.read_text().splitlines()
    assert 1 <= len(kept) < len(fifo_free) and len(kept) >= len([p for p in printed if p.strip()])
    assert all(json.loads(line)["class_scores"].keys() == {"a", "b"} for line in kept)
    assert f"stdd: interrupted after {len(kept)} of {len(fifo_free)} videos; {results} holds them" in stderr


def test_classify_takes_folders_and_writes_csv_with_failures(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    write_clip(folder / "a.mp4", 40)
    write_clip(folder / "sub" / "b.mkv", 40)
    (folder / "broken.mp4").write_bytes(b"not a video")
    (folder / "notes.txt").write_text("not a video and not listed")
    ckpt = save_checkpoint(randomize_(create_model("test-tiny"), seed=2), tmp_path / "tiny.safetensors")
    out = tmp_path / "results.csv"
    cmd = [sys.executable, "-m", "stdd_fast.cli", "classify", str(folder), "--weights", str(ckpt)]
    proc = subprocess.run([*cmd, "--classes", "a,b", "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    import csv

    rows = list(csv.DictReader(out.open()))
    assert [r["video"].removeprefix(str(folder) + "/") for r in rows] == ["a.mp4", "broken.mp4", "sub/b.mkv"]
    assert rows[1]["error_type"] == "VideoError" and rows[0]["error"] == "" and rows[0]["score:a"]


# -- stdd-train into a folder that holds a run -------------------------------------------------------------


def test_train_refuses_a_folder_that_holds_a_run_unless_told(tmp_path):
    from stdd_fast.training import finetune

    recipe = tiny_recipe(tiny_dataset(tmp_path / "data"), tiny_checkpoint(tmp_path / "init.safetensors"),
                         tmp_path / "run", epochs=1, warmup_epochs=0.0, distill="none")  # fmt: skip
    finetune(recipe)
    with pytest.raises(ConfigError, match=r"already holds a run .* --resume auto .* --overwrite"):
        finetune(recipe)
    log = (tmp_path / "run" / "train_log.jsonl").read_text()
    again = finetune(recipe, overwrite=True)
    assert again.history and (tmp_path / "run" / "train_log.jsonl").read_text().count("\n") == log.count("\n")


# -- stdd stream --watch-classifier: a file that turns bad never hangs it, Ctrl-C stops it at once -----------------


def test_a_watched_classifier_turning_bad_never_hangs_and_ctrl_c_stops_at_once(tmp_path):
    """The watched file turns garbage, is deleted, becomes a FIFO: each refused once with its reason while the
    windows keep their classes; then Ctrl-C ends the command within about a second (it took 30 s), exit 130."""
    from stdd_fast import build_classifier

    model = randomize_(create_model("test-tiny"), seed=2)
    ckpt = save_checkpoint(model, tmp_path / "tiny.safetensors")
    live = build_classifier(model, CLASSES).save(tmp_path / "live.safetensors")
    clip = write_clip(tmp_path / "long.mp4", 900)  # 30 s played live: longer than the test
    cmd = [sys.executable, "-m", "stdd_fast.cli", "stream", str(clip), "--weights", str(ckpt), "--classifier",
           str(live), "--watch-classifier", "--watch-interval", "0.1", "--realtime", "--window", "16",
           "--stride", "16"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    reader.start()

    def refused(words: str) -> None:
        deadline = time.monotonic() + 20
        while not any(words in line for line in errors) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(words in line for line in errors), errors

    try:
        first = proc.stdout.readline()  # the first window: the watcher runs
        assert first.strip(), errors
        staged = tmp_path / "staged"
        staged.write_bytes(b"garbage")
        os.replace(staged, live)
        refused("not a readable classifier file")
        live.unlink()
        refused("no such classifier file")
        os.mkfifo(live)
        refused("is a FIFO, not a classifier file")
        line = proc.stdout.readline()  # windows go on, with the classes they had
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        proc.wait(timeout=60)
        stopped = time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()
    reader.join(timeout=5)
    said = [e.strip() for e in errors if "error" in e]
    print(f"[measured] Ctrl-C to exit: {stopped:.2f} s; said: {said}")
    assert any(c in line for c in CLASSES), line
    assert proc.returncode == 130 and stopped < 3, errors
    assert sum("still scoring with the previous classes" in e for e in errors) == 3  # each reported once
