"""Every Triton launch the launchers make by default compiles for an H100/H200 (sm_90a) within its limits.

No GPU is needed: ``benchmarks/kernel_resources.py`` compiles ahead of time for the target and reads
each binary's resources. It runs in a subprocess because the kernels must be compiled ones, while
this suite defines them under Triton's interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "kernel_resources.py"
KERNELS = {
    "_layer_norm_kernel",
    "_sparse_attention_kernel",  # ViT-B/16 frames: one tile
    "_mixed_rows_kernel",  # ViT-L/14 frames: the blocked kernel's two launches
    "_sparse_attention_blocked_kernel",
    "_scatter_residual_kernel",
    "_score_kernel",
    "_linear_kernel",
}


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_default_launches_compile_for_sm90_within_its_limits(tmp_path):
    out = tmp_path / "launches.json"
    proc = _run(str(SCRIPT), "--dtypes", "fp32,bf16", "--defaults-only", "--json", str(out))
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["compile_errors"] == []
    launches = record["launches"]
    assert {launch["kernel"] for launch in launches} == KERNELS
    assert {(launch["arch"], launch["dtype"]) for launch in launches} == {
        (arch, dtype) for arch in ("ViT-B-16", "ViT-L-14") for dtype in ("fp32", "bf16")
    }
    limit = record["limits"]["shared_bytes_per_block"]
    for launch in launches:
        assert launch["default"]
        assert 0 < launch["registers"] <= 255, launch
        assert launch["shared_bytes"] <= limit, launch
        assert launch["fits"] and launch["blocks_per_sm"] >= 1, launch
    # bf16 attention and GEMMs run on Hopper's tensor cores (wgmma); fp32 keeps IEEE products on FMA units
    dots = {"_sparse_attention_kernel", "_sparse_attention_blocked_kernel", "_linear_kernel"}
    for launch in launches:
        if launch["kernel"] in dots:
            assert (launch["tensor_core_ops"] > 0) == (launch["dtype"] == "bf16"), launch


def test_the_limits_reject_what_an_h100_rejected():
    """Run 2 on an H100: the one-tile sparse kernel at L/14 asked 491520 bytes of shared memory, 232448 allowed."""
    probe = (
        "import sys; sys.path.insert(0, 'benchmarks'); import kernel_resources as kr; "
        "over = kr.Launch('k', 'ViT-L-14', 'fp32', '', True, 8, 491520, 128, 0, 0); "
        "edge = kr.Launch('k', 'ViT-L-14', 'fp32', '', True, 8, kr.MAX_SHARED_PER_BLOCK, 255, 0, 0); "
        "per_thread = kr.Launch('k', 'ViT-L-14', 'fp32', '', True, 4, 0, 256, 0, 0); "
        "per_sm = kr.Launch('k', 'ViT-L-14', 'fp32', '', True, 16, 0, 255, 0, 0); "
        "print(over.fits, edge.fits, per_thread.fits, per_sm.fits, kr.MAX_SHARED_PER_BLOCK)"
    )
    proc = _run("-c", probe, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    assert proc.stdout.split() == ["False", "True", "False", "False", "232448"]
