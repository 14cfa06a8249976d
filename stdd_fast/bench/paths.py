"""The inference paths the benchmark compares, each a predictor, timed as a callable ``frames -> embeddings``.

Path names: ``reference``, ``fused``, ``triton`` (the STCA implementations, eager:
``TorchPredictor(model, impl=...)``); ``compile:<impl>`` (``compile="default"``: ``torch.compile`` of
the encoder); ``autotune:<impl>`` (``compile="max-autotune-no-cudagraphs"``: inductor times its Triton
GEMM templates, with the bias and activation fused into their epilogues, against cuBLAS; minutes of
compilation); ``graph:<impl>`` (``cuda_graphs=True``: a captured CUDA graph, replayed);
``onnxruntime`` (the ``stdd-export`` graph traced from the reference path in ONNX Runtime,
``ExportedPredictor``, fp32, the classifier baked in); ``onnxruntime:fused`` (the fused encoder graph
in ONNX Runtime from the graph cache, the head in PyTorch: ``build_predictor(backend="onnxruntime")``);
``default`` (what ``Engine()`` runs on this device: ``build_predictor(backend="auto")``; on the CPU
the faster of ``fused`` and ``onnxruntime:fused``, measured once per machine); ``int8`` (opt-in,
never a default: that encoder graph with its MatMul weights dynamically quantised to int8 by ONNX
Runtime); and ``clip`` (plain CLIP with the same weights, no STCA: the floor STCA's extra work sits on).

``fp8:<path>`` (e.g. ``fp8:fused``, ``fp8:triton``, ``fp8:graph:triton``; opt-in, not exact) runs a torch
path with ``dtype="fp8"`` (bf16 weights, the STCA blocks' linear layers as fp8 GEMMs:
:mod:`stdd_fast.fp8`) on its own copy of the model, so bf16 and fp8 rows land in one run against one
fp32 reference; ``--dtype fp8`` runs every path so.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from stdd_fast.deps import OPTIONAL
from stdd_fast.errors import BackendUnavailableError, ConfigError
from stdd_fast.fp8 import check_device as check_fp8_device
from stdd_fast.model import STDDModel
from stdd_fast.notices import about
from stdd_fast.ops import resolve_impl
from stdd_fast.predict.estimates import graph_build_seconds
from stdd_fast.predict.torch_backend import TorchPredictor

if TYPE_CHECKING:
    from stdd_fast.predict.exported import ExportedPredictor

IMPLS = ("reference", "fused", "triton")
MODES = ("compile", "autotune", "graph")
COMPILE_MODES = {"compile": "default", "autotune": "max-autotune-no-cudagraphs"}


@dataclass(frozen=True)
class BenchPath:
    name: str
    mode: str  # "eager" | "compile" | "autotune" | "graph" | "onnxruntime"
    impl: str  # STCA implementation the path runs ("reference" for onnxruntime: it traces that path)
    dtype: str | None = None  # a precision other than the run's: "fp8" (the "fp8:" prefix)

    @property
    def flops_impl(self) -> str:
        """Which FLOP count applies: the reference's or the fused rewrite's."""
        return "reference" if self.impl == "reference" else "fused"


# name -> (mode, impl) of the paths that are not "<mode>:<impl>" combinations
SPECIAL = {
    "onnxruntime": ("onnxruntime", "reference"),
    "onnxruntime:fused": ("onnxruntime", "fused"),
    "default": ("default", "fused"),
    "int8": ("int8", "fused"),
    "clip": ("clip", "reference"),
}


def all_path_names() -> list[str]:
    return [*IMPLS, *(f"{m}:{i}" for m in MODES for i in IMPLS), *SPECIAL]


def parse_path(name: str) -> BenchPath:
    """A path name -> BenchPath; ConfigError naming the valid names otherwise."""
    if name.startswith("fp8:"):
        return dataclasses.replace(parse_path(name.removeprefix("fp8:")), name=name, dtype="fp8")
    if name in IMPLS:
        return BenchPath(name, "eager", name)
    if name in SPECIAL:
        return BenchPath(name, *SPECIAL[name])
    mode, _, impl = name.partition(":")
    if mode in MODES and impl in IMPLS:
        return BenchPath(name, mode, impl)
    raise ConfigError(f"unknown path {name!r}; valid paths: {', '.join(all_path_names())} (and fp8:<path>)")


def unavailable_reason(path: BenchPath, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why ``path`` cannot run here (None if it can)."""
    try:
        resolve_impl(path.impl, device)
        if path.dtype == "fp8":
            check_fp8_device(device)
    except (BackendUnavailableError, ConfigError) as e:
        return str(e)
    if path.dtype == "fp8" and (path.impl == "reference" or path.mode in ("onnxruntime", "int8", "clip")):
        return "fp8 swaps the fused STCA block's linear piece (PyTorch): the fused and triton paths only"
    if path.mode == "graph" and device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if path.mode == "autotune" and device.type != "cuda":
        return "max-autotune times Triton GEMM templates: it needs a CUDA device"
    if path.mode in ("onnxruntime", "int8"):
        if importlib.util.find_spec("onnxruntime") is None:
            return f"onnxruntime is not installed ({OPTIONAL['onnxruntime'].install})"
        if device.type != "cpu" or dtype != torch.float32:
            return "the onnxruntime paths run fp32 graphs on the CPU provider here"
    return None


def setup_note(path: BenchPath, model: STDDModel, frames: int) -> str | None:
    """What setting ``path`` up does before its first call, with a rough duration, where that is more than a
    forward (None otherwise; the encoder-graph cache and the CPU choice announce their own work)."""
    if path.mode == "onnxruntime" and path.impl == "reference":
        seconds = graph_build_seconds(model, frames)
        return f"exports the full graph with the classifier baked in to ONNX ({about(seconds)})"
    if path.mode == "compile":
        return "torch.compile of the encoder (about a minute on a CPU, less on a GPU)"
    if path.mode == "autotune":
        return "torch.compile with max-autotune times Triton GEMM templates (several minutes)"
    if path.mode == "graph":
        return "two eager calls, then a CUDA graph capture"
    return None


def build_predictor(
    path: BenchPath, model: STDDModel, example: torch.Tensor, classifier=None, workdir: Path | None = None
) -> TorchPredictor | ExportedPredictor:
    """The predictor ``path`` names, for clips shaped like ``example`` [B, T, 3, S, S] in one forward (not warmed).

    Eager and graph paths run ``model`` itself, set to the path's impl (callers alternating paths that
    share it set the impl again before each call); compiled paths trace a copy (a traced impl must not
    change under them); ``onnxruntime`` exports ``model`` with ``classifier`` baked in to ``workdir``;
    ``fp8:`` paths run a copy (the shared model keeps its dtype and linear format).
    """
    dtype = example.dtype
    if path.dtype is not None:
        model, dtype = copy.deepcopy(model), path.dtype
    if (path.mode == "onnxruntime" and path.impl == "fused") or path.mode == "int8":
        from stdd_fast.predict.build import build_predictor

        return build_predictor(
            model, classifier=classifier, backend="onnxruntime", num_frames=example.shape[1],
            batch_clips=example.shape[0], quantize="int8" if path.mode == "int8" else None,
        )  # fmt: skip
    if path.mode == "onnxruntime":
        from stdd_fast.export import export_onnx
        from stdd_fast.predict.exported import ExportedPredictor

        workdir = workdir or Path(tempfile.mkdtemp(prefix="stdd-bench-"))
        onnx_path = export_onnx(
            model, classifier, workdir / f"bench-{path.impl}.onnx", num_frames=example.shape[1], impl=path.impl,
            verify=False,
        )  # fmt: skip
        return ExportedPredictor("onnxruntime", onnx_path, classifier=classifier, batch_clips=example.shape[0])
    if path.mode == "default":
        from stdd_fast.predict.build import build_predictor

        return build_predictor(
            model, classifier=classifier, device=example.device, dtype=dtype, num_frames=example.shape[1],
            batch_clips=example.shape[0],
        )  # fmt: skip
    if path.mode == "clip":
        plain = STDDModel(model.arch, stca=None).to(example.device)
        plain.load_state_dict(model.state_dict())
        return TorchPredictor(plain.eval(), impl="reference", device=example.device, batch_clips=example.shape[0])
    options = dict(impl=path.impl, device=example.device, dtype=dtype, batch_clips=example.shape[0])
    if path.mode in COMPILE_MODES:
        return TorchPredictor(copy.deepcopy(model), compile=COMPILE_MODES[path.mode], **options)
    return TorchPredictor(model, cuda_graphs=path.mode == "graph", **options)


def build_callable(
    path: BenchPath, model: STDDModel, example: torch.Tensor, classifier=None, workdir: Path | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``frames [B, T, 3, S, S] -> embeddings [B, T, D]`` for ``path`` (set up and warmed).

    Paths are timed interleaved, so each callable is self-contained: the paths that share ``model``
    set their impl on every call (a CUDA graph has its kernels fixed at capture, on the first call).
    """
    predictor = build_predictor(path, model, example, classifier, workdir)
    shares_model = getattr(predictor, "model", None) is model

    def embeddings(frames: torch.Tensor) -> torch.Tensor:
        if shares_model:
            model.set_impl(path.impl)
        return predictor(frames)[1]

    embeddings(example)  # warm-up: index tables, folded weights, kernel tuning, compilation, graph capture
    embeddings.predictor = predictor
    return embeddings
