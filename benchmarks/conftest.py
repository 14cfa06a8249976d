"""pytest-benchmark suites (not run in CI: CI collects tests/ only). Run: pytest benchmarks/ --benchmark-only."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # helpers: randomize_, video fixtures


def pytest_collect_file(file_path, parent):
    """Collect the ``bench_*.py`` suites (pytest's own pattern is ``test_*.py``; files named on the command line
    are collected by pytest itself)."""
    if file_path.name.startswith("bench_") and file_path.suffix == ".py" and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
