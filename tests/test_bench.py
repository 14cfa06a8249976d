"""The benchmark's smallest configuration end to end: JSON schema and filled, small error columns."""

import json
import subprocess
import sys

import pytest

from stdd_fast.bench.cli import main
from stdd_fast.numerics import FP32_MAX_REL

ROW_KEYS = {
    "path",
    "batch",
    "clips_per_s",
    "p50_ms",
    "p90_ms",
    "speedup",
    "max_rel_err",
    "top1_agreement",
    "peak_mem_mib",
    "gflop_per_clip",
    "tflops",
}


def test_smallest_run_writes_complete_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    code = main(
        [
            "--arch",
            "test-tiny",
            "--frames",
            "3",
            "--batch",
            "1,2",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--paths",
            "reference,fused",
            "--json",
            str(out),
            "--plot",
            str(plot),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "SEEDED RANDOM WEIGHTS" in printed and "clips/s" in printed
    # said before it starts, then a line per path as it is ready and one per batch once timed, then the table
    lines = printed.splitlines()
    at = {key: next(i for i, line in enumerate(lines) if key in line) for key in (
        "the run: load the model", "[1/2] reference (B=1): ready", "[2/2] fused (B=1): ready", "timed (B=1, p50)",
        "[1/2] reference (B=2): ready", "[2/2] fused (B=2): ready", "timed (B=2, p50)", "clips/s")}  # fmt: skip
    assert list(at.values()) == sorted(at.values()), at
    record = json.loads(out.read_text())
    assert {"env", "config", "encoder", "head", "decisions"} <= record.keys()
    # the decision line: both kinds timed against the fastest path's scoring of the same batch (B=2)
    decided = {d["decider"]: d for d in record["decisions"]}
    assert set(decided) == {"calibrated thresholds", "background prompts"} and "deciding B=2 clips" in printed
    fastest = min((r for r in record["encoder"] if r["batch"] == 2), key=lambda r: r["p50_ms"])
    for d in decided.values():
        print(f"[measured] deciding with {d['decider']}: {d['p50_ms']:.3f} ms, {d['share_of_scoring']:.2%} of scoring")
        assert d["scoring_path"] == fastest["path"] and d["share_of_scoring"] == d["p50_ms"] / fastest["p50_ms"]
    assert {"device", "cpu", "torch", "commit", "torch_threads"} <= record["env"].keys()
    rows = record["encoder"]
    assert [(r["path"], r["batch"]) for r in rows] == [("reference", 1), ("fused", 1), ("reference", 2), ("fused", 2)]
    for row in rows:
        assert row.keys() >= ROW_KEYS, row
        print(f"[measured] bench {row['path']} B={row['batch']}: max rel err {row['max_rel_err']:.2e}")
        assert row["max_rel_err"] <= FP32_MAX_REL and row["top1_agreement"] == 1.0
    assert plot.stat().st_size > 1000


def test_video_end_to_end_names_the_decode_backend(tmp_path, capsys):
    from video_fixtures import write_clip

    clip = write_clip(tmp_path / "clip.mp4", 40)
    out = tmp_path / "e2e.json"
    code = main(["--arch", "test-tiny", "--frames", "4", "--iters", "1", "--warmup", "0", "--device", "cpu",
                 "--paths", "fused", "--video", str(clip), str(clip), "--json", str(out)])  # fmt: skip
    assert code == 0
    e2e = json.loads(out.read_text())["end_to_end"]
    pyav = next(d for d in e2e["decode"] if d["backend"] == "pyav")
    assert pyav["videos"] == 2 and pyav["frames_per_s"] > 0
    stages = e2e["stages"][0]
    assert stages["backends"] == {"pyav": 2} and not stages["failed"]
    assert set(stages["stages"]) == {"decode", "preprocess", "encode", "score"}
    assert "end to end, decode_backend=pyav" in capsys.readouterr().out


def test_unavailable_path_is_reported_not_fatal(tmp_path):
    out = tmp_path / "b.json"
    assert (
        main(
            [
                "--arch",
                "test-tiny",
                "--frames",
                "2",
                "--iters",
                "1",
                "--warmup",
                "0",
                "--device",
                "cpu",
                "--paths",
                "reference,graph:fused",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["encoder"]
    assert rows[1]["path"] == "graph:fused" and "CUDA" in rows[1]["skipped"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--paths", "reference,warp"], "unknown path 'warp'; valid paths: reference, fused, triton"),
        (["--batch", "0"], "--batch '0': every value must be >= 1"),
        (["--video", "/nonexistent/clip.mp4"], "--video: no such file(s): /nonexistent/clip.mp4"),
        (["--arch", "ViT-X"], "unknown architecture 'ViT-X'"),
        (["--dtype", "float8"], "argument --dtype: invalid choice: 'float8' (choose from 'auto', 'float32'"),
    ],
)
def test_bad_options_fail_with_one_clear_line(args, fragment):
    proc = subprocess.run([sys.executable, "-m", "stdd_fast.bench", "--arch", "test-tiny", *args],
                          capture_output=True, text=True)  # fmt: skip
    print(proc.stderr)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]


def test_gpu_check_rejects_an_unknown_section(tmp_path):
    """benchmarks/gpu_check.py: a misspelt --only section stops at once (a GPU lease must not run nothing)."""
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--only", "kernels,fp23", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown section(s) fp23; the sections are peak,new-kernels,kernels," in done.stderr
