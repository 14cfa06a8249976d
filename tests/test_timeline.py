"""Which action when: timelines of files, live events of the same file played as a stream, outputs, the motion gate.

The planted case is tests/planted.py's (real recordings in a static scene, the seeded random test-tiny
model, classes by example, thresholds calibrated at 1/100 windows).
"""

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import planted
import pytest
from helpers import interruptible, report

from stdd_fast.timeline.segments import SegmentConfig

SEGMENTS = SegmentConfig(min_duration=0.5, merge_gap=0.5)  # the planted actions last 3 and 6 s


def tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def test_the_timeline_recovers_the_planted_actions_and_live_events_agree(planted_footage, planted_engine):
    engine, _ = planted_engine
    long = str(planted_footage["long"])
    timeline = engine.timeline(long, stride=planted.STRIDE, segments=SEGMENTS)
    truth = {k: (a / planted.FPS, b / planted.FPS) for k, (a, b) in planted_footage["segments"].items()}
    print(f"\n{'planted':<8} {'truth s':>16} {'found s':>16} {'tIoU':>6}")
    for label, span in truth.items():
        found = [s for s in timeline.segments if s.label == label and tiou((s.start_time, s.end_time), span) > 0]
        best = max(found, key=lambda s: tiou((s.start_time, s.end_time), span))
        iou = tiou((best.start_time, best.end_time), span)
        print(f"{label:<8} {span[0]:7.2f}-{span[1]:<7.2f} {best.start_time:7.2f}-{best.end_time:<7.2f} {iou:6.3f}")
        assert iou >= 0.8, (label, iou)
    # nothing on the static background: every segment overlaps a planted action
    background = [s for s in timeline.segments if all(tiou((s.start_time, s.end_time), t) == 0 for t in truth.values())]
    assert not background, background
    # the same file played as a stream: the same segments, as close events
    events = list(engine.events(long, stride=planted.STRIDE, segments=SEGMENTS))
    closed = [(e.label, e.start_time, e.end_time) for e in events if e.kind == "close"]
    assert sorted(closed) == sorted((s.label, s.start_time, s.end_time) for s in timeline.segments)
    assert [e.sequence for e in events] == list(range(len(events)))
    opened = {e.id for e in events if e.kind == "open"}
    assert opened == {e.id for e in events if e.kind == "close"}  # every action opened once and closed once
    assert all(e.end_time is None for e in events if e.kind == "open")
    print(f"{timeline.windows} windows, {timeline.skipped} skipped by the motion gate, {len(events)} events")


def test_outputs_subtitles_png_and_annotated_video(tmp_path, planted_footage, planted_engine, capsys):
    from stdd_fast.timeline import outputs

    engine, result = planted_engine
    timeline = engine.timeline(
        str(planted_footage["long"]), stride=planted.STRIDE, segments=SEGMENTS, keep_windows=True, progress=True
    )
    bar = capsys.readouterr().err  # the progress a long file shows: video seconds done, elapsed<ETA
    assert re.search(r"timeline long\.mp4: .*\d+(\.\d)?/\d+(\.\d)?s? \[\d\d:\d\d<\d\d:\d\d", bar), bar[-500:]
    assert len(timeline.window_scores) == timeline.windows
    vtt = outputs.write_vtt(tmp_path / "long.vtt", timeline.segments)
    srt = outputs.write_srt(tmp_path / "long.srt", timeline.segments)
    for path in (vtt, srt):  # FFmpeg reads them as subtitle streams, one cue per segment
        with av.open(str(path)) as c:
            cues = [p for p in c.demux(c.streams.subtitles[0]) if p.size]
        assert len(cues) == len(timeline.segments), path
    assert re.match(r"WEBVTT\n\n1\n\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n", vtt.read_text())
    png = outputs.plot(tmp_path / "long.png", timeline, result.classifier.decider(engine.logit_scale).on_levels())
    assert png.stat().st_size > 10_000
    rows = [
        json.loads(x) for x in outputs.write_segments(tmp_path / "s.jsonl", timeline.segments).read_text().splitlines()
    ]
    assert [r["label"] for r in rows] == [s.label for s in timeline.segments]
    assert outputs.write_segments(tmp_path / "s.csv", timeline.segments).read_text().startswith("source,label,")
    annotated = outputs.annotate(planted_footage["long"], tmp_path / "annotated.mp4", timeline.segments)
    with av.open(str(annotated)) as c:
        assert c.streams.video[0].frames == sum(1 for _ in av.open(str(planted_footage["long"])).decode(video=0))
    print(f"wrote {vtt}, {srt}, {png} ({png.stat().st_size} bytes), {annotated}")


def test_the_motion_gate_skips_still_windows_only(planted_footage, planted_engine):
    engine, _ = planted_engine
    long = str(planted_footage["long"])
    gated = engine.timeline(long, stride=planted.STRIDE, segments=SEGMENTS)
    every = engine.timeline(long, stride=planted.STRIDE, segments=SEGMENTS, motion_gate=None)
    assert gated.segments == every.segments and every.skipped == 0 and gated.windows == every.windows
    share = gated.skipped / gated.windows
    report("share of windows the motion gate skipped on the planted file (2/3 static)", share)
    assert share > 0.3
    for sample in planted.SAMPLES.values():  # recorded motion: never skipped
        moving = engine.timeline(str(sample), stride=planted.STRIDE, segments=SEGMENTS)
        print(sample.name, moving.windows, "windows,", moving.skipped, "skipped")
        assert moving.windows > 0 and moving.skipped == 0


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_an_hour_of_video_keeps_memory_flat_and_ctrl_c_keeps_what_closed(tmp_path, planted_footage, planted_engine):
    """One hour of the static scene at 4 fps (64 x 48) with the bunny planted every ten minutes."""
    engine, result = planted_engine
    classifier = result.classifier.save(tmp_path / "calibrated.safetensors")
    from stdd_fast import save_checkpoint

    weights = save_checkpoint(engine.model, tmp_path / "w.safetensors")
    bunny = planted_footage["planted"]["bunny"][::6]  # 12 frames: 3 s at 4 fps
    fps, minute = 4, 240

    def video(minutes: int, path: Path) -> Path:
        frames = []
        for m in range(minutes):
            frames += planted.scene(minute - (len(bunny) if m % 10 == 5 else 0), 40 + m, start=m * minute)
            if m % 10 == 5:
                frames += bunny
        return planted.write(path, frames, fps=fps)

    hour = video(60, tmp_path / "hour.mp4")
    cmd = [sys.executable, "-m", "stdd_fast.cli", "timeline", "--weights", str(weights),
           "--classifier", str(classifier), "--device", "cpu", "--sampling-rate", "4", "--stride", "8",
           "--min-duration", "0.5", "--merge-gap", "0.5", "--backend", "torch", "--json"]  # fmt: skip
    # Flat means: what the process holds does not grow with the video it has read. Segments print as they close,
    # so the RSS read at each bunny segment (minutes 5, 15, ..., 55) is the memory after that much video, past
    # start-up (imports, model) and before the end (drawing the picture), whose peaks depend on timing, not length.
    start, segments, rss = time.monotonic(), [], []
    with open(tmp_path / "stderr", "w") as stderr_file:
        proc = subprocess.Popen(
            [*cmd, str(hour), "-o", str(tmp_path / "out-hour")], stdout=subprocess.PIPE, stderr=stderr_file, text=True
        )
    guard = threading.Timer(600, proc.kill)  # bounds the reading below: a hung run ends its output
    guard.start()
    try:
        for line in proc.stdout:
            segments.append(json.loads(line))
            if segments[-1]["label"] == "bunny":
                rss.append(_rss_mib(proc.pid))
        proc.wait(timeout=60)
    finally:
        guard.cancel()
        proc.kill()
    stderr = (tmp_path / "stderr").read_text()
    assert proc.returncode == 0, stderr
    found = len(segments)
    print(f"hour.mp4: {found} segments, RSS at each bunny (MiB) {[round(x) for x in rss]}, "
          f"{time.monotonic() - start:.1f} s; {stderr.strip().splitlines()[-1]}")  # fmt: skip
    assert len(rss) == 6  # the bunny found in each of the six ten-minute blocks
    assert report("largest RSS growth from minute 5 to a later bunny of the video, MiB", max(rss) - rss[0]) < 32
    # Ctrl-C in the middle: exit 130, and the segments closed by then are written
    out = tmp_path / "out-interrupted"
    proc = subprocess.Popen(
        [*cmd, str(hour), "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=interruptible,
    )  # fmt: skip
    lines, start = [], time.monotonic()
    while len(lines) < 2 and time.monotonic() - start < 300:  # two segments printed: well into the file
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted in" in stderr
    written = [json.loads(x) for x in (out / "hour.segments.jsonl").read_text().splitlines()]
    assert 2 <= len(written) < found and all(s["end_time"] > s["start_time"] for s in written)
    assert (out / "hour.vtt").is_file()
    print(f"interrupted after {len(written)} segments: {stderr.strip().splitlines()[-1]}")


def test_segmenter_hysteresis_merge_and_cooldown():
    """Hand-made decisions: the state machine, checked window by window."""
    import torch

    from stdd_fast.timeline.segments import Segmenter, Window

    def windows(confidences: list[float], threshold: float = 0.9):
        for i, c in enumerate(confidences):  # one window a second, 2 s long: centres at i + 1
            yield Window(
                i, i * 10, i * 10 + 20, float(i), float(i + 2), torch.tensor([c > threshold]), torch.tensor([c])
            )

    def run(confidences, config):
        seg = Segmenter(["a"], config)
        events = [e for w in windows(confidences) for e in seg.push("s", w)] + seg.finish("s")
        return [(s.start_time, s.end_time, s.windows) for s in seg.segments], events, seg.flickers

    plain = SegmentConfig(min_duration=0.0, merge_gap=0.0)
    dips = [0.1, 0.95, 0.95, 0.85, 0.95, 0.95, 0.1, 0.1]
    assert run(dips, plain)[0] == [(1.5, 3.5, 2), (4.5, 6.5, 2)]  # the dip at 0.85 splits it
    assert run(dips, SegmentConfig(off_level=0.8, min_duration=0.0, merge_gap=0.0))[0] == [(1.5, 6.5, 5)]
    assert run(dips, SegmentConfig(min_duration=0.0, merge_gap=1.5))[0] == [(1.5, 6.5, 4)]  # merged over the gap
    assert run([0.1, 0.95, 0.1, 0.1], SegmentConfig(min_duration=1.5, merge_gap=0.0))[2] == 1  # a flicker
    spans, events, _ = run(
        [0.95, 0.1, 0.1, 0.95, 0.1, 0.1, 0.1, 0.95], SegmentConfig(min_duration=0, merge_gap=0, cooldown=4)
    )
    assert [s[0] for s in spans] == [0.5, 7.5]  # the one at 3.5 s came inside the cooldown
    assert [e.kind for e in events] == ["open", "close", "open", "close"] and events[0].id == events[1].id
    with pytest.raises(Exception, match=r"off_level=0\.95 is above on_level=0\.9"):
        SegmentConfig(on_level=0.9, off_level=0.95)


def test_timelines_need_a_classifier_that_decides(planted_footage):
    from stdd_fast import ConfigError, Engine, create_model

    engine = Engine(create_model("test-tiny", seed=0), classes=["a", "b"], backend="torch", num_views=1)
    with pytest.raises(ConfigError, match="timelines and events segment decisions"):
        engine.timeline(str(planted_footage["long"]))
