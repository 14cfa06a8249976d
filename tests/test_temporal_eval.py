"""Temporal localisation metrics: hand-computed cases, readers, the --timeline glue, and ActivityNet's code.

Every expected AP below is derived on paper in the comments with ActivityNet's rule: predictions in
descending score, each a hit when an unmatched ground truth of its class in its video has tIoU >= the
threshold (the one of highest tIoU), P_i = hits_i / i, R_i = hits_i / #gt, AP = sum over recall steps
of (R_i - R_{i-1}) * max(P_j for j >= i) (VOC 2011 interpolation).
"""

import importlib.util
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from stdd_fast.errors import ClassifierError, ConfigError, VideoError
from stdd_fast.training.temporal_eval import (
    Annotations,
    GroundTruth,
    Prediction,
    average_precision,
    check_labels,
    evaluate_detections,
    evaluate_timelines,
    event_scores,
    format_table,
    interpolated_ap,
    mean_average_precision,
    read_annotations,
    temporal_iou,
)

# Two videos of "jump" and one of "run" (the worked case the module is checked on).
GT = [("v1", "jump", 0.0, 10.0), ("v2", "jump", 20.0, 30.0), ("v1", "run", 0.0, 10.0)]
PRED = [
    ("v1", "jump", 1.0, 10.0, 0.9),  # tIoU with v1 jump [0, 10]: 9 / 10 = 0.9
    ("v1", "jump", 40.0, 50.0, 0.8),  # overlaps nothing
    ("v2", "jump", 20.0, 28.0, 0.7),  # tIoU with v2 jump [20, 30]: 8 / 10 = 0.8
    ("v1", "run", 0.0, 4.0, 0.6),  # tIoU with v1 run [0, 10]: 4 / 10 = 0.4
]


def test_temporal_iou_by_hand():
    cases = [
        ((0, 10), (1, 10), 0.9),  # inside: 9 / 10
        ((0, 10), (5, 15), 5 / 15),  # half over: 5 / (10 + 10 - 5)
        ((0, 10), (10, 20), 0.0),  # touching: no intersection
        ((0, 10), (30, 40), 0.0),
        ((5, 5), (5, 5), 1.0),  # the same instant
        ((5, 5), (6, 6), 0.0),  # two instants apart (ActivityNet: 0/0 = NaN)
        ((5, 5), (0, 10), 0.0),  # an instant inside a segment: 0 / 10
    ]
    for a, b, want in cases:
        got = temporal_iou(a, b)
        print(f"[measured] tIoU{a}{b} = {got:.6f} (hand {want:.6f})")
        assert got == pytest.approx(want, abs=1e-15) and temporal_iou(b, a) == got


def test_interpolation_by_hand():
    # P = [1, 1/2, 2/3], R = [1/2, 1/2, 1]: padded P [0, 1, .5, .667, 0] -> right max [1, 1, .667, .667, 0];
    # recall steps 0 -> .5 (x 1) and .5 -> 1 (x .667): AP = .5 + .333 = 5/6
    got = interpolated_ap([1, 1 / 2, 2 / 3], [1 / 2, 1 / 2, 1])
    print(f"[measured] interpolated AP {got!r} (hand 5/6)")
    assert got == pytest.approx(5 / 6, abs=1e-15)
    assert interpolated_ap([], []) == 0.0  # no predictions


def test_two_ground_truths_three_predictions_by_hand():
    jump = [g for g in GT if g[1] == "jump"]
    preds = [p for p in PRED if p[1] == "jump"]
    # tIoU 0.5: hit, miss, hit -> P [1, 1/2, 2/3], R [1/2, 1/2, 1] -> AP 5/6 (above)
    # tIoU 0.85: hit (0.9), miss, miss (0.8 < 0.85) -> P [1, 1/2, 1/3], R [1/2, 1/2, 1/2] -> AP 1/2 · 1 = 1/2
    # tIoU 0.95: no hit -> AP 0
    got = {t: average_precision(preds, jump, t) for t in (0.5, 0.85, 0.95)}
    print(f"[measured] AP by tIoU {got} (hand 5/6, 1/2, 0)")
    assert got[0.5] == pytest.approx(5 / 6, abs=1e-15) and got[0.85] == 0.5 and got[0.95] == 0.0


def test_map_and_events_over_two_classes_by_hand():
    # jump: AP 5/6 at every threshold 0.3..0.7 (tIoUs 0.9, 0.8). run: one prediction of tIoU 0.4 -> hit at
    # 0.3 and 0.4 (AP 1: P [1], R [1]), miss at 0.5..0.7 (AP 0).
    # mAP: 0.3, 0.4 -> (5/6 + 1) / 2 = 11/12; 0.5..0.7 -> (5/6 + 0) / 2 = 5/12; average (2·11/12 + 3·5/12) / 5 = 37/60
    got = mean_average_precision(PRED, GT)
    print(f"[measured] mAP {got['mAP']} average {got['average_mAP']} (hand 11/12 x2, 5/12 x3, 37/60)")
    assert got["mAP"] == pytest.approx([11 / 12, 11 / 12, 5 / 12, 5 / 12, 5 / 12], abs=1e-15)
    assert got["average_mAP"] == pytest.approx(37 / 60, abs=1e-15)
    # events at tIoU 0.5: jump 3 predictions, 2 hits, 2 gt -> P 2/3, R 1, F1 2·2 / (3 + 2) = 0.8;
    # run 1 prediction, 0 hits -> P 0, R 0, F1 0; pooled 4 predictions, 3 gt, 2 hits -> P 1/2, R 2/3,
    # F1 4/7; macro F1 (0.8 + 0) / 2 = 0.4
    ev = event_scores(PRED, GT, 0.5)
    print(f"[measured] events {ev['per_class']} micro {ev['micro']} macro F1 {ev['macro_f1']}")
    assert (ev["per_class"]["jump"]["precision"], ev["per_class"]["jump"]["recall"]) == (2 / 3, 1.0)
    assert ev["per_class"]["jump"]["f1"] == pytest.approx(0.8) and ev["per_class"]["run"]["f1"] == 0.0
    assert ev["micro"]["f1"] == pytest.approx(4 / 7) and ev["macro_f1"] == pytest.approx(0.4)


def test_ties_in_score_keep_the_input_order():
    gt = [("v", "a", 0.0, 10.0)]
    hit, miss = ("v", "a", 0.0, 10.0, 0.5), ("v", "a", 50.0, 60.0, 0.5)
    # hit first: P [1, 1/2], R [1, 1] -> AP 1. miss first: P [0, 1/2], R [0, 1] -> right max [.5, .5] -> AP 1/2.
    # (ActivityNet's argsort()[::-1] reverses tied scores for small inputs and leaves large ones to chance.)
    first, second = average_precision([hit, miss], gt, 0.5), average_precision([miss, hit], gt, 0.5)
    print(f"[measured] tied scores: AP {first} (hit listed first), {second} (miss listed first)")
    assert (first, second) == (1.0, 0.5)
    # two tied hits on two ground truths: the order cannot matter -> AP 1
    two = [("v", "a", 0.0, 10.0), ("v", "a", 20.0, 30.0)]
    assert average_precision([("v", "a", 20.0, 30.0, 0.5), ("v", "a", 0.0, 10.0, 0.5)], two, 0.5) == 1.0


def test_a_prediction_over_two_ground_truths_takes_the_best_one():
    gt = [("v", "a", 0.0, 10.0), ("v", "a", 10.0, 20.0)]
    # p [0, 18]: tIoU 10/18 = .556 with [0, 10], 8/20 = .4 with [10, 20]; at 0.4 both qualify -> takes [0, 10].
    # q [0, 10] (lower score): [0, 10] is taken, [10, 20] has tIoU 0 -> false positive (greedy, not optimal).
    # P [1, 1/2], R [1/2, 1/2] -> AP 1/2; events: 1 hit of 2 predictions and 2 gt -> F1 1/2
    preds = [("v", "a", 0.0, 18.0, 0.9), ("v", "a", 0.0, 10.0, 0.8)]
    got = average_precision(preds, gt, 0.4)
    f1 = event_scores(preds, gt, 0.4)["per_class"]["a"]["f1"]
    print(f"[measured] one prediction over two ground truths: AP {got}, F1 {f1} (hand 1/2, 1/2)")
    assert got == 0.5 and f1 == 0.5


def test_duplicates():
    one = [("v", "a", 0.0, 10.0)]
    dup = [("v", "a", 0.0, 10.0, 0.9), ("v", "a", 0.0, 10.0, 0.8)]
    # duplicate predictions: hit then false positive: P [1, 1/2], R [1, 1] -> AP 1; event P 1/2, R 1, F1 2/3
    ap, ev = average_precision(dup, one, 0.5), event_scores(dup, one, 0.5)["per_class"]["a"]
    # duplicate ground truth: one prediction finds one of them: P [1], R [1/2] -> AP 1/2
    ap_gt = average_precision(dup[:1], one * 2, 0.5)
    print(f"[measured] duplicate predictions AP {ap} F1 {ev['f1']}; duplicate ground truth AP {ap_gt}")
    assert ap == 1.0 and (ev["precision"], ev["recall"]) == (0.5, 1.0) and ev["f1"] == pytest.approx(2 / 3)
    assert ap_gt == 0.5


def test_no_predictions_no_ground_truth_and_other_videos():
    assert average_precision([], GT[:1], 0.5) == 0.0  # ActivityNet: AP 0 without predictions
    assert average_precision(PRED[:1], [], 0.5) is None  # undefined without ground truth
    preds = [*PRED, ("v1", "ghost", 0.0, 5.0, 0.99), ("v9", "jump", 0.0, 10.0, 0.95)]
    got = mean_average_precision(preds, GT)
    # "ghost" has no ground truth: listed apart, not in the mean. v9 has no jump: a false positive ranked first:
    # jump P [0, 1/2, 1/3, 1/2], R [0, 1/2, 1/2, 1] -> right max [.5, .5, .5, .5] -> AP 1/2 · .5 + 1/2 · .5 = 1/2
    print(f"[measured] with a ghost class and a foreign video: jump AP {got['per_class']['jump']}")
    assert got["labels_without_ground_truth"] == ["ghost"] and set(got["per_class"]) == {"jump", "run"}
    assert got["per_class"]["jump"] == [0.5] * 5
    ev = event_scores(preds, GT, 0.5)["per_class"]
    assert ev["ghost"] == {"predictions": 1, "ground_truth": 0, "hits": 0, "precision": 0.0, "recall": None, "f1": 0.0}
    ev = event_scores([], GT, 0.5)
    assert ev["per_class"]["run"]["precision"] is None and ev["per_class"]["run"]["f1"] == 0.0
    assert mean_average_precision(PRED, [])["mAP"] is None


def test_zero_length_segments():
    gt = [("v", "a", 5.0, 5.0), ("v", "a", 20.0, 30.0)]
    # [5, 5] meets [5, 5] (tIoU 1): hit; [25, 25] inside [20, 30]: tIoU 0: miss -> P [1, 1/2], R [1/2, 1/2] -> AP 1/2
    got = average_precision([("v", "a", 5.0, 5.0, 0.9), ("v", "a", 25.0, 25.0, 0.8)], gt, 0.5)
    print(f"[measured] zero-length: AP {got} (hand 1/2)")
    assert got == 0.5


def test_bad_records_and_thresholds_are_config_errors():
    with pytest.raises(ConfigError, match="start <= end"):
        average_precision([("v", "a", 5.0, 1.0, 0.5)], GT, 0.5)
    with pytest.raises(ConfigError, match="finite"):
        average_precision([("v", "a", 0.0, 1.0, float("nan"))], GT, 0.5)
    for bad in ([0.0], [1.5], []):
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            mean_average_precision(PRED, GT, bad)


def test_report_and_table():
    report = evaluate_detections([Prediction(*p) for p in PRED], [GroundTruth(*g) for g in GT])
    table = format_table(report)
    print(table)
    assert report["mAP"]["0.3"] == pytest.approx(11 / 12) and report["per_class"]["jump"]["ap"]["0.7"] == pytest.approx(
        5 / 6
    )
    assert report["events"]["micro"]["hits"] == 2 and report["unit"] == "fraction"
    assert "AP@0.3" in table and "61.7 %" in table and "91.7" in table  # average mAP 37/60, mAP@0.3 11/12


# --- readers ----------------------------------------------------------------------------------


ANET = """{
  "version": "1.3",
  "taxonomy": [],
  "database": {
    "vid_a": {
      "subset": "validation",
      "duration": 120.5,
      "url": "https://example.invalid/a",
      "annotations": [
        {"segment": [1.5, 9.25], "label": "Long jump"},
        {"segment": [30, 42], "label": "Shot put"}
      ]
    },
    "vid_b": {"subset": "validation", "duration": 60, "annotations": []},
    "vid_c": {"subset": "training", "annotations": [{"segment": [0, 1], "label": "Long jump"}]}
  }
}
"""


def test_activitynet_json(tmp_path):
    path = tmp_path / "anet.json"
    path.write_text(ANET)
    ann = read_annotations(path, subset="validation")
    print(f"[measured] {ann}")
    assert ann.videos == ("vid_a", "vid_b") and ann.durations == {"vid_a": 120.5, "vid_b": 60.0}
    assert ann.segments == (
        GroundTruth("vid_a", "Long jump", 1.5, 9.25),
        GroundTruth("vid_a", "Shot put", 30.0, 42.0),
    )
    assert ann.labels == ["Long jump", "Shot put"] and len(read_annotations(path).videos) == 3
    with pytest.raises(ConfigError, match=r"subset 'test'.*training, validation"):
        read_annotations(path, subset="test")


@pytest.mark.parametrize(
    "old, new, line, words",
    [
        ('"duration": 60, "annotations": []}', '"duration": 60, "annotations": []},}', 14, "not valid JSON"),
        ('"segment": [30, 42]', '"segment": [30]', 5, "vid_a.*annotation 1.*segment"),
        ('"segment": [30, 42]', '"segment": [42, 30]', 5, "vid_a.*annotation 1.*end 30 s is before start 42 s"),
        ('"segment": [0, 1], "label": "Long jump"', '"segment": [0, 1]', 15, "vid_c.*annotation 0.*label"),
        ('"segment": [0, 1]', '"segment": [0, "x"]', 15, "vid_c.*end must be a time"),
        ('"duration": 60,', '"duration": -1,', 14, "vid_b.*duration"),
    ],
)
def test_malformed_json_names_file_line_and_field(tmp_path, old, new, line, words):
    """A syntax error names its own line; a bad entry the line of its video's key, its index and field."""
    path = tmp_path / "anet.json"
    assert old in ANET
    path.write_text(ANET.replace(old, new, 1))
    with pytest.raises(ConfigError, match=words) as e:
        read_annotations(path)
    print(f"[measured] {e.value}")
    assert str(e.value).startswith(f"{path}:{line}:")


def test_csv(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("\ufefflabel,video_id,start,end\nLong jump,v1,1.5,9\n\nShot put, v2 ,30,42\n")  # with a BOM
    ann = read_annotations(path)
    assert ann.videos == ("v1", "v2")
    assert ann.segments == (GroundTruth("v1", "Long jump", 1.5, 9.0), GroundTruth("v2", "Shot put", 30.0, 42.0))
    with pytest.raises(ConfigError, match="no subsets"):
        read_annotations(path, subset="test")


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("video,start,end,label\nv1,0,1,a\n", 1, "missing video_id"),
        ("video_id,start,end,label\nv1,0,1,a\nv1,zero,1,a\n", 3, "start must be a time"),
        ("video_id,start,end,label\nv1,0,1,a\n\nv1,0,1\n", 4, "3 fields where the header has 4"),
        ("video_id,start,end,label\nv1,5,1,a\n", 2, "swap"),
        ("video_id,start,end,label\n,0,1,a\n", 2, "video_id is empty"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "gt.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as e:
        read_annotations(path)
    print(f"[measured] {e.value}")
    assert str(e.value).startswith(f"{path}:{line}:")


def test_thumos14_folder(tmp_path):
    (tmp_path / "BaseballPitch_test.txt").write_text("video_test_0000004 1.0 2.5\nvideo_test_0000007  3 4\n")
    (tmp_path / "Cliff_Diving_test.txt").write_text("video_test_0000004 10 12\n")
    (tmp_path / "Ambiguous_test.txt").write_text("video_test_0000004 20 21\n")
    (tmp_path / "BaseballPitch_val.txt").write_text("video_validation_0000001 0 1\n")
    ann = read_annotations(tmp_path, subset="test")
    print(f"[measured] {ann.segments}")
    assert ann.videos == ("video_test_0000004", "video_test_0000007")
    assert ann.labels == ["BaseballPitch", "Cliff_Diving"] and len(ann.segments) == 3
    (tmp_path / "Cliff_Diving_test.txt").write_text("video_test_0000004 10 12\nvideo_test_0000005 10\n")
    with pytest.raises(ConfigError, match="expected '<video> <start> <end>'") as e:
        read_annotations(tmp_path, subset="test")
    assert str(e.value).startswith(f"{tmp_path / 'Cliff_Diving_test.txt'}:2:")
    with pytest.raises(ConfigError, match="no per-class"):
        read_annotations(tmp_path, subset="train")
    with pytest.raises(ConfigError, match="no such annotations"):
        read_annotations(tmp_path / "missing.json")


# --- timelines of annotated videos: the Engine glue, with a stand-in engine and a real one ----------------


def _segment(label, start, end, peak):
    return SimpleNamespace(label=label, start_time=start, end_time=end, peak_confidence=peak, mean_confidence=peak)


# the worked case as timelines: per video file stem, the segments its timeline holds
TIMELINES = {
    "v1": [_segment("jump", 1.0, 10.0, 0.9), _segment("jump", 40.0, 50.0, 0.8), _segment("run", 0.0, 4.0, 0.6)],
    "v2": [_segment("jump", 20.0, 28.0, 0.7)],
}


def _fake_timeline(engine, path, *args, **kwargs):
    """What :meth:`Engine.timeline` returns (a Timeline: segments, error, interrupted), for the planted stems."""
    stem = Path(path).stem
    if stem == "broken":  # a file the timeline could not read: the error is recorded, not raised
        return SimpleNamespace(segments=[], error=VideoError(f"{path}: cannot decode"), interrupted=False)
    if stem == "misconfigured":
        raise ConfigError("a classifier that decides nothing")
    return SimpleNamespace(segments=TIMELINES.get(stem, []), error=None, interrupted=stem == "interrupted")


def test_evaluate_timelines_with_a_stand_in_engine(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("v1.mp4", "v2.mkv", "broken.mp4"):
        (videos / name).write_bytes(b"")
    gt = tmp_path / "gt.csv"
    rows = [*(f"{v},{s},{e},{c}" for v, c, s, e in GT), "broken,0,5,run", "absent,0,5,jump"]
    gt.write_text("video_id,start,end,label\n" + "\n".join(rows) + "\n")
    engine = SimpleNamespace(classes=["jump", "run", "walk"])
    engine.timeline = lambda path, **options: _fake_timeline(engine, path, **options)
    report = evaluate_timelines(engine, read_annotations(gt), videos, output_dir=tmp_path / "out")
    print(format_table(report))
    # the skipped videos' ground truth is left out, so the metrics are the worked case's
    assert (report["videos"], report["evaluated"], report["skipped"]) == (4, 2, 2)
    broken, absent = report["skipped_videos"]
    assert broken["video_id"] == "broken" and broken["error"].startswith("VideoError")
    assert absent["video_id"] == "absent" and "no file absent" in absent["error"]
    assert report["average_mAP"] == pytest.approx(37 / 60) and report["ground_truth_segments"] == 3
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["mAP"] == report["mAP"]
    results = json.loads((tmp_path / "out" / "predictions.json").read_text())["results"]
    assert results["v2"] == [{"label": "jump", "segment": [20.0, 28.0], "score": 0.7}]
    with pytest.raises(ClassifierError, match="'run' are not classes"):
        check_labels(["jump", "run"], ["jump", "walk"])
    # a setup error is no bad file: it ends the run; so does a Ctrl-C that cut a timeline short
    for stem, error in (("misconfigured", ConfigError), ("interrupted", KeyboardInterrupt)):
        (videos / f"{stem}.mp4").write_bytes(b"")
        with pytest.raises(error):
            evaluate_timelines(engine, Annotations("x", (stem,), (), {}), videos)


def test_real_engine_timelines_through_the_command(tmp_path):
    """The glue on the real :meth:`Engine.timeline`: a classifier whose thresholds put "jump" always on and
    "run" never, so each video's timeline is one "jump" segment over (nearly) the whole file."""
    import torch
    from helpers import randomize_
    from video_fixtures import write_clip

    from stdd_fast import Classifier, Engine, create_model, save_checkpoint
    from stdd_fast.decisions import QUANTILE_LEVELS, Calibration
    from stdd_fast.training.eval import main

    model = randomize_(create_model("test-tiny"), seed=0)
    ckpt = save_checkpoint(model, tmp_path / "model.safetensors")
    weights = torch.nn.functional.normalize(torch.randn(2, model.arch.embed_dim), dim=-1)
    levels = torch.linspace(-1, 1, QUANTILE_LEVELS).expand(2, -1).contiguous()
    calibration = Calibration(torch.tensor([-1.0, 1.0]), levels)  # s > -1: always on; s > 1: never
    art = Classifier(weights, ["jump", "run"], source="test", calibration=calibration).save(
        tmp_path / "clf.safetensors"
    )
    videos = tmp_path / "videos"
    videos.mkdir()
    for v in ("v1", "v2"):
        write_clip(videos / f"{v}.mp4", 90, fps=30)  # 3 s
    gt = tmp_path / "gt.csv"
    gt.write_text("video_id,start,end,label\nv1,0,3,jump\nv1,1,2,run\nv2,0,3,jump\n")
    sampling = ["--frames", "4", "--sampling-rate", "4"]
    argv = ["--weights", str(ckpt), "--classifier", str(art), "--timeline", str(gt), "--prefix", str(videos)]
    assert main([*argv, *sampling, "--device", "cpu", "--output", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    results = json.loads((tmp_path / "out" / "predictions.json").read_text())["results"]
    engine = Engine(ckpt, classifier=art, num_frames=4, sampling_rate=4, num_views=1, device="cpu")
    for v in ("v1", "v2"):
        segments = engine.timeline(str(videos / f"{v}.mp4"), progress=False).segments
        print(f"[measured] {v}: {[(s.label, s.start_time, s.end_time, s.peak_confidence) for s in segments]}")
        want = [{"label": s.label, "segment": [s.start_time, s.end_time], "score": s.peak_confidence} for s in segments]
        assert results[v] == want
        assert [s.label for s in segments] == ["jump"] and temporal_iou((0, 3), results[v][0]["segment"]) >= 0.7
    # jump: one segment per video, each over its ground truth (tIoU >= 0.7): AP 1 at every threshold; run: no
    # prediction, AP 0 -> mAP 1/2 everywhere. Events: 2 of 2 jump predictions hit (F1 1); run F1 0 -> macro 1/2
    print(format_table(report))
    assert report["mAP"] == {k: 0.5 for k in ("0.3", "0.4", "0.5", "0.6", "0.7")}
    assert report["events"]["macro_f1"] == 0.5 and report["per_class"]["jump"]["hits"] == 2


def test_stdd_eval_timeline_command(tmp_path, monkeypatch, capsys):
    from stdd_fast import Engine
    from stdd_fast.training.eval import main

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("v1.mp4", "v2.mp4"):
        (videos / name).write_bytes(b"")
    gt = tmp_path / "gt.json"
    database = {v: {"subset": "test", "annotations": []} for v in ("v1", "v2")}
    for v, c, s, e in GT:
        database[v]["annotations"].append({"segment": [s, e], "label": c})
    gt.write_text(json.dumps({"database": database}))
    monkeypatch.setattr(Engine, "timeline", _fake_timeline, raising=False)  # the glue's contract, not the segmenter
    argv = ["--arch", "test-tiny", "--device", "cpu", "--timeline", str(gt), "--subset", "test"]
    argv += ["--prefix", str(videos), "--output", str(tmp_path / "out"), "--tiou", "0.3", "0.5", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    print(out)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # jump 5/6 at both; run 1 at 0.3 and 0 at 0.5: mAP 11/12 and 5/12, average 2/3
    assert report["mAP"] == pytest.approx({"0.3": 11 / 12, "0.5": 5 / 12}) and report["classes"] == ["jump", "run"]
    assert "average mAP over tIoU 0.3, 0.5: 66.7 %" in out
    assert main(["--csv", "a.csv", "--timeline", str(gt)]) == 2  # one or the other
    assert main(["--arch", "test-tiny"]) == 2  # neither


# --- ActivityNet's own code, where an installed package carries it -----------------------------------


def _activitynet_ap():
    """``compute_average_precision_detection`` of ActivityNet's ``eval_detection.py``, from the copy the
    ``actionformer`` package ships (loaded by path: the package's __init__ needs torch and its C++ build)."""
    spec = importlib.util.find_spec("actionformer")
    missing = [m for m in ("pandas", "joblib") if importlib.util.find_spec(m) is None]
    if spec is None or missing:
        pytest.skip(
            "ActivityNet's detection AP is not installed here: it ships in `actionformer` (a torch sdist with a "
            "C++ extension, not in the dev extra); `pip install --no-deps actionformer joblib` (pandas too) to compare"
        )
    path = Path(spec.submodule_search_locations[0]) / "utils" / "metrics.py"
    module_spec = importlib.util.spec_from_file_location("activitynet_metrics", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.compute_average_precision_detection


def _activitynet_case(compute, predictions, ground_truth, label, thresholds):
    import numpy as np
    import pandas as pd

    gt = pd.DataFrame(
        [(v, s, e) for v, c, s, e in ground_truth if c == label], columns=["video-id", "t-start", "t-end"]
    )
    pred = pd.DataFrame(
        [(v, s, e, p) for v, c, s, e, p in predictions if c == label], columns=["video-id", "t-start", "t-end", "score"]
    )
    return list(compute(gt, pred, np.array(thresholds)))


def _random_case():
    """Videos with a few classes: jittered copies of the ground truth, spurious segments, distinct scores."""
    gt, preds = [], []
    for v in range(random.randint(1, 4)):
        for c in random.sample(["a", "b", "c"], random.randint(1, 3)):
            for _ in range(random.randint(0, 4)):
                start = random.uniform(0, 100)
                gt.append((f"v{v}", c, start, start + random.uniform(1, 20)))
    for v, c, s, e in gt:
        for _ in range(random.randint(0, 2)):
            s2, e2 = s + random.uniform(-4, 4), e + random.uniform(-4, 4)
            preds.append((v, c, min(s2, e2), max(s2, e2), random.random()))
    for _ in range(random.randint(0, 8)):
        start = random.uniform(0, 110)
        preds.append(
            (f"v{random.randint(0, 4)}", random.choice("abc"), start, start + random.uniform(0.5, 15), random.random())
        )
    return preds, gt


def test_equals_activitynet_code_on_random_and_hand_cases():
    compute = _activitynet_ap()
    thresholds = [0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9]
    worst, compared = 0.0, 0
    cases = [_random_case() for _ in range(60)]
    cases += [
        (PRED, GT),
        ([], GT),
        ([("v", "a", 0.0, 18.0, 0.9), ("v", "a", 0.0, 10.0, 0.8)], [("v", "a", 0.0, 10.0), ("v", "a", 10.0, 20.0)]),
    ]
    for preds, gt in cases:
        ours = mean_average_precision(preds, gt, thresholds)["per_class"]
        for label, aps in ours.items():
            theirs = _activitynet_case(compute, preds, gt, label, thresholds)
            worst = max(worst, *(abs(a - b) for a, b in zip(aps, theirs, strict=True)))
            compared += len(thresholds)
            assert aps == pytest.approx(theirs, abs=1e-12), (label, preds, gt)
    print(f"[measured] {compared} class x threshold APs against ActivityNet's code: max |difference| {worst:.3g}")
