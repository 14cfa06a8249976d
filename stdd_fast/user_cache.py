"""Where stdd-fast keeps what it builds once per machine: ``$STDD_CACHE_DIR``, else ``~/.cache/stdd_fast``.

Under it: ``onnx/`` (encoder graphs, :mod:`stdd_fast.export.encoder_cache`) and ``cpu_choice.json``
(the measured CPU backend, :mod:`stdd_fast.cpu_choice`).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("STDD_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "stdd_fast"
