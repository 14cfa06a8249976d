"""Engine backends: ONNX Runtime gives the torch backend's answers on real decoded clips; compile; errors."""

import importlib.util

import pytest
import torch
from helpers import randomize_, report
from video_fixtures import write_clip

from stdd_fast import BackendUnavailableError, ClassifierError, ConfigError, Engine, build_classifier, create_model
from stdd_fast.numerics import cosine_min, max_rel_err

CLASSES = ["run", "jump", "swim", "dance", "climb"]
needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    model = randomize_(create_model("test-tiny"), seed=11)
    clf = build_classifier(model, CLASSES)
    clips = [
        write_clip(root / f"{i}.mp4", n, width=w, height=h) for i, (n, w, h) in enumerate([(60, 64, 48), (35, 50, 70)])
    ]
    return root, model, clf, clips


@needs_ort
def test_onnxruntime_backend_matches_torch_on_decoded_clips(setup):
    from stdd_fast.export import export_onnx

    root, model, clf, clips = setup
    onnx_path = export_onnx(model, clf, root / "tiny.onnx")
    torch_results = Engine(model, classifier=clf, impl="reference").classify(clips, top_k=3)
    ort_engine = Engine(onnx_path, classifier=clf, backend="onnxruntime")
    ort_results = ort_engine.classify(clips, top_k=3)
    assert ort_engine.classes == CLASSES and "onnxruntime" in repr(ort_engine)
    for a, b in zip(torch_results, ort_results, strict=True):
        assert a.error is None and b.error is None
        assert a.labels == b.labels
        cos = torch.nn.functional.cosine_similarity(a.logits.double(), b.logits.double(), dim=0).item()
        report(f"onnxruntime vs torch logits ({b.source})", max_rel_err(b.logits, a.logits))
        assert cos >= cosine_min(torch.float32)
    emb_t = Engine(model, classifier=clf, impl="reference").embed(clips[:1])[0]
    emb_o = ort_engine.embed(clips[:1])[0]
    assert report("onnxruntime vs torch embeddings", max_rel_err(emb_o, emb_t)) <= 1e-5


@needs_ort
def test_exported_backend_errors(setup, tmp_path):
    from stdd_fast.export import export_onnx

    _, model, clf, _ = setup
    onnx_path = export_onnx(model, clf, tmp_path / "t.onnx", verify=False)
    assert Engine(onnx_path, classes=CLASSES, backend="onnxruntime").classes == CLASSES  # its own names: accepted
    with pytest.raises(ConfigError, match="baked in"):
        Engine(onnx_path, classes=CLASSES[::-1], backend="onnxruntime")
    with pytest.raises(ConfigError, match="re-export with --frames 4"):
        Engine(onnx_path, backend="onnxruntime", num_frames=4)
    other = build_classifier(model, ["a", "b"])
    with pytest.raises(ClassifierError):
        Engine(onnx_path, classifier=other, backend="onnxruntime")
    with pytest.raises(ConfigError, match="valid values: 'auto', 'torch', 'onnxruntime', 'tensorrt'"):
        Engine(model, classes=CLASSES, backend="tflite")
    assert Engine(onnx_path).backend == "onnxruntime"  # auto: an .onnx file runs in ONNX Runtime


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_is_a_clear_error(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a plan")
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        Engine(plan, backend="tensorrt")


@pytest.mark.slow
def test_compiled_engine_matches_eager(setup):
    _, model, clf, clips = setup
    eager = Engine(model, classifier=clf, impl="fused").classify(clips[:1])[0]
    compiled = Engine(model, classifier=clf, impl="fused", compile=True).classify(clips[:1])[0]
    assert report("compiled vs eager engine logits", max_rel_err(compiled.logits, eager.logits)) <= 1e-5


def test_unknown_compile_mode_is_a_config_error(setup):
    _, model, clf, _ = setup
    with pytest.raises(ConfigError, match="unknown compile 'fast'; valid values: True, False, 'default'"):
        Engine(model, classifier=clf, compile="fast")
