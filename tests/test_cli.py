"""The `stdd` command, run as a subprocess like a user would (plus quick in-process checks of parsing)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import randomize_
from video_fixtures import write_clip

from stdd_fast import create_model, save_checkpoint
from stdd_fast.cli import main

CLASSES = "run,jump,swim,dance"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "broken.mp4").write_bytes(b"not a video at all" * 40)
    (root / "index2cls.json").write_text(json.dumps({str(i): c for i, c in enumerate(CLASSES.split(","))}))
    return {
        "ckpt": save_checkpoint(randomize_(create_model("test-tiny"), seed=5), root / "tiny.safetensors"),
        "a": write_clip(root / "a.mp4", 40),
        "b": write_clip(root / "b.mkv", 45, width=56, height=40),
        "broken": root / "broken.mp4",
        "json": root / "index2cls.json",
        "root": root,
    }


def launch(*args, script=False):
    """Start ``stdd ARGS`` (the console script if asked and installed, else ``python -m stdd_fast.cli``)."""
    exe = shutil.which("stdd", path=str(Path(sys.executable).parent)) if script else None
    cmd = [exe] if exe else [sys.executable, "-m", "stdd_fast.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([*cmd, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc, rc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == rc, (proc.returncode, out, err)
    return subprocess.CompletedProcess(proc.args, rc, out, err)


@pytest.fixture(scope="module")
def runs(files):
    """Every subprocess of this module, started together (each pays the torch import)."""
    f = files
    art = f["root"] / "clf.safetensors"
    first = {
        "build": (launch("build-classifier", "--weights", f["ckpt"], "--classes-file", f["json"], "-o", art,
                         "--json"), 0),
        "table": (launch("classify", f["a"], f["broken"], f["b"], "--weights", f["ckpt"], "--classes", CLASSES,
                         "--top-k", "2", "--views", "2", "--frames", "4"), 1),
        "info": (launch("info", "--json", script=True), 0),
        "usage": (launch("classify", f["a"], "--weights", f["ckpt"]), 2),
    }  # fmt: skip
    done = {name: finish(proc, rc) for name, (proc, rc) in first.items()}
    done["json"] = finish(
        launch("classify", f["a"], f["broken"], "--weights", f["ckpt"], "--classifier", art, "--json"), 1
    )
    return done


def test_classify_table_and_a_failing_video(files, runs):
    proc = runs["table"]
    lines = proc.stdout.splitlines()
    assert lines[0] == str(files["a"]) and lines[3] == str(files["b"]) and len(lines) == 6
    assert all(line.split()[1] in CLASSES.split(",") for line in lines[1:3] + lines[4:6])
    backend, *err = proc.stderr.strip().splitlines()
    assert backend == "stdd: backend: STDD_BACKEND=torch"  # conftest pins the torch path; the line says so
    reason = "not a video file FFmpeg can read (Invalid data found when processing input)"
    assert err[0] == f"stdd: error: {files['broken']}: {reason}"
    assert err[1] == "stdd: 1 of 3 videos failed" and "Traceback" not in proc.stderr


def test_build_classifier_then_classify_json(files, runs):
    summary = json.loads(runs["build"].stdout)
    assert summary["classes"] == 4 and summary["shape"] == [4, 32]
    assert Path(summary["output"]) == files["root"] / "clf.safetensors"
    good, broken = (json.loads(line) for line in runs["json"].stdout.splitlines())
    assert good["error"] is None and good["decode_backend"] == "pyav" and len(good["labels"]) == 4
    assert set(good["timings"]) == {"decode", "preprocess", "encode", "score", "total"}
    assert broken["labels"] == [] and broken["error"]["type"] == "VideoError"
    assert runs["json"].stderr.splitlines()[1].startswith(f"stdd: error: {files['broken']}: not a video file")
    # The same numbers as the Python API with the class names.
    from stdd_fast.engine import Engine

    expected = Engine(files["ckpt"], classes=CLASSES.split(",")).classify(files["a"], top_k=4)[0]
    assert good["labels"] == expected.labels and good["scores"] == pytest.approx(expected.scores, abs=1e-5)


def test_info(runs):
    from stdd_fast.deps import OPTIONAL

    report = json.loads(runs["info"].stdout)
    assert set(report["backends"]) == set(OPTIONAL) >= {"triton", "dali", "onnx", "onnxruntime", "tensorrt", "pynvml"}
    for entry in report["backends"].values():
        assert (entry["installed"] and (entry["runs_here"] or "needs CUDA here" in entry["note"])) or (
            not entry["installed"] and "pip install" in entry["note"]
        )
    if not report["devices"]["cuda_available"]:  # installed here, but its kernels need a GPU
        assert report["backends"]["triton"]["note"].startswith("installed; needs CUDA here")
    assert report["packages"]["torch"] and "cuda_available" in report["devices"]


def test_config_error_is_one_line(runs):
    assert runs["usage"].stderr.strip().splitlines() == [
        "stdd: error: no classes: pass classes=[...], classifier=, xprompt= or askg= (on the command line --classes "
        "'a,b,c', --classes-file F, --xprompt YAML, --askg YAML or --classifier ART)"
    ]


# In-process: argument handling that needs no model.


def test_parsing_in_process(files, capsys):
    assert main(["--help"]) == 0
    assert main([]) == 2
    assert main(["classify", str(files["a"]), "--weights", "w", "--classes", "a", "--classes-file", "f"]) == 2
    assert "pass --classes or --classes-file, not both" in capsys.readouterr().err
    assert main(["classify", str(files["a"]), "--weights", "w", "--classifier", "c", "--classes", "a"]) == 2
    assert "(--classifier) already holds the classes" in capsys.readouterr().err
    assert main(["classify", str(files["a"]), "--weights", "w", "--classes", " , "]) == 2
    assert "holds no class names" in capsys.readouterr().err
    assert main(["classify", "--weights", "w", "--classes", "a"]) == 2  # no video
    assert capsys.readouterr().err == (
        "stdd: error: the following arguments are required: VIDEO (see `stdd classify --help`)\n"
    )
    assert main(["classify", str(files["a"]), "--weights", "w", "--classes", "a", "--dtype", "int8"]) == 2
    assert "invalid choice: 'int8'" in capsys.readouterr().err
    missing = files["root"] / "absent.pt"
    assert main(["build-classifier", "--weights", str(missing), "--classes", "a,b", "-o", "x"]) == 3
    assert capsys.readouterr().err == f"stdd: error: {missing}: no such checkpoint file\n"
    assert main(["classify", str(files["a"]), "--weights", str(missing), "--classes", "a", "--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith(f"stdd: error: {missing}: no such checkpoint file")
    assert main(["frobnicate"]) == 2
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "optional backends:" in out and "tensorrt" in out
