"""Swapping the vocabulary of a running engine or stream: every call and window is scored by one classifier,
old or new, never a mix; `stdd stream --watch-classifier` reloads a changed artifact and refuses a bad one."""

import contextlib
import io
import itertools
import json
import os
import threading
import time

import pytest
import torch
from helpers import randomize_
from video_fixtures import frame_pattern, write_clip

from stdd_fast import build_classifier, create_model, save_checkpoint
from stdd_fast.classifier_watch import ClassifierWatcher
from stdd_fast.cli import main
from stdd_fast.engine import Engine

OLD = ["run", "jump", "swim"]
NEW = ["forklift reversing", "person climbing fence", "waving", "sitting down"]


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("test-tiny"), seed=13)


@pytest.fixture(scope="module")
def classifiers(model):
    return build_classifier(model, OLD), build_classifier(model, NEW)


def which(classes) -> str:
    """ "old" or "new": the one class set ``classes`` belongs to, all of it (anything else fails the test)."""
    names = set(classes)
    matches = [k for k, full in (("old", OLD), ("new", NEW)) if names <= set(full)]
    assert len(matches) == 1, f"classes {sorted(names)} are not all from one vocabulary"
    return matches[0]


def test_concurrent_calls_each_score_with_one_whole_classifier(model, classifiers):
    old, new = classifiers
    engine = Engine(model, classifier=old, num_views=1)
    predictor = engine.predictor
    clips = torch.randn(2, 4, 3, 32, 32)
    reference = {}
    for name, clf in (("old", old), ("new", new)):
        engine.set_classifier(clf)
        reference[name] = predictor.predict(clips).logits
    seen, errors, stop = [], [], threading.Event()

    def caller():
        try:
            for _ in range(12):
                p = predictor.predict(clips)
                name = which(p.classes)
                assert len(p.classes) == p.logits.shape[1]
                torch.testing.assert_close(p.logits, reference[name], rtol=1e-5, atol=1e-5)  # its own weights
                seen.append(name)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    def swapper():
        for i in range(2000):
            if stop.is_set():
                return
            engine.set_classifier(new if i % 2 else old)
            time.sleep(0.0005)

    callers = [threading.Thread(target=caller) for _ in range(3)]
    flipping = threading.Thread(target=swapper)
    flipping.start()
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=120)
    stop.set()
    flipping.join(timeout=10)
    assert not errors, errors[0]
    assert len(seen) == 36 and {"old", "new"} <= set(seen), seen
    print("calls scored by the old / new classifier:", seen.count("old"), seen.count("new"))


def test_stream_windows_switch_once_in_order(model, classifiers):
    """A source thread swaps the classifier mid-stream: old windows, then new ones, one switch, none mixed."""
    old, new = classifiers
    engine = Engine(model, classifier=old, num_views=1)
    swap_at, total = 60, 140

    def frames():
        for i in range(total):
            if i == swap_at:  # from the stream's worker thread, while the consumer scores windows
                engine.set_classifier(new)
            yield frame_pattern(i % 256, 48, 64), i / 30

    results = list(engine.stream(frames, window=8, stride=4, top_k=10, fps=30))
    assert results and all(r.ok for r in results), [r.error for r in results if not r.ok]
    kinds = []
    for r in results:
        kind = which(r.labels)
        assert sorted(r.labels) == sorted(OLD if kind == "old" else NEW)  # top_k >= K: every class, one set
        assert r.logits.shape == (len(OLD if kind == "old" else NEW),)
        kinds.append(kind)
    switches = sum(a != b for a, b in itertools.pairwise(kinds))
    assert kinds[0] == "old" and kinds[-1] == "new" and switches == 1, kinds
    assert [r.index for r in results] == sorted(r.index for r in results)  # in window order
    print(f"{kinds.count('old')} windows old, then {kinds.count('new')} new")


def test_watcher_reloads_a_settled_file_and_refuses_bad_ones(model, classifiers, tmp_path):
    old, new = classifiers
    path = old.save(tmp_path / "live.safetensors")
    engine = Engine(model, classifier=path, num_views=1)
    said = []
    watcher = ClassifierWatcher(engine, path, interval=0.02, report=said.append)
    assert watcher.check() is None  # nothing changed

    staged = new.save(tmp_path / "staged.safetensors")
    os.replace(staged, path)  # the atomic way
    assert watcher.check() is None and engine.classes == OLD  # changed since the last look: wait until it settles
    assert watcher.check() == "reloaded" and engine.classes == NEW
    assert said[-1].startswith(f"stdd: classifier reloaded from {path}: 4 classes (forklift reversing,")

    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a writer caught halfway
    assert watcher.check() is None
    assert watcher.check() == "refused" and engine.classes == NEW
    assert said[-1].startswith("stdd: error: --watch-classifier:") and "still scoring with the previous" in said[-1]
    assert watcher.check() is None and len(said) == 2  # reported once

    other = randomize_(create_model("test-tiny"), seed=99)  # another text tower
    build_classifier(other, ["elsewhere"]).save(staged)
    os.replace(staged, path)
    watcher.check()
    assert watcher.check() == "refused" and engine.classes == NEW and "rebuild it with this model" in said[-1]

    path.unlink()  # gone: reported once, the classes stay
    watcher.check()
    assert watcher.check() == "refused" and "no such classifier file" in said[-1] and engine.classes == NEW

    old.save(staged)  # the thread does the same on its own
    watcher.start()
    try:
        os.replace(staged, path)
        deadline = time.monotonic() + 10
        while engine.classes != OLD and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        watcher.stop()
    assert engine.classes == OLD and watcher.reloads == 2


class _Lines(io.StringIO):
    """stdout that calls ``on_line()`` when the first line is complete."""

    def __init__(self, on_line) -> None:
        super().__init__()
        self.on_line = on_line

    def write(self, text: str) -> int:
        n = super().write(text)
        if "\n" in text and self.on_line is not None:
            self.on_line, hook = None, self.on_line
            hook()
        return n


def test_cli_stream_watch_classifier(model, classifiers, tmp_path, capsys):
    old, new = classifiers
    ckpt = save_checkpoint(model, tmp_path / "tiny.safetensors")
    art = old.save(tmp_path / "vocabulary.safetensors")
    clip = write_clip(tmp_path / "live.mp4", 40, fps=10)

    def swap():  # once the first window is printed, replace the artifact the way a user should: write, rename
        new.save(tmp_path / "next.safetensors")
        os.replace(tmp_path / "next.safetensors", art)

    out = _Lines(swap)
    args = ["stream", str(clip), "--weights", str(ckpt), "--classifier", str(art), "--watch-classifier",
            "--watch-interval", "0.05", "--realtime", "--json", "--window", "8", "--stride", "4", "--top-k", "10",
            "--device", "cpu"]  # fmt: skip
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    windows = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [which(w["labels"]) for w in windows]
    switches = sum(a != b for a, b in itertools.pairwise(kinds))
    assert kinds[0] == "old" and kinds[-1] == "new" and switches == 1, kinds
    err = capsys.readouterr().err
    assert f"stdd: classifier reloaded from {art}: 4 classes" in err
    print(f"--watch-classifier: {kinds.count('old')} windows old, then {kinds.count('new')} new")

    assert main(["stream", str(clip), "--weights", str(ckpt), "--classes", "a,b", "--watch-classifier"]) == 2
    assert "--watch-classifier reloads the --classifier file" in capsys.readouterr().err
