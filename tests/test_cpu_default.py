"""The CPU default (backend="auto"): the faster of the fused encoder in PyTorch and in ONNX Runtime
(from a graph cache, scored in PyTorch), measured once per machine.

Against the fp32 reference on fresh random weights (tiny and ViT-B/16-like grids) in every STCA mode
it supports; modes it does not support fall back to torch with the reason recorded; the choice is
measured once per machine and shapes, and rebuilt from an unreadable record; the graph cache builds
once per (weights, STCA schedule, T), rebuilds a corrupt file, and the classifier swaps without a
new graph. conftest pins STDD_BACKEND=torch for the rest of the suite: these tests unset it.
"""

import json

import pytest
import torch
from helpers import randomize_, report, small_arch

from stdd_fast import Classifier, ClassifierError, Engine, STCAConfig, build_classifier, create_model
from stdd_fast.numerics import FP32_MAX_REL, max_rel_err

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from stdd_fast.predict import cpu_choice, encoder_cache
from stdd_fast.predict.build import build_predictor

CLASSES = ["run", "jump", "swim", "climb"]


@pytest.fixture(scope="module")
def _module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _default_backend(monkeypatch, _module_cache):
    """The default unpinned; one cache for the module (a graph a test built serves the next: exports cost seconds)."""
    monkeypatch.delenv("STDD_BACKEND", raising=False)
    monkeypatch.setenv("STDD_CACHE_DIR", str(_module_cache))


def _model(arch, shuffle="none", seed=3):
    return randomize_(create_model(arch, stca=STCAConfig(shuffle=shuffle, seed=11)), seed=seed)


@pytest.mark.parametrize(
    "arch, shuffle",
    [("test-tiny", "none"), ("test-tiny", "seeded"), (small_arch(grid=14, layers=2, name="b16like"), "none")],
)
def test_the_onnx_runtime_cpu_path_matches_the_reference(arch, shuffle):
    model = _model(arch, shuffle)
    predictor = build_predictor(model, CLASSES, backend="onnxruntime", num_frames=8)
    assert predictor.backend == "onnxruntime"
    size = model.arch.image_size
    clips = torch.randn(3, 8, 3, size, size)
    logits, emb = predictor(clips)
    with torch.no_grad():
        ref_emb = model.set_impl("reference").encode_video(clips)
    clf = build_classifier(model, CLASSES)
    from stdd_fast.head import score

    ref_logits = score(ref_emb, clf.weights, model.logit_scale)
    what = f"ONNX Runtime CPU path vs reference ({model.arch.name}, {shuffle}) embeddings"
    err = report(what, max_rel_err(emb, ref_emb))
    assert err <= FP32_MAX_REL
    assert report("... logits", max_rel_err(logits, ref_logits)) <= FP32_MAX_REL


def test_auto_measures_the_two_exact_paths_once_and_builds_the_faster(monkeypatch, tmp_path):
    monkeypatch.setenv("STDD_CACHE_DIR", str(tmp_path))  # no record yet
    model = _model("test-tiny")
    before = cpu_choice.MEASUREMENTS["count"]
    first = build_predictor(model, CLASSES)
    (entry,) = json.loads(cpu_choice.record_path().read_text()).values()
    print(f"[measured] fused encoder ms per clip on this machine: {entry['ms']} -> {entry['backend']}")
    assert cpu_choice.MEASUREMENTS["count"] == before + 1
    assert first.backend == entry["backend"] == cpu_choice.winner(entry["ms"])
    assert "measured now" in first.backend_choice.reason and first.backend_choice.seconds > 0
    clips = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        ref = model.set_impl("reference").encode_video(clips)
    assert report(f"auto ({first.backend}) vs reference", max_rel_err(first(clips)[1], ref)) <= FP32_MAX_REL

    again = build_predictor(_model("test-tiny", seed=4), ["a", "b"])  # other weights and classes, same shapes
    assert cpu_choice.MEASUREMENTS["count"] == before + 1 and again.backend == entry["backend"]
    assert f"measured {entry['measured']}" in again.backend_choice.reason
    build_predictor(model, CLASSES, num_frames=4)  # another T: its own measurement
    assert cpu_choice.MEASUREMENTS["count"] == before + 2
    cpu_choice.record_path().write_text("{half a reco")  # unreadable: measured again, never trusted
    assert "measured now" in build_predictor(model, CLASSES).backend_choice.reason
    assert cpu_choice.MEASUREMENTS["count"] == before + 3


def test_onnx_runtime_must_win_by_the_margin():
    assert cpu_choice.winner({"torch": 100.0, "onnxruntime": 96.0}) == "torch"  # inside the spread: torch
    assert cpu_choice.winner({"torch": 100.0, "onnxruntime": 90.0}) == "onnxruntime"


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"stca": STCAConfig(shuffle="official")}, "a random STCA schedule"),
        ({"impl": "fused"}, "impl='fused' was asked for"),
        ({"dtype": "bf16"}, "dtype torch.bfloat16"),
    ],
)
def test_modes_it_does_not_support_fall_back_to_torch_with_the_reason(options, reason):
    stca = options.pop("stca", STCAConfig())
    model = randomize_(create_model("test-tiny", stca=stca), seed=3)
    predictor = build_predictor(model, CLASSES, **options)
    assert predictor.backend == "torch" and reason in predictor.backend_choice.reason


def test_the_graph_is_built_once_per_weights_and_frames():
    model = _model("test-tiny", seed=21)  # weights no other test of the module uses
    before = encoder_cache.BUILDS["count"]
    first = Engine(model, classes=CLASSES, backend="onnxruntime")
    assert first.backend == "onnxruntime" and first.predictor.cache.built and first.predictor.cache.seconds > 0
    # same weights, another classifier: no new graph (the classifier is not in it)
    again = Engine(_model("test-tiny", seed=21), classes=["a", "b"], backend="onnxruntime")
    assert not again.predictor.cache.built and encoder_cache.BUILDS["count"] == before + 1
    assert again.predictor.cache.path == first.predictor.cache.path
    Engine(_model("test-tiny", seed=21), classes=CLASSES, num_frames=4, backend="onnxruntime")  # T changes it
    Engine(_model("test-tiny", seed=22), classes=CLASSES, backend="onnxruntime")  # so do the weights
    Engine(_model("test-tiny", "seeded", seed=21), classes=CLASSES, backend="onnxruntime")  # and the schedule
    assert encoder_cache.BUILDS["count"] == before + 4


def test_the_optimised_graph_is_kept_and_another_runtime_gets_its_own(monkeypatch):
    """ONNX Runtime's optimisation of the graph (~1 s for B/16) is paid by the first predictor only; the file
    is for this ONNX Runtime version and CPU, so another version makes (and keeps) its own."""
    model = _model("test-tiny", seed=23)
    optimised = encoder_cache.BUILDS["optimised"]
    first = build_predictor(model, CLASSES, backend="onnxruntime")
    runtime = encoder_cache.runtime_tag()
    kept = first.cache.path.with_name(f"{first.cache.key}.{runtime}.onnx")
    assert kept.is_file() and encoder_cache.BUILDS["optimised"] == optimised + 1 and runtime in first.setup_note
    again = build_predictor(model, CLASSES, backend="onnxruntime")
    assert encoder_cache.BUILDS["optimised"] == optimised + 1 and "optimised" not in again.setup_note
    clips = torch.randn(2, 8, 3, 32, 32)
    assert torch.equal(first(clips)[1], again(clips)[1])  # the kept graph computes what the session made of it
    monkeypatch.setattr(encoder_cache, "runtime_tag", lambda: f"{runtime}-next")
    build_predictor(model, CLASSES, backend="onnxruntime")
    assert encoder_cache.BUILDS["optimised"] == optimised + 2 and kept.with_name(f"{kept.stem}-next.onnx").is_file()


def test_a_corrupt_cache_file_is_rebuilt_not_trusted():
    model = _model("test-tiny")
    path = build_predictor(model, CLASSES, backend="onnxruntime").cache.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    path.write_bytes(bytes(data))
    predictor = build_predictor(model, CLASSES, backend="onnxruntime")
    assert predictor.cache.built and "does not match its record" in predictor.cache.note
    clips = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        ref = model.set_impl("reference").encode_video(clips)
    assert max_rel_err(predictor(clips)[1], ref) <= FP32_MAX_REL


def test_the_classifier_swaps_without_a_new_graph():
    model = _model("test-tiny")
    engine = Engine(model, classes=CLASSES, backend="onnxruntime")
    builds = encoder_cache.BUILDS["count"]
    other = build_classifier(model, ["knit", "cook"])
    engine.set_classifier(other)
    clips = torch.randn(2, 8, 3, 32, 32)
    prediction = engine.predictor.predict(clips)
    assert prediction.classes == ("knit", "cook") and prediction.logits.shape == (2, 2)
    assert encoder_cache.BUILDS["count"] == builds
    with pytest.raises(ClassifierError, match="classifier embeddings are 16-d but the model's are 32-d"):
        engine.set_classifier(Classifier(torch.nn.functional.normalize(torch.randn(2, 16), dim=-1), ["a", "b"]))


def test_the_command_line_uses_the_default_and_says_so(tmp_path):
    import subprocess
    import sys

    from video_fixtures import write_clip

    from stdd_fast import save_checkpoint

    ckpt = save_checkpoint(_model("test-tiny"), tmp_path / "tiny.safetensors")
    clip = write_clip(tmp_path / "clip.mp4", 40)
    env = {**__import__("os").environ}
    env.pop("STDD_BACKEND", None)
    cmd = [sys.executable, "-m", "stdd_fast.cli", "classify", str(clip), "--weights", str(ckpt), "--classes", "a,b"]
    proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "stdd: backend: auto on the CPU: " in proc.stderr and "faster exact path on this machine" in proc.stderr
