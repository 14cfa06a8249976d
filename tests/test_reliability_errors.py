"""Reliability class 5: every error is typed, names the file and the problem, and says the fix."""

import json
import subprocess
import sys
import zipfile

import pytest
from helpers import randomize_
from safetensors.torch import save_file
from video_fixtures import write_clip

from stdd_fast import CheckpointError, Classifier, ClassifierError, build_classifier, create_model, load_model
from stdd_fast.prompts import read_class_names, read_xprompt

STDD = [sys.executable, "-m", "stdd_fast.cli"]


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("test-tiny"), seed=5)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("errors")
    path = build_classifier(model, ["run", "jump"]).save(root / "clf.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return root, f.metadata(), f.get_tensor("weights")


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.pop("prompts"), "the classifier's metadata lacks 'prompts'"),
        (lambda m: m.update(classes="[not json"), "the classifier's metadata is malformed \\(JSONDecodeError"),
        (lambda m: m.update(classes=json.dumps({"a": 1})), "the metadata field 'classes' has the wrong type"),
        (lambda m: m.update(logit_scale="big"), "malformed \\(ValueError"),
        (lambda m: m.update(classes=json.dumps(["run", "jump", "swim"])), "2 weight rows but 3 class names"),
    ],
)
def test_malformed_classifier_metadata_is_a_classifier_error(artifact, change, words):
    root, meta, weights = artifact
    meta = dict(meta)
    change(meta)
    path = root / "broken.safetensors"
    save_file({"weights": weights}, str(path), metadata=meta)
    with pytest.raises(ClassifierError, match=words) as e:
        Classifier.load(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "members",
    [
        {"archive/data.pkl": b"\x80\x02garbage"},  # a torch-save zip with a broken pickle
        {"archive/code/__torch__.py": "", "archive/constants.pkl": b""},  # TorchScript without data.pkl
        {"readme.txt": "a zip that is no checkpoint at all"},
    ],
)
def test_zip_archives_that_are_no_checkpoint_are_a_checkpoint_error(tmp_path, members):
    path = tmp_path / "weights.pt"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path)


@pytest.mark.parametrize("suffix", [".json", ".yml", ".txt"])
def test_non_utf8_class_lists_are_a_classifier_error(tmp_path, suffix):
    path = tmp_path / f"classes{suffix}"
    path.write_bytes(b"\xff\xfe\x00run\n")
    with pytest.raises(ClassifierError, match=r"not UTF-8 text \(byte 0\)"):
        read_class_names(path)


def test_broken_json_and_yaml_name_the_file(tmp_path):
    (tmp_path / "c.json").write_text('{"0": "run",')
    with pytest.raises(ClassifierError, match=r"c.json: not valid JSON \(JSONDecodeError"):
        read_class_names(tmp_path / "c.json")
    (tmp_path / "x.yml").write_text("run: [unclosed\n")
    with pytest.raises(ClassifierError, match=r"x.yml: not valid YAML"):
        read_xprompt(tmp_path / "x.yml")


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("cli-errors")
    from stdd_fast import save_checkpoint

    ckpt = save_checkpoint(model, root / "tiny.safetensors")
    clip = write_clip(root / "clip.mp4", 40)
    return root, ckpt, clip


@pytest.mark.parametrize(
    "args, words",
    [
        (["build-classifier", "--classes", "a,b", "-o", "{root}"], "is a folder; name the artifact file"),
        (["build-classifier", "--classes", "a,b", "-o", "{clip}/c.safetensors"], "Not a directory"),
        (["classify", "{clip}", "--classes", "a,b", "-o", "{root}"], "is a folder; name a file"),
        (["classify", "{clip}", "--classes", "a,b", "-o", "{clip}/r.jsonl"], "Not a directory"),
        (["classify", "{clip}", "--classes", "a,b", "-o", "{root}/r.parquet"], "name it results.jsonl or results.csv"),
        (["classify", "{clip}", "--classifier", "{clip}"], "not a readable classifier file"),
    ],
)
def test_unusable_outputs_and_artifacts_are_usage_errors(cli_files, args, words):
    root, ckpt, clip = cli_files
    argv = [a.format(root=root, clip=clip) for a in args]
    proc = subprocess.run([*STDD, *argv, "--weights", str(ckpt)], capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
