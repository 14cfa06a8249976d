"""Deciding, not just ranking: per-class thresholds from ordinary footage, classes by example, "none of these".

The planted-actions cases use real recordings planted in a static scene and the seeded random
test-tiny model, calibrated at 1 false alarm per 100 windows (tests/planted.py says what and why).
"""

import copy
from pathlib import Path

import numpy as np
import planted
import pytest
import torch
from helpers import randomize_, report

from stdd_fast import ClassifierError, ConfigError, Engine, build_classifier, create_model
from stdd_fast.calibrate import _binomial_upper, calibrate, parse_rate
from stdd_fast.classifier import Classifier
from stdd_fast.examples import add_examples

W, H, FPS, STRIDE, RATE = planted.W, planted.H, planted.FPS, planted.STRIDE, planted.RATE
_write, _scene = planted.write, planted.scene


@pytest.fixture(scope="module")
def footage(planted_footage):
    return planted_footage


@pytest.fixture(scope="module")
def calibrated(planted_engine):
    return planted_engine


def test_planted_actions_are_detected_and_ordinary_footage_stays_quiet(footage, calibrated):
    engine, result = calibrated
    hits = {k: [0, 0] for k in footage["segments"]}
    outside = 0
    for w in engine.stream(str(footage["long"]), None, STRIDE):
        labels = {d.label for d in w.detected}
        inside = [k for k, (a, b) in footage["segments"].items() if a <= w.start_frame and w.end_frame < b]
        for k in inside:
            hits[k][0] += k in labels
            hits[k][1] += 1
        overlaps = any(w.start_frame < b and w.end_frame >= a for a, b in footage["segments"].values())
        outside += bool(labels) and not overlaps
    held = torch.cat([calibrate_scores(engine, f) for f in footage["held_out"]])  # [N, K]
    thresholds = result.classifier.calibration.thresholds
    rate = parse_rate(RATE).count / parse_rate(RATE).amount
    print(f"{'class':<10} {'planted windows detected':>26} {'held-out false alarms':>24} {'binomial 95% bound':>20}")
    for k, label in enumerate(engine.classes):
        over = int((held[:, k] > thresholds[k]).sum())
        bound = _upper_count(held.shape[0], rate)
        got = f"{hits[label][0]}/{hits[label][1]}" if label in hits else "-"
        print(f"{label:<10} {got:>26} {over:>15}/{held.shape[0]:<8} {bound:>20}")
        assert over <= bound, (label, over, bound)
    for label, (found, total) in hits.items():
        assert total >= 7 and found >= 0.9 * total, (label, found, total)
    assert outside == 0


def calibrate_scores(engine: Engine, path: Path) -> torch.Tensor:
    from stdd_fast.calibrate import window_scores

    scores, failed, _ = window_scores(engine, [str(path)], None, STRIDE)
    assert not failed
    return scores


def _upper_count(n: int, p: float) -> int:
    """The 95 % upper bound of Binomial(n, p) counts: the smallest c with P[X <= c] >= 0.95."""
    total, term = 0.0, (1 - p) ** n
    for c in range(n + 1):
        total += term
        if total >= 0.95:
            return c
        term *= (n - c) / (c + 1) * p / (1 - p)
    return n


def test_a_window_of_two_actions_detects_both(footage, calibrated):
    engine, _ = calibrated
    bunny, bikes = footage["planted"]["bunny"], footage["planted"]["bikes"]
    mixed = _write(footage["dir"] / "both.mp4", (bunny[:18] + bikes[:6]) * 2)  # 3 of 4 sampled frames bunny
    windows = [w for w in engine.stream(str(mixed), None, STRIDE)]
    for w in windows:
        print(w.start_frame, [(d.label, round(d.confidence, 4)) for d in w.detected])
    assert windows and all({"bunny", "bikes"} <= {d.label for d in w.detected} for w in windows)


def test_the_ranking_is_the_same_bit_for_bit(footage, calibrated):
    engine, result = calibrated
    videos = [str(footage["long"]), *map(str, footage["examples"]["bikes"])]
    engine.set_classifier(result.classifier)
    decided = engine.classify(videos, top_k=4)
    engine.set_classifier(dataclass_without_decisions(result.classifier))
    plain = engine.classify(videos, top_k=4)
    engine.set_classifier(result.classifier)
    for a, b in zip(decided, plain, strict=True):
        assert a.labels == b.labels and a.scores == b.scores and torch.equal(a.logits, b.logits)
        assert b.detected is None and "detected" not in b.to_dict() and isinstance(a.detected, list)
        assert {k: v for k, v in a.to_dict().items() if k not in ("detected", "timings")} == {
            k: v for k, v in b.to_dict().items() if k != "timings"
        }


def dataclass_without_decisions(classifier: Classifier) -> Classifier:
    import dataclasses

    return dataclasses.replace(classifier, calibration=None)


def test_the_calibrated_artifact_travels_and_is_checked(tmp_path, footage, calibrated):
    engine, result = calibrated
    path = result.classifier.save(tmp_path / "calibrated.safetensors")
    back = Classifier.load(path)
    assert torch.equal(back.calibration.thresholds, result.classifier.calibration.thresholds)
    assert back.calibration.provenance["windows"] == result.scores.shape[0] and back.examples.keys() == {
        "bunny",
        "bikes",
    }
    prov = back.calibration.provenance
    print({k: prov[k] for k in ("false_alarms", "footage_s", "windows", "model", "sampling", "stride", "date")})
    # another model (its visual tower retrained, the text tower the same): refused with the reason
    other = copy.deepcopy(engine.model)
    with torch.no_grad():
        other.visual.proj.add_(0.01)
    with pytest.raises(ClassifierError, match="calibrated with another model"):
        Engine(other, classifier=path, backend="torch", num_views=1, sampling_rate=4)
    # other views: refused with the reason
    with pytest.raises(ConfigError, match="calibrated for other views"):
        Engine(engine.model, classifier=path, backend="torch", num_views=1, sampling_rate=16)
    # thresholds edited to NaN or out of range: refused on load
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    for bad in (float("nan"), 3.0):
        tensors["thresholds"][0] = bad
        save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=meta)
        with pytest.raises(ClassifierError, match="NaN or outside"):
            Classifier.load(tmp_path / "edited.safetensors")


def test_bad_footage_is_counted_and_the_run_goes_on(tmp_path, footage, calibrated):
    engine, _ = calibrated
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 100)
    short = _write(tmp_path / "short.mp4", _scene(10, 5))  # shorter than one window
    files = [*footage["background"], empty, garbage, short]
    result = calibrate(engine, files, false_alarms=RATE, stride=STRIDE)
    print(result.failed)
    assert set(result.failed) == {str(empty), str(garbage), str(short)}
    assert "shorter than one window" in result.failed[str(short)] or "no window" in result.failed[str(short)]
    assert result.scores.shape[0] >= 300  # the good footage was scored
    with pytest.raises(ConfigError, match=r"too little background footage for 1/h: .* takes at least \d+ windows"):
        calibrate(engine, footage["background"], false_alarms="1/h", stride=STRIDE)
    for bad in ("0/h", "-1/h", "1/0h", "x", float("nan"), 0):
        with pytest.raises(ConfigError, match="false_alarms="):
            calibrate(engine, footage["background"], false_alarms=bad)
    with pytest.raises(ConfigError, match="too little background footage"):
        calibrate(engine, [short, empty], false_alarms=RATE)
    with pytest.raises(ClassifierError, match=f"example clip {garbage} of class 'broken' failed"):
        add_examples(engine, {"broken": [garbage]})


def test_positives_aim_at_a_recall(footage, calibrated):
    engine, _ = calibrated
    positives = {"bikes": footage["examples"]["bikes"]}
    result = calibrate(
        engine, footage["background"], false_alarms=RATE, stride=STRIDE, positives=positives, aim="recall", recall=0.9
    )
    bikes = next(c for c in result.classes if c.label == "bikes")
    print(result.table())
    assert bikes.aim == "recall" and bikes.positives_above >= 0.9 * bikes.positives
    assert next(c for c in result.classes if c.label == "bunny").aim == "false_alarms"


def test_background_prompts_decide_before_any_calibration(footage):
    model = randomize_(create_model("test-tiny"), seed=0)
    classifier = build_classifier(model, ["juggling", "surfing"], background=["an empty loading dock"])
    assert classifier.background[-1] == "an empty loading dock" and classifier.background_weights.shape[0] == 9
    engine = Engine(model, classifier=classifier, backend="torch", num_views=1)
    (result,) = engine.classify([str(footage["held_out"][0])])
    tau = float(engine.logit_scale.exp())
    s = result.view_scores.mean(0) / tau
    from stdd_fast.head import score

    emb = engine.embed([str(footage["held_out"][0])])[0]
    s_bg = (score(emb, classifier.background_weights, engine.logit_scale) / tau).mean(0).max()
    expected = {engine.classes[k] for k in range(2) if s[k] > s_bg}
    assert {d.label for d in result.detected} == expected
    for d in result.detected:
        assert d.threshold == pytest.approx(float(s_bg)) and d.confidence == pytest.approx(
            float(torch.sigmoid(tau * (d.score - s_bg))), rel=1e-5
        )
    report("background reference s (held-out scene)", float(s_bg))


def test_rates_and_bounds():
    assert parse_rate("1/h").amount == 3600 and parse_rate("2/min").count == 2
    assert parse_rate("1/1000w").unit == "windows" and parse_rate("1/1000w").amount == 1000
    assert parse_rate(0.01).amount == 1.0
    assert 0.0 < _binomial_upper(0, 100) < 0.031 and _binomial_upper(100, 100) == 1.0


def test_the_command_line_workflow(tmp_path, footage):
    """build-classifier (text + example classes + background) -> calibrate -> classify / stream with decisions."""
    import csv
    import json
    import subprocess
    import sys

    from stdd_fast import save_checkpoint

    weights = save_checkpoint(randomize_(create_model("test-tiny"), seed=0), tmp_path / "w.safetensors")
    stdd = [sys.executable, "-m", "stdd_fast.cli"]
    common = ["--weights", str(weights), "--device", "cpu", "--frames", "8", "--sampling-rate", "4"]
    classes = tmp_path / "classes.safetensors"
    built = subprocess.run(
        [*stdd, "build-classifier", *common, "--classes", "juggling,surfing", "--background",
         "--example", f"bunny={footage['examples']['bunny'][0]}",
         "--example", f"bikes={footage['examples']['bikes'][0]}", "-o", str(classes), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["classes"] == 4
    calibrated = tmp_path / "calibrated.safetensors"
    run = subprocess.run(
        [*stdd, "calibrate", *common, "--classifier", str(classes), "--background", *map(str, footage["background"]),
         "--false-alarms", RATE, "--stride", str(STRIDE), "-o", str(calibrated), "--plot", str(tmp_path / "dist.png")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(run.stdout, run.stderr)
    assert run.returncode == 0 and "369 windows of 3 files" in run.stdout and (tmp_path / "dist.png").stat().st_size
    assert "bunny" in run.stdout and "windows/s" in run.stdout
    videos = [str(footage["long"]), str(footage["examples"]["bunny"][0])]
    results = tmp_path / "results.csv"
    classify = subprocess.run(
        [*stdd, "classify", *videos, *common, "--views", "1", "--classifier", str(calibrated), "--json", "-o",
         str(results)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert classify.returncode == 0, classify.stderr
    printed = [json.loads(line)["detected"] for line in classify.stdout.strip().splitlines()]
    rows = list(csv.DictReader(results.open()))
    print("classify --json:", printed, "| csv:", [(r["detected"], r["confidences"]) for r in rows])
    assert [r["detected"] for r in rows] == [";".join(d["label"] for d in found) for found in printed]
    assert "bunny" in rows[1]["detected"].split(";")  # an example clip of the class is detected as it
    brief = subprocess.run(
        [*stdd, "classify", *videos, *common, "--views", "1", "--classifier", str(calibrated), "--detected-only"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert brief.returncode == 0, brief.stderr
    shown = [", ".join(f"{d['label']} {d['confidence']:.3f}" for d in found) or "none" for found in printed]
    assert brief.stdout.splitlines() == [f"{v}: {s}" for v, s in zip(videos, shown, strict=True)]
    undecided = subprocess.run(
        [*stdd, "classify", videos[0], *common, "--classes", "juggling,surfing", "--detected-only"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert undecided.returncode == 2 and "stdd calibrate" in undecided.stderr, undecided.stderr
    stream = subprocess.run(
        [*stdd, "stream", str(footage["long"]), *common, "--classifier", str(calibrated), "--stride", str(STRIDE)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert stream.returncode == 0, stream.stderr
    assert "detected: bunny" in stream.stdout and "detected: none" in stream.stdout


def test_decisions_travel_into_exports_batch_rows_and_served_answers(tmp_path, footage, calibrated):
    """The same detections from an exported graph (thresholds in its spec), a batch row and a served answer."""
    import json

    from stdd_fast.export import export_onnx
    from stdd_fast.serve.model import ServingSettings, VideoService, read_request

    engine, result = calibrated
    video = str(footage["examples"]["bikes"][0])
    (want,) = engine.classify([video])
    assert [d.label for d in want.detected] == ["bikes"]
    onnx = export_onnx(engine.model, result.classifier, tmp_path / "calibrated.onnx")
    exported = Engine(onnx, num_views=1, sampling_rate=4)
    (got,) = exported.classify([video])
    assert [d.label for d in got.detected] == [d.label for d in want.detected]
    for a, b in zip(got.detected, want.detected, strict=True):
        assert abs(a.score - b.score) <= 1e-5 and abs(a.confidence - b.confidence) <= 1e-3
    background_only = build_classifier(engine.model, ["juggling"], background=True)
    with pytest.raises(ConfigError, match="decides by background prompts"):
        export_onnx(engine.model, background_only, tmp_path / "bg.onnx")

    artifact = result.classifier.save(tmp_path / "calibrated.safetensors")
    from stdd_fast import save_checkpoint

    weights = save_checkpoint(engine.model, tmp_path / "w.safetensors")
    from stdd_fast.predict import PredictorConfig
    from stdd_fast.video import SamplingConfig

    settings = ServingSettings(
        str(weights),
        "calibrated.safetensors",
        PredictorConfig(backend="torch"),
        SamplingConfig(num_views=1, sampling_rate=4),
    )
    service = VideoService(settings, tmp_path)
    try:
        files, top_k = read_request(np.array([[Path(video).read_bytes()]], dtype=object), None)
        (answers,) = service.classify([(files, top_k)])
    finally:
        service.close()
    served = json.loads(answers[0].detected_json())
    assert [d["label"] for d in served] == [d.label for d in want.detected]
    print("detected (torch, exported, served):", [d.to_dict() for d in want.detected], served, artifact)
