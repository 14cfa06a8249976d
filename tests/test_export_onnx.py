"""ONNX export (issue 6): parity with the torch reference, static graph, dynamic batch, metadata.

Exports are slow-ish (torch.export, ~5-10 s each on 2 cores), so each configuration is exported
once per module and shared by the tests that read it.
"""

import onnx
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_, report
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from stdd_fast import Classifier, ClassifierError, ConfigError, STCAConfig, create_model, score
from stdd_fast.export import (
    ExportSpec,
    GraphCheckError,
    OnnxRuntimeRunner,
    ParityError,
    check_graph,
    export_and_verify,
    export_onnx,
    open_runner,
    read_onnx_spec,
)
from stdd_fast.export.parity import compare
from stdd_fast.graphs.checks import FORBIDDEN_OPS, TENSORRT_ONNX_OPS
from stdd_fast.numerics import cosine_min, min_cosine

T = 8


def report_cos(name: str, cos: float) -> float:
    """Print 1 - cosine (a cosine near 1 reads as 1.000e+00); return the cosine."""
    report(f"{name}: 1 - min cosine", 1.0 - cos)
    return cos


def random_classifier(k: int, d: int, n: int | None = 3, seed: int = 0) -> Classifier:
    gen = torch.Generator().manual_seed(seed)
    shape = (k, n, d) if n else (k, d)
    weights = F.normalize(torch.randn(shape, generator=gen), dim=-1)
    return Classifier(weights, [f"class {i}" for i in range(k)])


def tiny_model(shuffle: str = "none", seed: int = 3):
    return randomize_(create_model("test-tiny", stca=STCAConfig(shuffle=shuffle, seed=seed)), seed=1)


@torch.no_grad()
def torch_reference(model, classifier, frames):
    emb = model.encode_video(frames)
    return score(emb, classifier.weights, model.logit_scale), emb


def clips(b: int, seed: int, size: int = 32) -> torch.Tensor:
    return torch.randn(b, T, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(), random_classifier(7, 32)


@pytest.fixture(scope="module")
def fp32_export(tiny, tmp_path_factory):
    model, classifier = tiny
    return export_and_verify(model, classifier, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_export_onnx_public_api_returns_the_path(tiny, fp32_export):
    # export_onnx is export_and_verify(...).path; the shared export stands for the call here
    assert fp32_export.path.is_file()
    assert export_onnx.__doc__ and "frames" in export_onnx.__doc__


def test_fp32_parity_report_of_the_export(fp32_export):
    p = fp32_export.parity
    report_cos("tiny fp32 export scores", p.min_cosine_scores)
    report_cos("tiny fp32 export embeddings", p.min_cosine_embeddings)
    report("tiny fp32 export: max abs err scores", p.max_abs_err_scores)
    report_cos("tiny fp32 export, batch-1 vs batched", p.batch_consistency)
    assert p.ok and p.top1_agree == p.clips
    assert min(p.min_cosine_scores, p.min_cosine_embeddings) >= cosine_min(torch.float32)


def test_onnxruntime_matches_torch_on_fresh_clips_batch_1_and_3_in_one_session(tiny, fp32_export):
    model, classifier = tiny
    runner = OnnxRuntimeRunner(fp32_export.path)
    for b, seed in ((1, 11), (3, 12)):
        frames = clips(b, seed)
        scores, emb = runner(frames)
        ref_scores, ref_emb = torch_reference(model, classifier, frames)
        assert scores.shape == (b, 7) and emb.shape == (b, T, 32)
        assert scores.dtype == emb.dtype == torch.float32
        cos_s = report_cos(f"ORT vs torch, batch {b} scores", min_cosine(scores, ref_scores))
        cos_e = report_cos(f"ORT vs torch, batch {b} embeddings", min_cosine(emb, ref_emb))
        report(f"ORT vs torch, batch {b}: max abs err scores", (scores - ref_scores).abs().max().item())
        assert min(cos_s, cos_e) >= cosine_min(torch.float32)
        assert torch.equal(scores.argmax(-1), ref_scores.argmax(-1))
    assert len(runner.session.get_inputs()) == 1  # one session served both batch sizes
    assert isinstance(open_runner("onnxruntime", fp32_export.path), OnnxRuntimeRunner)
    with pytest.raises(ConfigError, match="valid values: 'onnxruntime', 'tensorrt'"):
        open_runner("openvino", fp32_export.path)


def test_graph_is_static_and_tensorrt_parsable(fp32_export):
    model = onnx.load(str(fp32_export.path))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & FORBIDDEN_OPS, ops & FORBIDDEN_OPS
    assert "NonZero" not in ops and ops <= TENSORRT_ONNX_OPS
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "frames" and dims == ["batch", T, 3, 32, 32]
    outs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert outs == {"scores": ["batch", 7], "embeddings": ["batch", T, 32]}
    report_ = check_graph(fp32_export.path, fp32_export.spec)
    print(report_.summary())


def test_metadata_round_trip_and_classifier_check(tiny, fp32_export):
    model, classifier = tiny
    spec = read_onnx_spec(fp32_export.path)
    assert spec == fp32_export.spec == OnnxRuntimeRunner(fp32_export.path).spec
    assert spec.classes == tuple(classifier.classes) and spec.arch == "test-tiny"
    assert spec.logit_scale == pytest.approx(model.logit_scale.item())
    assert spec.stca["shuffle"] == "none" and spec.precision == "float32" and spec.input_layout == "float"
    spec.check_classifier(classifier)
    with pytest.raises(ClassifierError, match="re-export"):
        spec.check_classifier(random_classifier(7, 32, seed=1))
    with pytest.raises(ConfigError, match=r"\[B, 8, 3, 32, 32\]"):
        OnnxRuntimeRunner(fp32_export.path)(torch.zeros(1, 4, 3, 32, 32))


def test_fp16_graph(tiny, tmp_path):
    model, classifier = tiny
    result = export_and_verify(model, classifier, tmp_path / "tiny16.onnx", torch.float16)
    p = result.parity
    report_cos("tiny fp16 export scores", p.min_cosine_scores)
    report_cos("tiny fp16 export embeddings", p.min_cosine_embeddings)
    report("tiny fp16 export: max abs err scores", p.max_abs_err_scores)
    assert min(p.min_cosine_scores, p.min_cosine_embeddings) >= cosine_min(torch.float16)
    assert p.top1_agree + p.top1_ties == p.clips
    graph = onnx.load(str(result.path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert {o.type.tensor_type.elem_type for o in graph.output} == {onnx.TensorProto.FLOAT}
    # LayerNorm statistics stay float32 in the fp16 graph
    assert any(n.op_type == "LayerNormalization" for n in graph.node)
    frames = clips(2, 21)
    scores, _ = OnnxRuntimeRunner(result.path)(frames)  # float32 frames are cast by the runner
    ref, _ = torch_reference(model, classifier, frames)
    assert report_cos("ORT fp16 vs torch fp32 scores", min_cosine(scores, ref)) >= cosine_min(torch.float16)


def test_uint8_input_normalises_in_graph_with_template_classifier(tiny, tmp_path):
    model, _ = tiny
    classifier = random_classifier(5, 32, n=None, seed=2)  # [K, D] template-average classifier
    result = export_and_verify(model, classifier, tmp_path / "u8.onnx", uint8_input=True)
    assert result.spec.input_shape(2) == (2, T, 32, 32, 3)
    raw = torch.randint(0, 256, (2, T, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    scores, emb = OnnxRuntimeRunner(result.path)(raw)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)
    frames = (raw.permute(0, 1, 4, 2, 3).float() / 255 - mean) / std  # the transform, written out independently
    ref_scores, ref_emb = torch_reference(model, classifier, frames)
    cos = report_cos("uint8 graph vs torch on normalised frames embeddings", min_cosine(emb, ref_emb))
    assert cos >= cosine_min(torch.float32)
    assert min_cosine(scores, ref_scores) >= cosine_min(torch.float32)
    with pytest.raises(ConfigError, match="uint8"):
        OnnxRuntimeRunner(result.path)(frames)


def test_official_shuffle_and_train_mode_are_refused(tmp_path):
    classifier = random_classifier(7, 32)
    with pytest.raises(ConfigError, match="official"):
        export_onnx(tiny_model("official"), classifier, tmp_path / "a.onnx")
    training = tiny_model().train()
    with pytest.raises(ConfigError, match=r"model\.eval\(\)"):
        export_onnx(training, classifier, tmp_path / "b.onnx")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="float32"):
        export_onnx(tiny_model(), classifier, tmp_path / "c.onnx", dtype=torch.bfloat16)
    with pytest.raises(ConfigError, match="fused"):
        export_onnx(tiny_model(), classifier, tmp_path / "d.onnx", impl="triton")
    with pytest.raises(ClassifierError, match="16-d"):
        export_onnx(tiny_model(), random_classifier(7, 16), tmp_path / "e.onnx")


def test_parity_failure_raises_and_removes_the_file(tiny, tmp_path, monkeypatch):
    model, classifier = tiny
    real_call = OnnxRuntimeRunner.__call__

    def broken(self, frames):
        scores, emb = real_call(self, frames)
        return scores.flip(-1), emb  # a wrong graph: classes permuted

    monkeypatch.setattr(OnnxRuntimeRunner, "__call__", broken)
    path = tmp_path / "bad.onnx"
    with pytest.raises(ParityError, match="does not match the torch reference"):
        export_onnx(model, classifier, path)
    assert not path.exists()


def test_compare_flags_mismatches_and_excuses_numerical_ties():
    ref = (torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 0.0]]), torch.ones(2, 2, 4))
    tied = (torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0 + 1e-6, 0.0]]), torch.ones(2, 2, 4))
    ok = compare(tied, ref, "float32", "test")
    assert ok.ok and ok.top1_ties == 1
    wrong = (torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 0.0]]), torch.ones(2, 2, 4))
    bad = compare(wrong, ref, "float32", "test")
    assert not bad.ok
    with pytest.raises(ParityError, match="top-1 agreement 1/2"):
        bad.raise_if_failed()


def _graph_with(nodes, inputs, outputs, initializers=()):
    graph = onnx.helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])


def test_check_graph_rejects_data_dependent_and_unparsable_ops():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    idx = onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, [1, "n"])
    with pytest.raises(GraphCheckError, match="NonZero"):
        check_graph(_graph_with([onnx.helper.make_node("NonZero", ["x"], ["i"])], [x], [idx]))
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])
    custom = _graph_with([onnx.helper.make_node("Foo", ["x"], ["y"], domain="com.example")], [x], [y])
    custom.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    with pytest.raises(GraphCheckError, match="outside the ONNX domain"):
        check_graph(custom)
    axes = onnx.helper.make_tensor_value_info("axes", onnx.TensorProto.INT64, [1])
    z = onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4])
    computed = _graph_with([onnx.helper.make_node("Unsqueeze", ["x", "axes"], ["z"])], [x, axes], [z])
    with pytest.raises(GraphCheckError, match="constant"):
        check_graph(computed)
    ok = _graph_with(
        [onnx.helper.make_node("Unsqueeze", ["x", "axes"], ["z"])],
        [x],
        [z],
        [onnx.numpy_helper.from_array(torch.tensor([0]).numpy(), "axes")],
    )
    assert check_graph(ok).op_counts == {"Unsqueeze": 1}


def test_export_spec_validates():
    with pytest.raises(ConfigError, match="valid values"):
        ExportSpec("a", 8, 32, 32, ("x",), "f", (1, 32), 4.6, input_layout="rgb")
    with pytest.raises(ConfigError, match="classes"):
        ExportSpec("a", 8, 32, 32, ("x", "y"), "f", (1, 32), 4.6)


def test_fused_path_exports_when_available(tmp_path):
    model, classifier = tiny_model(), random_classifier(7, 32)
    try:
        model.set_impl("fused")
    except ConfigError as e:
        pytest.skip(f"impl='fused' is not available: {e}")
    model.set_impl("reference")
    result = export_and_verify(model, classifier, tmp_path / "fused.onnx", impl="fused")
    report_cos("fused-path export embeddings", result.parity.min_cosine_embeddings)
    assert result.parity.ok and result.spec.impl == "fused"
    assert model.impl == "reference"  # the caller's model is untouched


@pytest.mark.slow  # 37 s on 2 cores: CI checks the tiny exports (above, test_golden); the B/16 graph, every bench run
def test_b16_fp32_export_matches_torch(tmp_path):
    """ViT-B/16 at 224 px, T = 8, seeded random weights, a 400-class prompt-level classifier."""
    model = create_model("ViT-B-16", seed=0)
    classifier = random_classifier(400, 512, n=8)
    result = export_and_verify(model, classifier, tmp_path / "b16.onnx", parity_clips=1)
    p = result.parity
    report_cos("B/16 fp32 export scores", p.min_cosine_scores)
    report_cos("B/16 fp32 export embeddings", p.min_cosine_embeddings)
    report("B/16 fp32 export: max abs err scores", p.max_abs_err_scores)
    report("B/16 fp32 export: max abs err embeddings", p.max_abs_err_embeddings)
    assert p.ok and p.top1_agree == 1
    assert result.graph.inputs == {"frames": ("batch", 8, 3, 224, 224)}
    assert result.graph.outputs == {"scores": ("batch", 400), "embeddings": ("batch", 8, 512)}
    assert not set(result.graph.op_counts) & FORBIDDEN_OPS


@pytest.mark.slow
def test_b16_fp16_export_matches_torch(tmp_path):
    model = create_model("ViT-B-16", seed=0)
    classifier = random_classifier(400, 512, n=8)
    result = export_and_verify(model, classifier, tmp_path / "b16h.onnx", torch.float16, parity_clips=2)
    p = result.parity
    report_cos("B/16 fp16 export scores", p.min_cosine_scores)
    report_cos("B/16 fp16 export embeddings", p.min_cosine_embeddings)
    report("B/16 fp16 export: max abs err scores", p.max_abs_err_scores)
    assert p.ok
