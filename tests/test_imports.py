"""`import stdd_fast` stays light: no optional backend and no subpackage is imported (ARCHITECTURE §2)."""

import json
import subprocess
import sys

FORBIDDEN = (
    "stdd_fast.training",
    "stdd_fast.export",
    "stdd_fast.kernels",
    "tensorrt",
    "nvidia.dali",
    "onnx",
    "onnxruntime",
    "pynvml",
)


def test_import_pulls_no_optional_backend():
    # torchvision (needed by open_clip) imports triton by itself; measure only what stdd_fast adds.
    code = (
        "import sys, json, torchvision; before = set(sys.modules); import stdd_fast; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    added = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    bad = [m for m in added if m.startswith(FORBIDDEN) or m == "triton" or m.startswith("triton.")]
    assert not bad, bad
