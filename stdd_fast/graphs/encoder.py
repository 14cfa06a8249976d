"""The encoder alone as an ONNX graph: frames [B, T, 3, S, S] -> frame embeddings [B, T, D].

What the CPU fast path runs in ONNX Runtime (:mod:`stdd_fast.predict.onnx_encoder`). Unlike
:func:`stdd_fast.export.export_onnx` it bakes in no classifier: the scoring head stays in PyTorch
(well under 1 % of the time), so a new classifier, or one swapped while an engine runs, needs no
new graph. Traced from the fused STCA path (the exact algebraic rewrite, 20 % fewer FLOPs) with the
same exporter and graph checks as ``export_onnx``, and verified against the fp32 reference path on
a random clip before it is used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

import stdd_fast
from stdd_fast.deps import require
from stdd_fast.errors import ConfigError, ParityError
from stdd_fast.graphs.checks import check_graph
from stdd_fast.graphs.trace import DEFAULT_OPSET, prepare_model, save_proto, torch_export
from stdd_fast.model import STDDModel
from stdd_fast.numerics import FP32_MAX_REL, max_rel_err

log = logging.getLogger("stdd_fast.export")

METADATA_KEY = "stdd_fast.encoder"
INPUT_NAME, OUTPUT_NAME = "frames", "embeddings"


class EncoderGraph(nn.Module):
    """``frames [B, T, 3, S, S] -> embeddings [B, T, D]`` (float32, unit-norm)."""

    def __init__(self, model: STDDModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.encode_video(frames)


def encoder_spec(model: STDDModel, num_frames: int, impl: str, opset: int) -> dict:
    """What an encoder graph computes, recorded in its metadata (and part of its cache key)."""
    return {
        "arch": model.arch.to_dict(),
        "stca": None if model.stca is None else dataclasses.asdict(model.stca),
        "num_frames": num_frames,
        "impl": impl,
        "opset": opset,
        "stdd_fast_version": stdd_fast.__version__,
        "torch_version": torch.__version__,
    }


def check_exportable_encoder(model: STDDModel) -> str | None:
    """Why ``model`` cannot run as a fixed graph (train mode, per-call random schedules), or None when it can."""
    if model.training:
        return "the model is in training mode (its STCA schedules are drawn at random on every call)"
    if model.stca is not None and model.stca.shuffle == "official":
        return "STCAConfig(shuffle='official') draws a fresh schedule from the global RNG on every call"
    return None


def export_encoder(
    model: STDDModel, path: str | Path, num_frames: int = 8, impl: str = "fused", opset: int = DEFAULT_OPSET
) -> Path:
    """Export the encoder of ``model`` to ``path`` (checked, and verified against the fp32 reference); returns it.

    Raises ConfigError for a model that cannot be a fixed graph (:func:`check_exportable_encoder`),
    ParityError (the file removed) when ONNX Runtime misses the fp32 tolerance (max rel err 1e-5).
    """
    problem = check_exportable_encoder(model)
    if problem is not None:
        raise ConfigError(f"the encoder cannot be exported: {problem}")
    if not (isinstance(num_frames, int) and num_frames >= 1):
        raise ConfigError(f"num_frames={num_frames!r}: must be an int >= 1")
    ort = require("onnxruntime")
    path = Path(path)
    work = prepare_model(model, "reference")
    s = work.arch.image_size
    frames = torch.randn((2, num_frames, 3, s, s), generator=torch.Generator().manual_seed(0))
    graph = EncoderGraph(work).eval()
    with torch.no_grad():
        reference = graph(frames)  # also builds STCA's index tables as real tensors before tracing
        work.set_impl(impl)
        graph(frames[:1])
    start = time.perf_counter()
    proto = torch_export(graph, torch.zeros_like(frames), opset, (INPUT_NAME,), (OUTPUT_NAME,)).model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(encoder_spec(work, num_frames, impl, opset), sort_keys=True)
    proto.producer_name, proto.producer_version = "stdd_fast", stdd_fast.__version__
    save_proto(proto, path)
    del proto
    log.info("exported the %s encoder to %s in %.1f s", work.arch.name, path, time.perf_counter() - start)
    check_graph(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: frames.numpy()})[0])
    err = max_rel_err(got, reference)
    if err > FP32_MAX_REL:
        for p in (path, path.with_name(path.name + ".data")):
            p.unlink(missing_ok=True)
        raise ParityError(f"the exported encoder misses the fp32 reference: max rel err {err:.2e} > {FP32_MAX_REL}")
    log.info("encoder graph vs fp32 reference: max rel err %.2e", err)
    return path
