"""The GEMM-bound limit of a clip on this machine: what ``stdd-bench``'s "of limit" column divides by.

The encoder is matrix products (its weights' GEMMs are ~90 % of the fused path's FLOPs) plus work
around them (attention softmax, LayerNorms, the activation, STCA's gathers, layout copies). At the
best fp32 (or the run's dtype) GEMM rate this machine reaches *at the encoder's own shapes*, a clip
cannot take less than its GFLOP over that rate; a path's share of that limit says how much of its
time is anything but GEMMs at full speed, and means the same on every CPU and GPU (on a GPU it is
what MFU is, against the rate the encoder's shapes reach rather than a large square product).

The probe times the four weight GEMMs of a block (QKV, out-projection, MLP in, MLP out) with M =
B x T x tokens rows, back to back, in each runtime that can run the model here: torch (MKL/oneDNN on
a CPU, cuBLAS on a GPU) and, on a CPU, ONNX Runtime (MLAS, one graph of the four MatMuls with the
weights as initialisers, as the encoder graph has them). Rates are FLOPs over the median time of a
round, timed in the same interleaved rounds as the paths (drift on a shared machine hits the limit and
the paths alike); the best runtime sets the limit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from stdd_fast.bench.timing import time_fn
from stdd_fast.config import ArchConfig


def block_gemm_shapes(arch: ArchConfig, rows: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of a block's weight GEMMs for ``rows`` tokens: QKV, out-projection, MLP in, MLP out."""
    d = arch.vision_width
    return [(rows, d, 3 * d), (rows, d, d), (rows, d, 4 * d), (rows, 4 * d, d)]


@dataclass(frozen=True)
class GemmLimit:
    """GFLOP/s per runtime at the encoder's GEMM shapes (``shapes``), and the best of them."""

    rates: dict[str, float]
    shapes: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def best(self) -> tuple[str, float]:
        return max(self.rates.items(), key=lambda kv: kv[1])

    def limit_ms(self, gflop_per_clip: float) -> float:
        """The least time a clip of ``gflop_per_clip`` can take here: all of it at the best GEMM rate."""
        return gflop_per_clip / self.best[1] * 1e3

    def to_dict(self) -> dict:
        runtime, rate = self.best
        return {"rates_gflop_s": self.rates, "best": runtime, "best_gflop_s": rate, "shapes": self.shapes}

    def describe(self, gflop_per_clip: float) -> str:
        rates = ", ".join(f"{name} {rate:.0f}" for name, rate in self.rates.items())
        m = self.shapes[0][0] if self.shapes else 0
        return (
            f"GEMM limit: the encoder's weight GEMMs (M={m}) run at {rates} GFLOP/s here; {gflop_per_clip:.0f} GFLOP "
            f"a clip at the best rate: {self.limit_ms(gflop_per_clip):.0f} ms a clip"
        )


def _flops(shapes: list[tuple[int, int, int]]) -> float:
    return sum(2.0 * m * k * n for m, k, n in shapes)


@dataclass(frozen=True)
class GemmProbe:
    """One round of the four GEMMs per runtime (``rounds``: name -> a call), to time beside the paths."""

    shapes: list[tuple[int, int, int]]
    rounds: dict

    def limit(self, seconds: dict[str, float]) -> GemmLimit:
        """The limit from each runtime's median seconds a round."""
        flops = _flops(self.shapes)
        return GemmLimit({name: round(flops / s / 1e9, 1) for name, s in seconds.items()}, self.shapes)


def _torch_round(shapes, device: torch.device, dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    pairs = [
        (torch.randn(m, k, generator=gen).to(device, dtype), torch.randn(n, k, generator=gen).to(device, dtype))
        for m, k, n in shapes
    ]
    return lambda: [torch.nn.functional.linear(x, w) for x, w in pairs]


def _onnxruntime_round(shapes, seed: int, threads: int | None):
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from stdd_fast.predict.onnx_session import session_options

    rng = np.random.default_rng(seed)
    inputs, nodes, outputs, weights, feed = [], [], [], [], {}
    for i, (m, k, n) in enumerate(shapes):
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [m, k]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [m, n]))
        weights.append(numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"y{i}"]))
        feed[f"x{i}"] = rng.standard_normal((m, k), dtype=np.float32)
    graph = helper.make_graph(nodes, "gemm_probe", inputs, outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), session_options(threads), ["CPUExecutionProvider"])
    return lambda: session.run(None, feed)


def gemm_probe(
    arch: ArchConfig, rows: int, device: torch.device, dtype: torch.dtype, seed: int = 0, threads: int | None = None
) -> GemmProbe:
    """The rounds of a block's weight GEMMs for ``rows`` tokens (B x T x tokens per frame), per runtime: torch on
    ``device`` in ``dtype``; ONNX Runtime too on a CPU in fp32 (when it is installed), each called twice to warm."""
    shapes = block_gemm_shapes(arch, rows)
    rounds = {"torch": _torch_round(shapes, device, dtype, seed)}
    if device.type == "cpu" and dtype == torch.float32:
        # without onnxruntime the limit is torch's alone (the bench names the runtimes it probed)
        with contextlib.suppress(ImportError):
            rounds["onnxruntime"] = _onnxruntime_round(shapes, seed, threads)
    for run in rounds.values():
        time_fn(run, device, warmup=1, iters=1)
    return GemmProbe(shapes, rounds)
