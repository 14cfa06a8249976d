"""Reliability class 3: nothing wrong comes back looking right.

Non-finite weights or scores, an almost-matching checkpoint, label files of the wrong shape, a
classifier from another text tower, unsafe class names, renumbered class lists, the caller's RNG,
timestamps that run backwards, list files with commas and spaces in paths, a live classifier swap
to a bad file, a resumed batch job whose weights or classifier changed, files planted in a batch
folder: each is a typed error (or a counted, documented drop), never a normal-looking result.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file
from video_fixtures import frame_pattern, write_clip

from stdd_fast import (
    CheckpointError,
    Classifier,
    ClassifierError,
    Engine,
    NonFiniteError,
    build_classifier,
    create_model,
    load_model,
    save_checkpoint,
)
from stdd_fast.prompts import read_askg, read_class_names, read_xprompt

CLASSES = ["run", "jump", "swim"]


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("test-tiny"), seed=4)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("silent") / "clip.mp4", 60)


# -- non-finite values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["visual.conv1.weight", "logit_scale", "transformer.resblocks.0.ln_1.bias"])
def test_non_finite_checkpoint_tensors_are_a_load_error(tmp_path, model, key):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state[key].view(-1)[0] = float("nan") if key != "logit_scale" else float("inf")
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointError, match=rf"hold NaN or Inf \({key}\)"):
        load_model(path)


def test_a_non_finite_classifier_artifact_is_refused(tmp_path, model):
    clf = build_classifier(model, CLASSES)
    clf.save(tmp_path / "ok.safetensors")
    weights = clf.weights.clone()
    weights[1, 0] = float("nan")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ok.safetensors"), framework="pt") as f:
        meta = f.metadata()
    save_file({"weights": weights}, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(ClassifierError, match=r"nan.safetensors: classifier weights hold NaN/Inf \(classes \['jump'\]"):
        Classifier.load(tmp_path / "nan.safetensors")
    meta = {**meta, "logit_scale": "inf"}
    save_file({"weights": clf.weights}, str(tmp_path / "inf.safetensors"), metadata=meta)
    with pytest.raises(ClassifierError, match="logit_scale=inf: must be a finite number"):
        Classifier.load(tmp_path / "inf.safetensors")


def test_non_finite_scores_are_an_error_of_that_video(model, clip):
    """Weights that overflow at run time (finite, so loading accepts them): the video errs, never a NaN score."""
    blown = randomize_(create_model("test-tiny"), seed=4)
    with torch.no_grad():
        blown.visual.ln_post.weight.fill_(3e38)  # finite, but the projection overflows to inf
    engine = Engine(blown, classes=CLASSES)
    tensor_clips = torch.randn(3, 8, 3, 32, 32)
    results = engine.classify([clip, tensor_clips])
    assert all(isinstance(r.error, NonFiniteError) and r.labels == [] and r.logits is None for r in results)
    assert "NaN/Inf" in str(results[0].error)
    assert json.dumps(results[0].to_dict(), allow_nan=False)  # nothing to print as NaN
    with pytest.raises(NonFiniteError):
        engine.embed(tensor_clips)
    windows = list(engine.stream(clip, window=20, stride=20))
    assert windows and all(isinstance(w.error, NonFiniteError) and w.index >= 0 for w in windows)


# -- checkpoints that almost fit -------------------------------------------------------------------------


def test_a_checkpoint_missing_its_last_block_is_not_a_custom_architecture(tmp_path, model):
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("visual.transformer.resblocks.1.")}
    torch.save(state, tmp_path / "open_clip.bin")
    with pytest.raises(CheckpointError, match=r"looks like architecture 'test-tiny' with blocks missing: "):
        load_model(tmp_path / "open_clip.bin")
    holes = {k: v for k, v in model.state_dict().items() if not k.startswith("transformer.resblocks.0.")}
    torch.save(holes, tmp_path / "holes.bin")
    with pytest.raises(CheckpointError, match=r"transformer.resblocks.\{0\}"):
        load_model(tmp_path / "holes.bin")


def test_the_format_is_read_from_the_content_not_the_suffix(tmp_path, model):
    save_checkpoint(model, tmp_path / "weights.bin")  # safetensors bytes under a pickle's name
    torch.save(model.state_dict(), tmp_path / "pickled.safetensors")
    for path in (tmp_path / "weights.bin", tmp_path / "pickled.safetensors"):
        loaded = load_model(path)
        assert all(
            torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
        )


def test_loading_leaves_the_callers_rng_alone(tmp_path, model):
    path = save_checkpoint(model, tmp_path / "tiny.safetensors")
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    load_model(path)
    Engine(path, classes=CLASSES)
    assert torch.equal(torch.rand(4), expected)


# -- label files of the wrong shape ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, words",
    [
        ("run:\n  xprompt_oo: where a person runs\n", "field xprompt_oo is a str, not a list of strings"),
        ("run:\n  xprompt_oo:\n  - [nested, list]\n", r"field xprompt_oo\[0\] is a list"),
        ("run:\n  xprompt_oo: [a]\nrun:\n  xprompt_oo: [b]\n", "duplicate key 'run' \\(first at line 1\\)"),
        ("run:\n  label: [not, a, string]\n  xprompt_oo: [a]\n", "field label is"),
        ("- just\n- a list\n", "expected a mapping from class name"),
        ("7:\n  xprompt_oo: [a]\n", "key 7 must be a class name"),
    ],
)
def test_xprompt_files_of_the_wrong_shape_are_refused(tmp_path, body, words):
    path = tmp_path / "classes_xprompt_bad.yml"
    path.write_text(body)
    with pytest.raises(ClassifierError, match=words):
        read_xprompt(path)


def test_askg_triples_of_the_wrong_shape_are_refused(tmp_path):
    path = tmp_path / "classes_ASKG_bad.yml"
    path.write_text("run:\n  label: run\n  act_obj_triples: <run, uses, legs>\n")
    with pytest.raises(ClassifierError, match="field act_obj_triples is a str, not a list of strings"):
        read_askg(path)


# -- class names and class lists -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["jump\nswim", "run\x1b[31m", "tab\there", 3])
def test_unsafe_class_names_are_refused(model, bad):
    with pytest.raises(ClassifierError, match=r"class 1|classes\[1\]"):
        build_classifier(model, ["run", bad, "swim"])


def test_an_index_to_class_json_with_a_gap_is_refused(tmp_path):
    path = tmp_path / "index2cls.json"
    path.write_text(json.dumps({"0": "run", "1": "jump", "3": "swim"}))
    with pytest.raises(ClassifierError, match="index 2 is missing"):
        read_class_names(path)
    path.write_text(json.dumps({"0": "run", "1": 5}))
    with pytest.raises(ClassifierError, match="class 1 is 5"):
        read_class_names(path)


def test_comment_lines_in_a_labels_file_are_not_classes(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# my classes\nrun\n\n  # still a comment\njump\n")
    assert read_class_names(path) == ["run", "jump"]


def test_a_classifier_from_another_text_tower_is_refused_by_export_and_exported_engines(tmp_path, model):
    pytest.importorskip("onnxruntime")
    from stdd_fast.export import export_onnx

    other = randomize_(create_model("test-tiny"), seed=99)
    foreign = build_classifier(other, CLASSES)
    with pytest.raises(ClassifierError, match="text tower"):
        export_onnx(model, foreign, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    own = build_classifier(model, CLASSES)
    path = export_onnx(model, own, tmp_path / "ok.onnx", verify=False)
    with pytest.raises(ClassifierError, match=r"has classifier .* baked in"):
        Engine(path, backend="onnxruntime", classifier=foreign)


# -- streams whose timestamps run backwards ---------------------------------------------------------------


def test_backwards_timestamps_are_dropped_and_counted():
    engine = Engine(randomize_(create_model("test-tiny"), seed=4), classes=CLASSES, num_views=1)

    def jittery():
        for i in range(120):
            ts = i / 30 if i % 10 != 5 else (i - 3) / 30  # every tenth frame goes back in time
            yield frame_pattern(i % 256, 48, 64), ts

    run = engine.stream(jittery, window=20, stride=10, fps=30)
    windows = list(run)
    stats = run.stats.streams["<stream 0>"]
    assert all(w.ok for w in windows) and stats["out_of_order"] == 12 and stats["frames"] == 108
    assert np.all(np.diff([w.start_time for w in windows]) > 0)  # windows keep moving forward in time


def test_a_clock_that_restarts_gives_windows_again():
    """First timestamps out of order (a source that restarted its clock) do not silence the stream."""
    engine = Engine(randomize_(create_model("test-tiny"), seed=4), classes=CLASSES, num_views=1)
    frames = [(frame_pattern(i % 256, 48, 64), 1000.0 if i == 0 else (i - 1) / 30) for i in range(80)]
    run = engine.stream(iter(frames), window=20, stride=10, fps=30)
    windows = list(run)
    stats = run.stats.streams["<stream 0>"]
    assert windows and all(w.ok for w in windows) and stats["resets"] == 1
    assert windows[0].start_time >= 0 and windows[0].start_time < 1


def test_json_lines_never_hold_nan(tmp_path, clip):
    blown = randomize_(create_model("test-tiny"), seed=4)
    with torch.no_grad():
        blown.visual.ln_post.weight.fill_(3e38)
    # finite weights that overflow at run time; save as fp32 safetensors
    ckpt = save_checkpoint(blown, tmp_path / "blown.safetensors")
    cmd = [sys.executable, "-m", "stdd_fast.cli", "classify", str(clip), "--weights", str(ckpt)]
    proc = subprocess.run([*cmd, "--classes", "a,b", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1

    def no_constants(name):
        raise AssertionError(f"JSON output holds {name}")

    row = json.loads(proc.stdout, parse_constant=no_constants)
    assert row["error"]["type"] == "NonFiniteError" and row["scores"] == [] and not math.isnan(row["timings"]["total"])


# -- list files: a path with commas or spaces is one path ---------------------------------------------------------


def test_list_files_keep_paths_with_commas_and_spaces_whole(tmp_path):
    from stdd_fast.cli.inputs import expand_inputs
    from stdd_fast.errors import ConfigError

    for name in ("a,b.mp4", "clip 12.mp4", "plain.mp4", "v 3.mp4"):
        (tmp_path / name).touch()
    (tmp_path / "list.csv").write_text('"a,b.mp4",0\nclip 12.mp4,1\n# a comment\nplain.mp4\nUCF/x.avi 7\n')
    (tmp_path / "list.txt").write_text("a,b.mp4\nclip 12.mp4\n\nplain.mp4 3\nv 3.mp4\n")
    names = lambda paths: [str(p).removeprefix(f"{tmp_path}/") for p in paths]
    assert names(expand_inputs([str(tmp_path / "list.csv")])) == ["a,b.mp4", "clip 12.mp4", "plain.mp4", "UCF/x.avi"]
    assert names(expand_inputs([str(tmp_path / "list.txt")])) == ["a,b.mp4", "clip 12.mp4", "plain.mp4", "v 3.mp4"]
    (tmp_path / "bad.csv").write_text("plain.mp4,0\na,b.mp4,0\n")  # unquoted: which comma ends the path?
    with pytest.raises(ConfigError, match=r"bad.csv, line 2: 'a,b.mp4,0' splits at a comma into 'a' and 'b.mp4'"):
        expand_inputs([str(tmp_path / "bad.csv")])


# -- a live classifier swap never leaves a stream without labels --------------------------------------------------


def test_the_watched_classifier_keeps_its_classes_when_the_file_turns_bad(tmp_path):
    """0 classes, garbage, a deleted file, a FIFO, a link to /dev/zero: each is refused with its reason (once) and
    the engine keeps scoring with the previous classes; never an engine without labels."""
    import os

    from stdd_fast.classifier_watch import ClassifierWatcher

    model = randomize_(create_model("test-tiny"), seed=4)
    clf = build_classifier(model, CLASSES)
    path = clf.save(tmp_path / "live.safetensors")
    engine = Engine(model, classifier=path, num_views=1)
    said = []
    watcher = ClassifierWatcher(engine, path, interval=0.02, report=said.append)
    empty = Classifier(clf.weights[:0], [], text_tower=clf.text_tower)

    def turn(make, words):
        if path.is_symlink() or path.exists():
            path.unlink()
        make()
        watcher.check()  # a change is acted on once it has held still
        assert watcher.check() == "refused" and engine.classes == CLASSES, said[-1:]
        assert words in said[-1] and "still scoring with the previous classes" in said[-1]
        print(f"[measured] {said[-1]}")

    turn(lambda: empty.save(path), "the classifier has 0 classes")
    turn(lambda: path.write_bytes(b"garbage" * 100), "not a readable classifier file")
    turn(lambda: None, "no such classifier file")
    turn(lambda: os.mkfifo(path), "is a FIFO, not a classifier file")
    turn(lambda: path.symlink_to("/dev/zero"), "is a device, not a classifier file")
    windows = list(engine.stream(iter([(frame_pattern(i, 48, 64), i / 30) for i in range(40)]), window=20, stride=20))
    assert windows and all(w.ok and w.labels for w in windows)
    from stdd_fast.errors import ClassifierError, ConfigError

    with pytest.raises(ClassifierError, match="0 classes"):
        engine.set_classifier(empty)
    with pytest.raises(ConfigError, match=r"set_classifier\(None\): an Engine that classifies needs a classifier"):
        engine.set_classifier(None)
    assert engine.classes == CLASSES


def test_a_stream_whose_predictor_lost_its_classifier_says_so_per_window():
    """Taken away below the Engine (``predictor.set_classifier(None)``): each window carries a ClassifierError."""
    from stdd_fast.errors import ClassifierError

    engine = Engine(randomize_(create_model("test-tiny"), seed=4), classes=CLASSES, num_views=1)
    run = engine.stream(iter([(frame_pattern(i, 48, 64), i / 30) for i in range(60)]), window=20, stride=20)
    got = []
    for w in run:
        got.append(w)
        engine.predictor.set_classifier(None)
    assert got[0].ok and all(isinstance(w.error, ClassifierError) for w in got[1:]) and len(got) == 3
    assert "no classifier to score it with" in str(got[1].error)


def test_timestamps_that_only_run_backwards_end_the_stream_with_the_reason():
    """Was an internal KeyError in the stream worker: the frame rate estimated across a clock reset came out
    negative. Now the frames of the old clock are dropped at a reset, and the stream ends saying why."""
    engine = Engine(randomize_(create_model("test-tiny"), seed=4), classes=CLASSES, num_views=1)
    for options in ({}, {"fps": 30}, {"window": 20, "stride": 10}):
        frames = ((frame_pattern(i % 256, 48, 64), (1000 - i) / 30) for i in range(400))
        (result,) = list(engine.stream(frames, **options))
        print(f"[measured] {options}: {result.error}")
        assert result.index == -1 and "its timestamps do not increase" in str(result.error), result.error
        assert "internal error" not in str(result.error)


# -- stdd batch: a resumed job is the same job; its folder holds only its rows ----------------------------------


def test_a_resumed_job_with_changed_weights_or_classifier_is_refused(tmp_path):
    """Same paths, new contents: the job file's fingerprints (sha256) differ and the resume is refused, naming
    which file changed (before, the rows of two models were mixed in one table without a word)."""
    from stdd_fast.batch import BatchConfig
    from stdd_fast.batch.output import OutputFolder
    from stdd_fast.errors import ConfigError

    model = randomize_(create_model("test-tiny"), seed=4)
    weights = save_checkpoint(model, tmp_path / "w.safetensors")
    clf = build_classifier(model, CLASSES).save(tmp_path / "clf.safetensors")
    job = lambda: BatchConfig(weights, classifier=clf).result_settings()
    folder = OutputFolder(tmp_path / "out")
    folder.prepare(job(), resume=False)
    folder.record(job())
    folder.prepare(job(), resume=True)  # the same job: resumed
    save_checkpoint(randomize_(create_model("test-tiny"), seed=5), weights)  # retrained, same path
    with pytest.raises(ConfigError, match=r"the contents of the weights file changed \(sha256 \w+ there, \w+ now"):
        folder.prepare(job(), resume=True)
    save_checkpoint(model, weights)
    folder.prepare(job(), resume=True)
    build_classifier(model, ["run", "jump", "dance"]).save(clf)  # rebuilt, same path
    with pytest.raises(ConfigError, match=r"the contents of the classifier file changed .* rows would mix"):
        folder.prepare(job(), resume=True)
    other = BatchConfig(weights, classifier=clf, num_frames=4).result_settings()
    with pytest.raises(ConfigError, match="num_frames: 8 there, 4 now"):
        folder.prepare(other, resume=True)


def test_files_planted_in_a_batch_folder_are_named_never_read_as_rows(tmp_path):
    """A file stdd batch did not write: refused before a job (named), and one planted while a job ran is left in
    place, never read as rows, and named in the summary; the documented read then works once it is moved out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stdd_fast.batch.output import OutputFolder
    from stdd_fast.batch.rows import failed_row, result_schema
    from stdd_fast.errors import ConfigError

    out = tmp_path / "out"
    run = out / "run-20260101T000000000000Z-1"
    run.mkdir(parents=True)
    row = failed_row("/v/a", "VideoError", "/v/a: broken", None, (0.0, 0.0, 0.0))
    pq.write_table(pa.Table.from_pylist([row], schema=result_schema()), run / "ok.parquet")
    pq.write_table(pa.table({"path": ["/v/evil"], "error_type": [None]}), run / "evil.parquet")  # no "error" column
    (out / "notes.txt").write_text("mine")
    folder = OutputFolder(out)
    with pytest.raises(ConfigError, match=r"holds files stdd batch did not write \(.*notes.txt: not a results folder"):
        folder.prepare({}, resume=True)
    (out / "notes.txt").unlink()
    scan = folder.consolidate()  # evil.parquet was planted while a job ran
    assert [p for p in scan.kept] == ["/v/a"] and len(scan.foreign) == 1 and "evil.parquet" in scan.foreign[0]
    assert (run / "evil.parquet").exists()  # not ours: left where it is (its run folder otherwise gone)
    assert [f.name for f in run.iterdir()] == ["evil.parquet"]
    assert "evil.parquet: its columns (path, error_type) are not the results'" in folder.foreign()[0]
    (run / "evil.parquet").unlink()
    run.rmdir()
    table = pq.read_table(out)  # the documented read: every row once, the results' columns
    assert table.column("path").to_pylist() == ["/v/a"] and table.schema.names == result_schema().names
