"""Launch-shape tuning for the STCA kernels: time each candidate once per problem shape, keep the fastest.

Only parameters that cannot change a single bit of the result are tuned (how heads are grouped into
programs, how an elementwise pass is tiled), so a tuned launch gives the same output as any other:
the engine stays deterministic across processes even though timing picks the configuration.

Tuning runs on CUDA on the first call for a shape: each candidate is compiled once (Triton caches
it on disk) and timed over a few ms; a candidate the GPU lacks the resources for
(``OutOfResources``) is skipped. It never runs under Triton's interpreter, while a CUDA graph is
being captured (timing would break the capture), or when ``STDD_TUNE_KERNELS=0``: those calls take
the first candidate, the static default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence

import torch
from triton.runtime.errors import OutOfResources


def _tuning_enabled(device: torch.device) -> bool:
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    if os.environ.get("STDD_TUNE_KERNELS", "1") == "0":
        return False
    return not torch.cuda.is_current_stream_capturing()


def _time_ms(launch: Callable[[], object], reps: int = 10) -> float:
    launch()  # compile outside the timed region
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        launch()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


class LaunchTuner:
    """The fastest of ``candidates`` per key, measured with the real launch on the first call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.chosen: dict[Hashable, dict] = {}
        self.timings: dict[Hashable, list[tuple[dict, float]]] = {}

    def pick(self, key: Hashable, candidates: Sequence[dict], launch: Callable[[dict], object], device) -> dict:
        """The configuration to launch with (``candidates[0]``: the default); ``launch(config)`` must be idempotent."""
        if key in self.chosen:
            return self.chosen[key]
        if len(candidates) == 1 or not _tuning_enabled(device):
            return candidates[0]
        timings = []
        for config in candidates:
            try:
                timings.append((config, _time_ms(lambda config=config: launch(config))))
            except OutOfResources:  # too big for this GPU: not a candidate here
                timings.append((config, float("inf")))
        self.timings[key] = timings
        best, best_ms = min(timings, key=lambda item: item[1])
        if best_ms == float("inf"):  # nothing launches: let the default's launch raise it to the caller
            return candidates[0]
        self.chosen[key] = best
        return best
