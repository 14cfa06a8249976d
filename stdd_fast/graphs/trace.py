"""Tracing an STDD model to ONNX: the exporter call, writing the file, and the copy that is traced.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript). Evaluated against
the TorchScript exporter (``dynamo=False``) on this graph (torch 2.14, opset 18, ViT-B/16, T=8):

* dynamo: 1.4k nodes, B/16 in ~20 s; only static Gather/GatherElements/ScatterElements for STCA,
  the batch axis symbolic end to end, no Range/ScatterND/Where/Equal;
* TorchScript: ~10k nodes (3.4k Constant, 640 Shape, 154 Where/Equal, 40 ScatterND, 41 Range)
  from traced shape arithmetic, and the exporter is deprecated since torch 2.9.

Both match the reference to ~1e-7 in ONNX Runtime; dynamo's graph is the clean static one TensorRT
wants, so it is used. The example batch is 2: with 1, torch.export specialises the batch axis.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal, get_args

import torch

from stdd_fast.deps import require
from stdd_fast.errors import BackendUnavailableError, ExportError, choice_error
from stdd_fast.graphs.spec import INPUT_NAME, OUTPUT_NAMES
from stdd_fast.model import STDDModel

ExportImpl = Literal["reference", "fused"]
EXPORT_IMPLS: tuple[str, ...] = get_args(ExportImpl)
DEFAULT_OPSET = 18
MIN_OPSET = 17  # LayerNormalization
MIN_TORCH = (2, 6)  # torch.onnx.export(dynamo=True) with dynamic_shapes= and optimize=
# protobuf's 2 GB message limit: bigger graphs keep their weights in a side file
_EXTERNAL_DATA_BYTES = 1_800_000_000


def torch_export(
    graph: torch.nn.Module,
    example: torch.Tensor,
    opset: int,
    input_names: tuple[str, ...] = (INPUT_NAME,),
    output_names: tuple[str, ...] = OUTPUT_NAMES,
):
    """``torch.onnx.export(dynamo=True)`` of ``graph`` on ``example`` with a dynamic batch axis (an ONNXProgram)."""
    require("onnxscript")
    if tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) < MIN_TORCH:
        raise BackendUnavailableError(
            f"ONNX export needs torch >= {'.'.join(map(str, MIN_TORCH))} (the torch.export-based exporter); "
            f"this is torch {torch.__version__}: pip install -U torch"
        )
    batch = torch.export.Dim("batch", min=1)
    try:
        return torch.onnx.export(
            graph,
            (example,),
            None,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            optimize=True,
            verbose=False,
        )
    except Exception as e:  # the exporter raises many types; surface one line and keep the cause chained
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ExportError(
            f"torch.onnx.export failed: {first[:300]}. Export from impl='reference' in eval mode with "
            "shuffle 'none' or 'seeded'; rerun with --debug for the exporter's report"
        ) from e


def save_proto(proto, path: Path) -> None:
    """Write an ONNX proto, its weights beside it in ``<name>.data`` when it would pass protobuf's 2 GB."""
    onnx = require("onnx")
    data = path.with_name(path.name + ".data")
    large = sum(len(t.raw_data) for t in proto.graph.initializer) > _EXTERNAL_DATA_BYTES
    if data.exists():
        data.unlink()  # a stale weight file of an earlier export to the same name
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path), save_as_external_data=large, all_tensors_to_one_file=True, location=data.name)


def prepare_model(model: STDDModel, impl: str = "reference") -> STDDModel:
    """A float32 eval copy of ``model`` on the same device running ``impl`` (the caller's model is untouched).

    Exporting from a copy keeps the caller's model as it was (impl, dtype, STCA index caches: the
    tracer must find those caches filled by a real forward, see :func:`warm_up`).
    """
    if impl not in EXPORT_IMPLS:
        raise choice_error("export impl", impl, EXPORT_IMPLS)
    work = copy.deepcopy(model).float().eval()
    work.set_impl(impl)
    return work
