"""Test configuration: offline hub, Triton's CPU interpreter when there is no GPU, slow-test switch."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Must precede the first import of triton (torchvision imports it on `import stdd_fast`).
if not os.path.exists("/dev/nvidia0") and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
