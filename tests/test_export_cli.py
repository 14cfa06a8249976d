"""``stdd-export`` end to end in subprocesses (as users run it), and its error paths."""

import subprocess
import sys

import pytest
import torch
from test_export_onnx import clips, random_classifier, report_cos, tiny_model, torch_reference
from test_triton_repo import parse_config

from stdd_fast import save_checkpoint
from stdd_fast.deps import available
from stdd_fast.export import OnnxRuntimeRunner
from stdd_fast.export.cli import main
from stdd_fast.numerics import cosine_min, min_cosine

CLI = [sys.executable, "-m", "stdd_fast.export.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)
    print(proc.stdout, proc.stderr, sep="\n")
    return proc


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = tiny_model()
    save_checkpoint(model, d / "tiny.safetensors")
    classifier = random_classifier(7, 32)
    classifier.save(d / "classes.safetensors")
    return d, classifier


def test_onnx_seeded_export_and_triton_repo(files):
    """One command: seeded-shuffle export (permutations baked in), parity printed, Triton repo written."""
    d, classifier = files
    out, repo = d / "seeded.onnx", d / "repo"
    proc = run_cli(
        "--onnx", "--weights", d / "tiny.safetensors", "--classifier", d / "classes.safetensors",
        "-o", out, "--shuffle", "seeded", "--seed", "3", "--triton-repo", repo, "--preferred-batch", "4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    assert "min cosine scores" in proc.stderr and "top-1 agreement 2/2" in proc.stderr
    assert "Traceback" not in proc.stderr

    seeded, plain = tiny_model("seeded", seed=3), tiny_model("none")
    frames = clips(2, 41)
    _, emb = OnnxRuntimeRunner(out)(frames)
    _, ref = torch_reference(seeded, classifier, frames)
    _, ref_plain = torch_reference(plain, classifier, frames)
    assert report_cos("CLI seeded export vs seeded torch", min_cosine(emb, ref)) >= cosine_min(torch.float32)
    # the baked permutations matter: the unshuffled schedule gives other embeddings
    assert report_cos("CLI seeded export vs unshuffled torch", min_cosine(emb, ref_plain)) < 0.999

    cfg = parse_config((repo / "stdd" / "config.pbtxt").read_text())
    assert cfg.platform == "onnxruntime_onnx" and [i.name for i in cfg.input] == ["frames"]
    assert [o.name for o in cfg.output] == ["scores", "embeddings"]
    assert (repo / "stdd" / "1" / "model.onnx").read_bytes() == out.read_bytes()


@pytest.mark.skipif(available("tensorrt"), reason="TensorRT is installed here")
def test_trt_without_tensorrt_is_one_line(files):
    d, _ = files
    proc = run_cli(
        "--trt", "--weights", d / "tiny.safetensors", "--classifier", d / "classes.safetensors", "-o", d / "m.plan"
    )
    assert proc.returncode == 4  # backend unavailable
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stdd-export: error: tensorrt is not importable here"), lines
    assert not (d / "m.onnx").exists()  # failed before exporting anything


def test_official_shuffle_is_refused(files):
    d, _ = files
    out = d / "official.onnx"
    args = ("--onnx", "--weights", d / "tiny.safetensors", "--classifier", d / "classes.safetensors", "-o", out)
    proc = run_cli(*args, "--shuffle", "official")
    assert proc.returncode == 2 and not out.exists()  # a usage error: the flag lists what it takes
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--shuffle: invalid choice: 'official'" in lines[0] and "Traceback" not in proc.stderr


def test_error_paths_in_process(files, capsys):
    d, _ = files
    base = ["--onnx", "--weights", str(d / "tiny.safetensors"), "-o", str(d / "x.onnx")]
    assert main([*base, "--classifier", str(d / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stdd-export: error:") and "no such classifier file" in err and "\n" not in err
    assert main([*base, "--classifier", str(d / "classes.safetensors"), "--shuffle", "bogus"]) == 2
    assert "invalid choice: 'bogus' (choose from 'none', 'seeded')" in capsys.readouterr().err
    assert main(["--triton-repo", str(d / "r"), "--onnx-file", str(d / "missing.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    for argv, message in (
        ([], "choose at least one of --onnx, --trt, --triton-repo"),
        (["--onnx", "-o", "x.onnx"], "--weights CKPT and --classifier ART"),
        (["--onnx", "--onnx-file", "a.onnx", "-o", "b.onnx"], "pass one of them"),
        (["--trt", "--onnx-file", "a.onnx"], "-o/--output is required"),
        (["--trt", "--onnx-file", "a.onnx", "-o", "b.onnx"], "name it -o model.plan"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--classifier", str(d / "missing.safetensors"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "no such classifier file" in err  # --debug: the traceback, then the line


def test_import_is_lazy():
    """``import stdd_fast.export`` (and naming its runners) loads no onnx, onnxruntime or tensorrt."""
    code = (
        "import sys, json, stdd_fast.export as e; e.OnnxRuntimeRunner; e.TensorRTRunner; e.write_triton_repo; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'tensorrt'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
