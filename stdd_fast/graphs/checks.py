"""Static checks of an exported graph: ONNX validity, TensorRT parser support, static shapes.

``TENSORRT_ONNX_OPS`` is data: the operators marked supported ("Y") in the ONNX-TensorRT operator
support matrix for TensorRT 10.15 (opset 9 to 24), ``docs/operators.md`` of
https://github.com/onnx/onnx-tensorrt (main branch, 2026). A graph that passes here can still hit a
per-op restriction listed in that table; the ones that matter for exported PyTorch graphs (constant
``axes``) are checked below.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from stdd_fast.deps import require
from stdd_fast.errors import GraphCheckError
from stdd_fast.graphs.spec import INPUT_NAME, OUTPUT_NAMES, ExportSpec

TENSORRT_VERSION_OF_OP_LIST = "10.15"
TENSORRT_OPSET_RANGE = (9, 24)

# The Reduce* family: in TensorRT's table, and its axes input must be a build-time constant.
REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
)
# The "Y" rows of onnx-tensorrt docs/operators.md (TensorRT 10.15).
TENSORRT_ONNX_OPS: frozenset[str] = frozenset(
    [
        *REDUCE_OPS,
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "Attention",
        "AveragePool",
        "BatchNormalization",
        "BlackmanWindow",
        "Cast",
        "CastLike",
        "Ceil",
        "Celu",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DeformConv",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "EyeLike",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "GRU",
        "HammingWindow",
        "HannWindow",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "If",
        "ImageScaler",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "Loop",
        "LRN",
        "LSTM",
        "LpNormalization",
        "LpPool",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "MeanVarianceNormalization",
        "Min",
        "Mish",
        "Mod",
        "Mul",
        "Neg",
        "NonMaxSuppression",
        "NonZero",
        "Not",
        "OneHot",
        "Or",
        "Pad",
        "ParametricSoftplus",
        "Pow",
        "PRelu",
        "QuantizeLinear",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Range",
        "Reciprocal",
        "Relu",
        "Reshape",
        "Resize",
        "ReverseSequence",
        "RMSNormalization",
        "RNN",
        "RoiAlign",
        "RotaryEmbedding",
        "Round",
        "STFT",
        "ScaledTanh",
        "Scan",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Shrink",
        "Sigmoid",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
        "TensorScatter",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unsqueeze",
        "Upsample",
        "Where",
        "Xor",
    ]
)

# Supported by TensorRT, but not in an STDD graph: their output shape depends on tensor values,
# they branch or loop on data, or they draw random numbers (ARCHITECTURE §4.1-4.2).
FORBIDDEN_OPS: frozenset[str] = frozenset(
    [
        "NonZero",
        "Unique",
        "Compress",
        "NonMaxSuppression",
        "Loop",
        "If",
        "Scan",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Bernoulli",
        "Multinomial",
    ]
)

# op -> input positions TensorRT needs as build-time constants (the table's restrictions column).
_CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    **{
        op: (1,)
        for op in [
            *REDUCE_OPS,
            "Squeeze",
            "Unsqueeze",
            "CumSum",
            "OneHot",
        ]
    },
}


@dataclass(frozen=True)
class GraphReport:
    """What :func:`check_graph` found: op histogram, opset, I/O shapes (``"batch"`` = the dynamic axis)."""

    opset: int
    num_nodes: int
    op_counts: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, tuple] = field(default_factory=dict)
    outputs: dict[str, tuple] = field(default_factory=dict)

    def summary(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.op_counts.items(), key=lambda kv: -kv[1])[:6])
        return (
            f"graph: opset {self.opset}, {self.num_nodes} nodes ({ops}, ...); all ops in TensorRT "
            f"{TENSORRT_VERSION_OF_OP_LIST}'s ONNX parser; no data-dependent shapes; "
            f"inputs {self.inputs}, outputs {self.outputs}"
        )


def _dims(value_info) -> tuple:
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim
    )


def _elem_type(value_info) -> int:
    return value_info.type.tensor_type.elem_type


def check_graph(model_or_path, spec: ExportSpec | None = None) -> GraphReport:
    """Check an exported graph; raise :class:`GraphCheckError` naming the first problem class.

    * ``onnx.checker`` (full check: strict shape inference);
    * every op is in the default domain and in :data:`TENSORRT_ONNX_OPS`; none is in
      :data:`FORBIDDEN_OPS`; no local functions; opset within TensorRT's range;
    * inputs needed as constants by TensorRT (``axes``) are initializers or Constant outputs;
    * with ``spec``: exactly one input ``frames`` and outputs ``scores``, ``embeddings`` with the
      spec's dtypes and shapes, static except a symbolic batch axis 0.
    """
    onnx = require("onnx")
    if isinstance(model_or_path, str | Path):
        # The checker needs the path for graphs over 2 GB (external data); it also loads faster.
        onnx.checker.check_model(str(model_or_path), full_check=True)
        model = onnx.load(str(model_or_path), load_external_data=False)
    else:
        model = model_or_path
        onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    problems: list[str] = []
    lo, hi = TENSORRT_OPSET_RANGE
    if not lo <= opset <= hi:
        problems.append(f"opset {opset} is outside TensorRT {TENSORRT_VERSION_OF_OP_LIST}'s range {lo}..{hi}")
    if len(model.functions):
        problems.append(f"local functions {[f.name for f in model.functions][:5]} (TensorRT parses plain nodes only)")

    counts = Counter(n.op_type for n in graph.node)
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        problems.append(f"ops outside the ONNX domain: {foreign[:8]}")
    unsupported = sorted(op for op in counts if op not in TENSORRT_ONNX_OPS)
    if unsupported:
        problems.append(f"ops TensorRT's ONNX parser does not support: {unsupported}")
    forbidden = sorted(op for op in counts if op in FORBIDDEN_OPS)
    if forbidden:
        problems.append(f"data-dependent-shape, control-flow or random ops: {forbidden}")

    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    for node in graph.node:
        for pos in _CONSTANT_INPUTS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos] and node.input[pos] not in constants:
                problems.append(
                    f"{node.op_type} node {node.name!r} takes input {pos} ({node.input[pos]!r}) from a computed "
                    "tensor; TensorRT needs it constant"
                )
                break

    inputs = {i.name: _dims(i) for i in graph.input if i.name not in {t.name for t in graph.initializer}}
    outputs = {o.name: _dims(o) for o in graph.output}
    if spec is not None:
        expected_in = {INPUT_NAME: spec.input_shape("batch")}
        expected_out = spec.output_shapes("batch")
        if inputs != expected_in:
            problems.append(f"inputs {inputs}, expected {expected_in}")
        if outputs != expected_out:
            problems.append(f"outputs {outputs}, expected {expected_out}")
        elem = onnx.helper.np_dtype_to_tensor_dtype
        want_in = elem(_np_dtype(spec.input_dtype))
        got_in = {_elem_type(i) for i in graph.input if i.name == INPUT_NAME}
        if got_in and got_in != {want_in}:
            problems.append(f"input dtype {got_in}, expected {want_in} ({spec.input_dtype})")
        f32 = onnx.TensorProto.FLOAT
        bad_out = [o.name for o in graph.output if o.name in OUTPUT_NAMES and _elem_type(o) != f32]
        if bad_out:
            problems.append(f"outputs {bad_out} are not float32")
    if problems:
        raise GraphCheckError("exported graph fails its checks: " + "; ".join(problems))
    return GraphReport(opset=opset, num_nodes=len(graph.node), op_counts=dict(counts), inputs=inputs, outputs=outputs)


def _np_dtype(dtype):
    import torch

    return torch.empty(0, dtype=dtype).numpy().dtype
