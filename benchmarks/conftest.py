"""pytest-benchmark suites (not run in CI: CI collects tests/ only). Run: pytest benchmarks/ --benchmark-only."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # helpers: randomize_, video fixtures
