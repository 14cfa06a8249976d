"""The eval command on a synthetic dataset whose predictions are known by construction.

Four classes, one video each. The classifier's row k is the normalised mean frame embedding of
video k under the same protocol, so (2-D classifier: view-summed score ∝ <mean embedding, w_k>)
video k is predicted as class k: its own row is the unit vector closest to its mean. Split 1 labels
every video correctly (top-1 100 %); split 2 labels video 3 as class 0 and adds an unreadable row
(3 of 4 evaluated videos right: 75 %, one skipped). Mean ± std (ddof 0) over the splits:
87.5 ± 12.5.
"""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from training_fixtures import tiny_checkpoint, tiny_dataset

from stdd_fast import Classifier, Engine
from stdd_fast.training.data import read_video_list
from stdd_fast.training.eval import main

LABEL_DB = Path(__file__).resolve().parents[2] / "shared" / "data" / "stdd-label-db"


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    ds = tiny_dataset(root / "data", num_classes=4, per_class=1)
    ckpt = tiny_checkpoint(root / "model.safetensors", seed=2)
    engine = Engine(ckpt, num_views=3, num_frames=4, batch_clips=3, device="cpu")
    paths = [str(ds.prefix / rel) for rel, _ in ds.rows]
    means = torch.stack([e.mean(dim=(0, 1)) for e in engine.embed(paths)])  # [4, D]
    art = Classifier(F.normalize(means, dim=-1), list(ds.names), source="test:prototypes").save(
        root / "clf.safetensors"
    )
    rows = [rel for rel, _ in ds.rows]
    split1 = root / "split1.csv"
    split1.write_text("".join(f"{r},{k}\n" for k, r in enumerate(rows)))
    split2 = root / "split2.csv"
    split2.write_text(f"{rows[0]},0\n{rows[1]},1\n{rows[2]},2\n{rows[3]},0\nmissing/clip.mp4,1\n")
    out = root / "out"
    argv = [
        *("--weights", str(ckpt), "--csv", str(split1), str(split2), "--prefix", str(ds.prefix)),
        *("--classes-file", str(ds.classes), "--classifier", str(art), "--views", "3", "--frames", "4"),
        *("--device", "cpu", "--output", str(out), "--no-progress"),
    ]
    assert main(argv) == 0
    return ds, json.loads((out / "report.json").read_text()), out, engine, paths


def test_top1_is_hand_checkable(known):
    ds, report, _, _, _ = known
    s1, s2 = report["splits"]
    print(f"[measured] split1 top-1 {s1['top1']}, split2 top-1 {s2['top1']}")
    assert (s1["top1"], s1["videos"], s1["evaluated"], s1["skipped"]) == (100.0, 4, 4, 0)
    assert (s2["top1"], s2["videos"], s2["evaluated"], s2["skipped"]) == (75.0, 5, 4, 1)
    assert s1["top5"] == s2["top5"] == 100.0  # top-k capped at K = 4
    assert report["mean"]["top1"] == 87.5 and report["std"]["top1"] == 12.5 and report["std_ddof"] == 0
    a, b, c, d = ds.names
    assert s2["per_class"] == {a: 50.0, b: 100.0, c: 100.0, d: None}
    assert s2["mean_class_accuracy"] == pytest.approx(250 / 3)
    assert s2["confusion"] == [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert s2["skipped_videos"][0]["path"].endswith("missing/clip.mp4")


def test_predictions_agree_with_engine_classify(known):
    ds, report, _, _, paths = known
    clf = Classifier.load(Path(report["splits"][0]["csv"]).parent / "clf.safetensors")
    engine = Engine(
        Path(report["config"]["checkpoint"]), classifier=clf, num_views=3, num_frames=4, batch_clips=3, device="cpu"
    )
    predicted = [r.labels[0] for r in engine.classify(paths)]
    assert predicted == list(ds.names)


def test_report_keys_and_plot(known):
    _, report, out, _, _ = known
    assert {"splits", "mean", "std", "std_ddof", "unit", "config"} <= set(report)
    assert {"top1", "top5", "mean_class_accuracy"} == set(report["mean"]) == set(report["std"])
    split_keys = {"name", "csv", "classes_file", "classifier", "num_classes", "videos", "evaluated", "skipped"}
    split_keys |= {"skipped_videos", "top1", "top5", "mean_class_accuracy", "per_class", "confusion", "confusion_png"}
    assert split_keys <= set(report["splits"][0])
    assert report["config"]["views"] == 3 and report["config"]["world_size"] == 1
    for name in ("confusion_split1.png", "confusion_split2.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_cli_reports_usage_errors(capsys, tmp_path):
    assert main(["--csv", str(tmp_path / "x.csv"), "--classes-file", "c.json"]) == 2
    assert "--weights" in capsys.readouterr().err


def test_official_split_lists_parse():
    ucf = LABEL_DB / "zs_label_db"
    if not (ucf / "ucf101_split1" / "test.csv").is_file():
        pytest.skip(f"official label data not found under {LABEL_DB}")
    from stdd_fast.prompts import read_class_names

    names = read_class_names(ucf / "ucf101-index2cls.json")
    items = read_video_list(ucf / "ucf101_split1" / "test.csv", "/videos", len(names))
    assert len(names) == 101 and len(items) == 3783
    assert items[0].path == "/videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi" and items[0].label == 0
    k600 = read_class_names(ucf / "k600_split1" / "k600-openset-index2cls.json")
    assert len(k600) == 160 and len(read_video_list(ucf / "k600_split1" / "test.csv", "", 160)) == 7276
