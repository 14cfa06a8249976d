"""The inference paths the benchmark compares, and how each becomes a callable ``frames -> embeddings``.

Path names: ``reference``, ``fused``, ``triton`` (the STCA implementations, eager); ``compile:<impl>``
(``torch.compile`` of the encoder); ``autotune:<impl>`` (``torch.compile`` with
``mode="max-autotune-no-cudagraphs"``: inductor times its Triton GEMM templates, with the bias and
activation fused into their epilogues, against cuBLAS; minutes of compilation); ``graph:<impl>`` (a
captured CUDA graph, replayed); and ``onnxruntime`` (the exported ONNX graph in ONNX Runtime, fp32,
the classifier baked in).
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from stdd_fast.errors import BackendUnavailableError, ConfigError
from stdd_fast.model import STDDModel
from stdd_fast.ops import resolve_impl

IMPLS = ("reference", "fused", "triton")
MODES = ("compile", "autotune", "graph")
COMPILE_MODES = {"compile": "default", "autotune": "max-autotune-no-cudagraphs"}


@dataclass(frozen=True)
class BenchPath:
    name: str
    mode: str  # "eager" | "compile" | "autotune" | "graph" | "onnxruntime"
    impl: str  # STCA implementation the path runs ("reference" for onnxruntime: it traces that path)

    @property
    def flops_impl(self) -> str:
        """Which FLOP count applies: the reference's or the fused rewrite's."""
        return "reference" if self.impl == "reference" else "fused"


def all_path_names() -> list[str]:
    return [*IMPLS, *(f"{m}:{i}" for m in MODES for i in IMPLS), "onnxruntime"]


def parse_path(name: str) -> BenchPath:
    """A path name -> BenchPath; ConfigError naming the valid names otherwise."""
    if name in IMPLS:
        return BenchPath(name, "eager", name)
    if name == "onnxruntime":
        return BenchPath(name, "onnxruntime", "reference")
    mode, _, impl = name.partition(":")
    if mode in MODES and impl in IMPLS:
        return BenchPath(name, mode, impl)
    raise ConfigError(f"unknown path {name!r}; valid paths: {', '.join(all_path_names())}")


def unavailable_reason(path: BenchPath, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why ``path`` cannot run here (None if it can)."""
    try:
        resolve_impl(path.impl, device)
    except BackendUnavailableError as e:
        return str(e)
    if path.mode == "graph" and device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if path.mode == "autotune" and device.type != "cuda":
        return "max-autotune times Triton GEMM templates: it needs a CUDA device"
    if path.mode == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install 'stdd-fast[export]')"
        if device.type != "cpu" or dtype != torch.float32:
            return "the onnxruntime path runs the fp32 graph on the CPU provider here"
    return None


def build_callable(
    path: BenchPath, model: STDDModel, example: torch.Tensor, classifier=None, workdir: Path | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``frames [B, T, 3, S, S] -> embeddings [B, T, D]`` for ``path`` (set up and warmed).

    Paths are timed interleaved, so each callable is self-contained: eager paths set their impl on
    every call; compiled paths trace a copy of the model (a traced impl must not change under them);
    a CUDA graph has its kernels fixed at capture.
    """
    if path.mode == "onnxruntime":
        from stdd_fast.export import OnnxRuntimeRunner, export_onnx

        workdir = workdir or Path(tempfile.mkdtemp(prefix="stdd-bench-"))
        onnx_path = export_onnx(model, classifier, workdir / "bench.onnx", num_frames=example.shape[1], verify=False)
        runner = OnnxRuntimeRunner(onnx_path, session_options=_quiet_session_options())
        return lambda frames: runner(frames)[1]
    with torch.no_grad():
        if path.mode in COMPILE_MODES:
            own = copy.deepcopy(model).set_impl(path.impl)
            own.encode_video(example)  # fill the index-table caches eagerly: tracing must not build them
            compiled = torch.compile(own.encode_video, mode=COMPILE_MODES[path.mode])
            compiled(example)
            return compiled
        model.set_impl(path.impl)
        model.encode_video(example)  # fill the index-table and folded-weight caches outside capture
        if path.mode == "graph":
            static_in = example.clone()
            torch.cuda.synchronize(example.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = model.encode_video(static_in)

            def replay(frames: torch.Tensor) -> torch.Tensor:
                static_in.copy_(frames)
                graph.replay()
                return static_out

            return replay

    def eager(frames: torch.Tensor) -> torch.Tensor:
        return model.set_impl(path.impl).encode_video(frames)

    return eager


def _quiet_session_options():
    """ONNX Runtime options for sharing the CPU with torch: its idle threads must not spin between calls."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts
