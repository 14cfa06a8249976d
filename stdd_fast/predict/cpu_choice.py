"""``backend="auto"`` on the CPU: the faster of the two exact CPU paths on this machine, measured once.

The two paths compute the same function (fp32, max rel err <= 1e-5 against the reference): the
fused encoder in PyTorch eager, and the fused encoder graph in ONNX Runtime
(:mod:`stdd_fast.predict.onnx_encoder`). Which one is faster depends on the CPU and the GEMM library
torch dispatches to there, so it is measured, not assumed (``benchmarks/README.md``: on the AMD
EPYC of issue 19 ONNX Runtime ran the fused graph 1.6-1.7x faster than PyTorch; on an Intel Xeon
with MKL they tie).

The first auto build on a machine times both encoders on one random clip (one warm-up call each,
then three interleaved calls, medians) and records the result in ``<cache>/cpu_choice.json``,
keyed by what decides the speed (CPU model, usable cores, torch threads, torch and ONNX Runtime
versions, the architecture, T), never by the weights. Later builds read the record. Delete the
file to measure again; ``STDD_BACKEND=torch|onnxruntime`` skips the choice.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from stdd_fast.devices import cpu_model
from stdd_fast.errors import StddError
from stdd_fast.model import STDDModel
from stdd_fast.notices import about, notice
from stdd_fast.predict.contract import BackendChoice
from stdd_fast.predict.estimates import choice_seconds
from stdd_fast.user_cache import cache_root, read_small_file, write_atomically

RECORD_NAME = "cpu_choice.json"
CANDIDATES = ("torch", "onnxruntime")
# ONNX Runtime must win by this much: the torch path needs no graph build and takes any T, and a
# smaller gap is inside the run-to-run spread of a shared machine.
MARGIN = 0.05
TIMED_CALLS = 3
MEASUREMENTS = {"count": 0}  # choices measured in this process (what the record saves shows here)


def record_path() -> Path:
    """The record file, in :func:`~stdd_fast.user_cache.cache_root`."""
    return cache_root() / RECORD_NAME


def machine_key(model: STDDModel, num_frames: int) -> str:
    """What decides which path is faster here: the machine, the libraries, the shapes (not the weights)."""
    import onnxruntime

    a = model.arch
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = {
        "cpu": cpu_model(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "arch": f"{a.name}:{a.vision_width}x{a.vision_layers}:{a.image_size}/{a.patch_size}",
        "stca": model.stca is not None,
        "frames": num_frames,
    }
    return json.dumps(parts, sort_keys=True)


def _read(path: Path) -> dict:
    text = read_small_file(path, "the CPU-choice record")
    try:
        data = json.loads(text) if text is not None else {}
    except (ValueError, RecursionError):
        return {}  # unreadable: measured again and rewritten
    return data if isinstance(data, dict) else {}


def _valid(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("backend") in CANDIDATES
        and isinstance(entry.get("ms"), dict)
        and all(isinstance(entry["ms"].get(c), int | float) for c in CANDIDATES)
    )


def _time(encoders: dict[str, Callable[[torch.Tensor], object]], clip: torch.Tensor) -> dict[str, float]:
    """Median milliseconds per call of each encoder on ``clip``: one warm-up each, then interleaved calls."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    with torch.no_grad():
        for encode in encoders.values():
            encode(clip)
        for _ in range(TIMED_CALLS):
            for name, encode in encoders.items():
                start = time.perf_counter()
                encode(clip)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def winner(ms: dict[str, float]) -> str:
    return "onnxruntime" if ms["onnxruntime"] < ms["torch"] * (1 - MARGIN) else "torch"


def _choice(entry: dict, path: Path, seconds: float) -> BackendChoice:
    ms = entry["ms"]
    how = "measured now" if seconds else f"measured {entry.get('measured', '?')}"
    reason = (
        f"auto on the CPU: {entry['backend']}, the faster exact path on this machine ({how}: fused encoder "
        f"{ms['torch']:.0f} ms in PyTorch, {ms['onnxruntime']:.0f} ms in ONNX Runtime per clip; {path})"
    )
    measured = "now" if seconds else entry.get("measured")
    return BackendChoice(entry["backend"], reason, dict(ms), measured, str(path), seconds)


def _encoders(model: STDDModel, num_frames: int) -> dict[str, Callable[[torch.Tensor], object]]:
    """The two exact CPU encoders, as the predictors run them (fused PyTorch eager; the cached graph in a session)."""
    from stdd_fast.predict.encoder_cache import cached_encoder
    from stdd_fast.predict.onnx_encoder import run_encoder_session
    from stdd_fast.predict.onnx_session import open_session

    session = open_session(cached_encoder(model, num_frames).path)
    model.set_impl("fused")
    return {"torch": model.encode_video, "onnxruntime": lambda clip: run_encoder_session(session, clip)}


def measured_choice(model: STDDModel, num_frames: int) -> BackendChoice:
    """The faster CPU backend for ``model``'s shapes: from the record, or measured now and recorded."""
    path = record_path()
    key = machine_key(model, num_frames)
    entry = _read(path).get(key)
    if _valid(entry):
        return _choice(entry, path, 0.0)
    start = time.perf_counter()
    try:
        encoders = _encoders(model, num_frames)
    except StddError as e:  # e.g. an encoder too big to cache: the torch path, saying why, not recorded
        return BackendChoice("torch", f"auto on the CPU: torch, because the ONNX Runtime path could not be built ({e})")
    notice(
        f"measuring which exact CPU path runs {model.arch.name} faster here, PyTorch or ONNX Runtime (once per "
        f"machine, {about(choice_seconds(model, num_frames))}; recorded in {path}; STDD_BACKEND=torch|onnxruntime "
        "skips it)"
    )
    size = model.arch.image_size
    clip = torch.randn(1, num_frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    ms = _time(encoders, clip)
    MEASUREMENTS["count"] += 1
    entry = {"backend": winner(ms), "ms": ms, "measured": datetime.now(UTC).strftime("%Y-%m-%d")}
    records = {k: v for k, v in _read(path).items() if _valid(v)}  # another process may have written meanwhile
    records[key] = entry
    write_atomically(path, json.dumps(records, indent=1, sort_keys=True) + "\n", "the CPU-choice record")
    return _choice(entry, path, time.perf_counter() - start)
