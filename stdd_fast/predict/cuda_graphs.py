"""CUDA graphs of a fixed-shape function: captured once per input shape, replayed after.

At batch 1 an eager encoder forward spends most of its time launching kernels; a replayed graph
launches them all at once (on an H100 the ViT-B/16 triton path went from 7.92 to 1.52 ms per
8-frame clip, benchmarks/results/gpu_check_h100_run3.json). The Triton kernels tune their launch
shapes on the first eager call of a shape and cannot tune during a capture, so each shape is run
eagerly (warm-up) before it is captured.

``cuda_graphs="auto"``, the predictors' default, replays graphs wherever the encoder is a fixed
function of fixed shapes: on a CUDA device, without ``torch.compile`` (whose ``reduce-overhead``
mode captures its own), and with a deterministic STCA schedule (the ``official`` shuffle draws new
masks on every call, which a replayed graph would freeze).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from stdd_fast.errors import ConfigError

CUDA_GRAPHS = (True, False, "auto")


def resolve_cuda_graphs(
    cuda_graphs: bool | str, device: torch.device, compile: bool | str, shuffle: str | None
) -> bool:
    """Whether a predictor replays CUDA graphs: ``cuda_graphs`` as given, or for ``"auto"`` the rule above.

    ``shuffle``: the model's STCA eval shuffle (None for plain CLIP blocks).
    """
    if cuda_graphs not in CUDA_GRAPHS or not isinstance(cuda_graphs, bool | str):
        raise ConfigError(f"cuda_graphs={cuda_graphs!r}: must be True, False or 'auto' (graphs where shapes are fixed)")
    if cuda_graphs != "auto":
        return cuda_graphs
    return device.type == "cuda" and not compile and shuffle != "official"


class CudaGraphed:
    """``fn`` (one tensor in, one tensor out) replayed from a CUDA graph per input shape and dtype.

    The first call of a shape warms ``fn`` up eagerly on a side stream (caches, kernel tuning), then
    captures it; later calls copy the input into the captured buffer and replay. Each result is a
    fresh tensor (the captured output buffer is reused by the next replay). ``max_graphs`` shapes
    are kept (each graph holds its own activation memory); beyond that, a new shape runs eagerly.
    Calls from several threads take turns: a replay reads and writes the captured buffers.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device, max_graphs: int = 8) -> None:
        if device.type != "cuda":
            raise ConfigError(f"cuda_graphs=True needs a CUDA device; this model runs on {device}: drop cuda_graphs")
        self.fn, self.device, self.max_graphs = fn, device, max_graphs
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._pool = None  # graphs of different shapes share one memory pool
        self._lock = threading.Lock()

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_in = x.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # index tables, folded weights and launch tuning happen here, not in the capture
                self.fn(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.fn(static_in)
        self._pool = graph.pool()
        return graph, static_in, static_out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype)
        with self._lock:
            if key not in self._graphs:
                if len(self._graphs) >= self.max_graphs:
                    return self.fn(x)
                self._graphs[key] = self._capture(x)
            graph, static_in, static_out = self._graphs[key]
            static_in.copy_(x)
            graph.replay()
            return static_out.clone()

    @property
    def shapes(self) -> list[tuple]:
        """The input shapes captured so far."""
        return [shape for shape, _ in self._graphs]
