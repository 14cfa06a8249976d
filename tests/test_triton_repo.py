"""Triton model repository writer: layout, and config.pbtxt parsed against Triton's ModelConfig schema.

``parse_config`` parses with protobuf's own text-format parser into a message built from the
fields of Triton's ``model_config.proto`` that the writer uses (same names, numbers and types), so
a misspelled field, a wrong type or an unknown enum value fails the parse as it would in Triton.
"""

import json

import onnx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from stdd_fast import ConfigError
from stdd_fast.graphs.plan import SIDECAR_FORMAT, SIDECAR_VERSION
from stdd_fast.graphs.spec import METADATA_KEY, ExportSpec
from stdd_fast.serve.triton_repo import write_triton_repo

_DATA_TYPES = [
    "TYPE_INVALID",
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_UINT16",
    "TYPE_UINT32",
    "TYPE_UINT64",
    "TYPE_INT8",
    "TYPE_INT16",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_FP32",
    "TYPE_FP64",
    "TYPE_STRING",
    "TYPE_BF16",
]
_F = descriptor_pb2.FieldDescriptorProto
_MESSAGES = {  # message -> [(field, number, type, repeated, type name)], from Triton's model_config.proto
    "ModelInput": [
        ("name", 1, _F.TYPE_STRING, False, None),
        ("data_type", 2, _F.TYPE_ENUM, False, ".inference.DataType"),
        ("dims", 4, _F.TYPE_INT64, True, None),
        ("optional", 8, _F.TYPE_BOOL, False, None),
    ],
    "ModelOutput": [
        ("name", 1, _F.TYPE_STRING, False, None),
        ("data_type", 2, _F.TYPE_ENUM, False, ".inference.DataType"),
        ("dims", 3, _F.TYPE_INT64, True, None),
        ("label_filename", 4, _F.TYPE_STRING, False, None),
    ],
    "ModelDynamicBatching": [
        ("preferred_batch_size", 1, _F.TYPE_INT32, True, None),
        ("max_queue_delay_microseconds", 2, _F.TYPE_UINT64, False, None),
        ("preserve_ordering", 3, _F.TYPE_BOOL, False, None),
    ],
    "ModelInstanceGroup": [
        ("name", 1, _F.TYPE_STRING, False, None),
        ("count", 2, _F.TYPE_INT32, False, None),
        ("gpus", 3, _F.TYPE_INT32, True, None),
        ("kind", 4, _F.TYPE_ENUM, False, ".inference.ModelInstanceGroup.Kind"),
    ],
    "ModelConfig": [
        ("name", 1, _F.TYPE_STRING, False, None),
        ("platform", 2, _F.TYPE_STRING, False, None),
        ("max_batch_size", 4, _F.TYPE_INT32, False, None),
        ("input", 5, _F.TYPE_MESSAGE, True, ".inference.ModelInput"),
        ("output", 6, _F.TYPE_MESSAGE, True, ".inference.ModelOutput"),
        ("instance_group", 7, _F.TYPE_MESSAGE, True, ".inference.ModelInstanceGroup"),
        ("default_model_filename", 8, _F.TYPE_STRING, False, None),
        ("dynamic_batching", 11, _F.TYPE_MESSAGE, False, ".inference.ModelDynamicBatching"),
        ("backend", 17, _F.TYPE_STRING, False, None),
    ],
}


def _model_config_class():
    fdp = descriptor_pb2.FileDescriptorProto(name="stdd_test_model_config.proto", package="inference", syntax="proto3")
    enum = fdp.enum_type.add(name="DataType")
    for number, name in enumerate(_DATA_TYPES):
        enum.value.add(name=name, number=number)
    for message, fields in _MESSAGES.items():
        m = fdp.message_type.add(name=message)
        for name, number, typ, repeated, type_name in fields:
            f = m.field.add(name=name, number=number, type=typ)
            f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if type_name:
                f.type_name = type_name
        if message == "ModelInstanceGroup":
            kind = m.enum_type.add(name="Kind")
            for number, name in enumerate(("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")):
                kind.value.add(name=name, number=number)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def parse_config(text: str):
    """config.pbtxt text -> a ModelConfig message (raises text_format.ParseError if Triton would reject it)."""
    return text_format.Parse(text, _model_config_class()())


def make_spec(uint8: bool = False, precision: str = "float32", k: int = 5) -> ExportSpec:
    return ExportSpec(
        arch="test-tiny",
        num_frames=8,
        image_size=32,
        embed_dim=32,
        classes=tuple(f"class {i}" for i in range(k)),
        classifier_fingerprint="0123456789abcdef",
        classifier_shape=(k, 3, 32),
        logit_scale=4.6,
        input_layout="uint8" if uint8 else "float",
        precision=precision,
    )


def fake_onnx(path, spec: ExportSpec):
    """A small valid ONNX file carrying an export spec (the repo writer reads only the metadata)."""
    h = onnx.helper
    nodes = [
        h.make_node("Constant", [], ["scores"], value=h.make_tensor("s", onnx.TensorProto.FLOAT, [1, 5], [0.0] * 5)),
        h.make_node("Identity", ["frames"], ["embeddings"]),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("frames", onnx.TensorProto.FLOAT, ["batch", 8, 32])],
        [
            h.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, 5]),
            h.make_tensor_value_info("embeddings", onnx.TensorProto.FLOAT, ["batch", 8, 32]),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    h.set_model_props(model, {METADATA_KEY: spec.to_json()})
    onnx.save(model, str(path))
    return path


def fake_plan(path, spec: ExportSpec, max_batch: int = 16):
    path.write_bytes(b"not a real plan")
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "spec": json.loads(spec.to_json()),
        "precision": "fp16",
        "profile": {"min": 1, "opt": 4, "max": max_batch},
        "build": {"hardware_compatibility": "none"},
        "tensorrt_version": "10.15.1",
        "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]},
    }
    path.with_name(path.name + ".json").write_text(json.dumps(sidecar))
    return path


def test_onnx_repository_layout_and_config(tmp_path):
    spec = make_spec()
    onnx_file = fake_onnx(tmp_path / "model.onnx", spec)
    model_dir = write_triton_repo(tmp_path / "repo", onnx_file, max_batch_size=16, preferred_batch_sizes=(4, 8))
    assert model_dir == tmp_path / "repo" / "stdd"
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_file.read_bytes()
    assert (model_dir / "labels.txt").read_text().splitlines() == list(spec.classes)
    text = (model_dir / "config.pbtxt").read_text()
    print(text)
    cfg = parse_config(text)
    assert cfg.name == "stdd" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    (inp,) = cfg.input
    assert (inp.name, text_format.MessageToString(inp).count("TYPE_FP32"), list(inp.dims)) == (
        "frames",
        1,
        [8, 3, 32, 32],
    )
    outs = {o.name: o for o in cfg.output}
    assert list(outs) == ["scores", "embeddings"]
    assert list(outs["scores"].dims) == [5] and outs["scores"].label_filename == "labels.txt"
    assert list(outs["embeddings"].dims) == [8, 32]
    assert cfg.HasField("dynamic_batching") and list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    (group,) = cfg.instance_group
    assert group.count == 1 and group.kind == 0  # KIND_AUTO


@pytest.mark.parametrize(
    ("uint8", "precision", "dtype", "dims"),
    [(True, "float32", 2, [8, 32, 32, 3]), (False, "float16", 10, [8, 3, 32, 32])],
)
def test_input_dtypes(tmp_path, uint8, precision, dtype, dims):
    onnx_file = fake_onnx(tmp_path / "m.onnx", make_spec(uint8, precision))
    cfg = parse_config((write_triton_repo(tmp_path / "repo", onnx_file) / "config.pbtxt").read_text())
    assert cfg.input[0].data_type == dtype and list(cfg.input[0].dims) == dims
    assert cfg.max_batch_size == 32
    assert all(o.data_type == 11 for o in cfg.output)  # scores and embeddings are float32 in every precision


def test_plan_repository(tmp_path):
    spec = make_spec()
    plan = fake_plan(tmp_path / "model.plan", spec, max_batch=16)
    model_dir = write_triton_repo(tmp_path / "repo", plan, name="stdd_trt", version=3)
    assert (model_dir / "3" / "model.plan").read_bytes() == plan.read_bytes()
    assert (model_dir / "3" / "model.plan.json").is_file()
    cfg = parse_config((model_dir / "config.pbtxt").read_text())
    assert cfg.name == "stdd_trt" and cfg.platform == "tensorrt_plan"
    assert cfg.max_batch_size == 16 and cfg.instance_group[0].kind == 1  # KIND_GPU
    with pytest.raises(ConfigError, match="optimisation profile"):
        write_triton_repo(tmp_path / "repo", plan, max_batch_size=64)
    with pytest.raises(ConfigError, match="GPU only"):
        write_triton_repo(tmp_path / "repo", plan, instance_kind="cpu")


def test_errors(tmp_path):
    onnx_file = fake_onnx(tmp_path / "m.onnx", make_spec())
    with pytest.raises(ConfigError, match="no such file"):
        write_triton_repo(tmp_path / "repo", tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="valid values"):
        write_triton_repo(tmp_path / "repo", onnx_file, instance_kind="tpu")
    with pytest.raises(ConfigError, match="Triton model name"):
        write_triton_repo(tmp_path / "repo", onnx_file, name="a/b")
    with pytest.raises(ConfigError, match=r"outside 1\.\.32"):
        write_triton_repo(tmp_path / "repo", onnx_file, preferred_batch_sizes=(64,))
    plain = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ConfigError, match="no stdd_fast export metadata"):
        write_triton_repo(tmp_path / "repo", tmp_path / "plain.onnx")


def test_parser_rejects_what_triton_rejects():
    with pytest.raises(text_format.ParseError):
        parse_config('name: "x"\nmax_batch: 4\n')  # misspelled field
    with pytest.raises(text_format.ParseError):
        parse_config('input [ { name: "frames" data_type: TYPE_FLOAT32 } ]')  # unknown enum value
