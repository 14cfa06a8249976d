"""Timing that is right on both devices: CUDA events on GPU (asynchronous work), perf_counter on CPU."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Per-call seconds of a timed function (after warm-up)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (device time: CUDA events around it on GPU)."""
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3
    begin_s = time.perf_counter()
    fn()
    return time.perf_counter() - begin_s


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, iters: int) -> dict[str, Timing]:
    """Time several functions in rounds (one call of each per round), so drift hits all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            samples[name].append(time_once(fn, device))
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def time_fn(
    fn: Callable[[], object],
    device: torch.device,
    warmup: int = 2,
    iters: int = 10,
    min_seconds: float = 0.0,
) -> Timing:
    """Call ``fn`` ``warmup`` times, then time ``iters`` calls (more, up to 10x, until ``min_seconds`` pass)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples: list[float] = []
    start_all = time.perf_counter()
    while len(samples) < iters or (time.perf_counter() - start_all < min_seconds and len(samples) < 10 * iters):
        samples.append(time_once(fn, device))
    return Timing(tuple(samples))
