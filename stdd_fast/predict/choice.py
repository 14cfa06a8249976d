"""Which backend a predictor runs on, decided before anything is built: a :class:`BackendChoice` record.

The rule of ``backend="auto"``: an exported ``.onnx`` / ``.plan`` runs in its runtime; ``dtype="fp8"``
chooses torch and ``quantize="int8"`` ONNX Runtime (on the CPU; elsewhere it is an error), whatever
``STDD_BACKEND=torch|onnxruntime`` pins otherwise; every other option only torch has, and a GPU,
choose torch (Triton kernels on a GPU); otherwise the faster of the fused encoder in PyTorch and in
ONNX Runtime, measured once per machine (:mod:`stdd_fast.predict.cpu_choice`). ONNX Runtime needs
fp32, a deterministic STCA schedule and onnx / onnxruntime installed; where one is missing the
record says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from stdd_fast.devices import resolve_precision
from stdd_fast.errors import ConfigError
from stdd_fast.model import STDDModel
from stdd_fast.predict.config import PredictorConfig, exported_runtime
from stdd_fast.predict.contract import BackendChoice


def choose_for_exported(config: PredictorConfig, weights: str | Path) -> BackendChoice:
    """An exported graph runs in its own runtime; another backend asked for is refused."""
    runtime = exported_runtime(weights)
    if config.backend not in ("auto", runtime):
        raise ConfigError(
            f"{weights} is an exported graph for {runtime}; backend={config.backend!r} cannot run it: pass "
            f"backend={runtime!r} (or 'auto'), or a checkpoint for the torch backend"
        )
    return BackendChoice(runtime, f"backend={config.backend!r}: the exported graph {weights} runs in {runtime}")


def _torch_only(config: PredictorConfig, model: STDDModel, device: torch.device) -> str | None:
    """Why only the torch path can run ``config`` here (None: ONNX Runtime could too)."""
    from stdd_fast.deps import available

    dtype, _ = resolve_precision(config.dtype, device)
    blockers = [
        (device.type != "cpu", f"on {device} the torch path (Triton kernels) is the fast one"),
        (dtype != torch.float32, f"dtype {dtype} (the ONNX Runtime path runs fp32)"),
        (config.impl != "auto", f"impl={config.impl!r} was asked for"),
        (bool(config.compile) or config.cuda_graphs is True, "compile=/cuda_graphs= are torch options"),
        (config.gemm != "auto", f"gemm={config.gemm!r} is a torch option"),
        (model.stca is not None and model.stca.shuffle == "official", "a random STCA schedule"),
        (not all(available(m) for m in ("onnx", "onnxscript", "onnxruntime")), "onnx/onnxruntime are not installed"),
    ]
    return next((reason for blocked, reason in blockers if blocked), None)


def choose_backend(config: PredictorConfig, model: STDDModel, device: torch.device, num_frames: int) -> BackendChoice:
    """The backend a checkpoint or model runs on with ``config`` on ``device``, and why (builds no predictor)."""
    if config.backend == "tensorrt":
        raise ConfigError(
            "backend='tensorrt' runs a TensorRT plan: build one with `stdd-export --trt` and pass the .plan as weights"
        )
    if config.backend != "auto":
        return BackendChoice(config.backend, f"backend={config.backend!r} was asked for")
    if config.dtype == "fp8":  # before any pin: fp8 swaps a piece of the fused block, which only torch has
        return BackendChoice("torch", "auto with dtype='fp8': torch (fp8 swaps the fused block's linear piece)")
    blocker = _torch_only(config, model, device)
    if config.quantize is not None:  # int8 runs in ONNX Runtime only: nothing to choose, nothing a pin overrides
        if blocker is not None:
            raise ConfigError(f"quantize={config.quantize!r} runs in ONNX Runtime on the CPU, not here: {blocker}")
        return BackendChoice("onnxruntime", f"auto on the CPU with quantize={config.quantize!r}: ONNX Runtime")
    pinned = os.environ.get("STDD_BACKEND", "")
    if pinned:
        if pinned not in ("torch", "onnxruntime"):
            raise ConfigError(f"STDD_BACKEND={pinned!r}: use 'torch' or 'onnxruntime' (or unset it for auto)")
        return BackendChoice(pinned, f"STDD_BACKEND={pinned}")
    if blocker is not None:
        return BackendChoice("torch", f"auto: torch, because {blocker}")
    from stdd_fast.predict.cpu_choice import measured_choice

    return measured_choice(model, num_frames)
