"""Reliability class 5: every error is typed, names the file and the problem, and says the fix."""

import contextlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

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


# -- issue 26: URLs, sparse checkpoints, Triton numbers, hostile values, served data, caches ----------------------


def test_a_url_given_to_classify_says_that_stream_reads_urls(model):
    """Was ``rtsp:/127.0.0.1:9/x: no such file`` (the URL mangled into a path)."""
    from stdd_fast import Engine

    engine = Engine(model, classes=["run", "jump"])
    for url in ("rtsp://127.0.0.1:9/x", "http://127.0.0.1:9/clip.mp4"):
        (result,) = engine.classify([url])
        print(f"[measured] {result.error}")
        assert str(result.error).startswith(f"{url}: a URL; classify reads video files")
        assert "`stdd stream` / Engine.stream" in str(result.error)


def _sparse_safetensors(path, state: dict, extra_gib: float) -> None:
    """``state`` as safetensors plus key ``extra.huge`` of ``extra_gib`` GiB of zeros that take no disk (sparse)."""
    header, offset = {}, 0
    for name, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    rows = int(extra_gib * 2**30) // (4 * 1024)
    header["extra.huge"] = {"dtype": "F32", "shape": [rows, 1024], "data_offsets": [offset, offset + rows * 4096]}
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for tensor in state.values():
            f.write(tensor.float().contiguous().numpy().tobytes())
        f.truncate(8 + len(text) + offset + rows * 4096)


def test_a_sparse_6_gib_key_is_refused_from_the_header_without_reading_it(tmp_path, model):
    """A checkpoint with one extra 6 GiB key: refused before any tensor is read (it grew the process by 2.5 GB)."""
    from bounds import run_bounded

    path = tmp_path / "sparse.safetensors"
    _sparse_safetensors(path, {k: v for k, v in model.state_dict().items()}, 6.0)
    size, disk = path.stat().st_size / 2**30, path.stat().st_blocks * 512 / 2**20
    print(f"[measured] file size {size:.1f} GiB, on disk {disk:.1f} MiB")
    out = run_bounded(
        "a safetensors file with a sparse 6 GiB extra key",
        f"""
        from stdd_fast import CheckpointError, load_model
        base = _rss()
        try:
            load_model({str(path)!r})
        except CheckpointError as e:
            print(" ".join(str(e).split()))
        print((_PEAK[0] - base) / 2**20)
        """,
        seconds=60,
        rss_mb=1500,
    )
    said, growth = out.stdout.splitlines()
    print(f"[measured] peak RSS growth: {float(growth):.0f} MiB")
    assert "does not fit architecture test-tiny: unexpected (1): ['extra.huge']" in said and float(growth) < 100


def test_triton_numbers_triton_would_reject_are_refused(tmp_path):
    """``instance_count`` 0 or -3, a negative queue delay: refused naming the flag (were written without a word)."""
    pytest.importorskip("onnx")
    from test_triton_repo import fake_onnx, make_spec

    from stdd_fast.errors import ConfigError
    from stdd_fast.export.cli import main as export_main
    from stdd_fast.serve.triton_repo import write_triton_repo

    onnx_file = fake_onnx(tmp_path / "m.onnx", make_spec())
    for options, words in (
        ({"instance_count": 0}, r"instance_count=0: must be an int >= 1 \(--instance-count"),
        ({"instance_count": -3}, r"instance_count=-3: must be an int >= 1"),
        ({"max_queue_delay_us": -5}, r"max_queue_delay_us=-5: must be an int >= 0 \(--max-queue-delay-us"),
        ({"preferred_batch_sizes": (0,)}, r"preferred batch size=0: must be an int >= 1"),
    ):
        with pytest.raises(ConfigError, match=words):
            write_triton_repo(tmp_path / "repo", onnx_file, **options)
    assert not (tmp_path / "repo" / "stdd" / "config.pbtxt").exists()
    for flags, words in ((["--instance-count", "-3"], "--instance-count -3: must be >= 1"),
                         (["--max-queue-delay-us", "-1"], "--max-queue-delay-us -1: must be >= 0")):  # fmt: skip
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = export_main(["--triton-repo", str(tmp_path / "repo"), "--onnx-file", str(onnx_file), *flags])
        assert code == 2 and words in err.getvalue(), err.getvalue()


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "-1"])
def test_a_prompts_timeout_out_of_range_is_a_usage_error(value):
    """``--timeout inf`` / ``1e300`` was an internal error (exit 70: past what a socket takes)."""
    from stdd_fast.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["prompts", "waving", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "-o", "x.yml",
                     "--timeout", value])  # fmt: skip
    print(f"[measured] --timeout {value}: exit {code}: {err.getvalue().strip()}")
    assert (
        code == 2 and f"timeout={float(value)!r}: must be a finite number of seconds > 0 and <= 86400" in err.getvalue()
    )


def test_served_data_that_does_not_decode_as_its_tensor_is_a_config_error():
    """What Triton's Python stub raises on such data (its own deserializer, here): struct.error, ValueError.
    The model answers the request with a ConfigError naming the problem, never a 500 with Python internals."""
    pytest.importorskip("pytriton")
    import importlib.util

    import numpy as np

    from stdd_fast.errors import ConfigError
    from stdd_fast.serve.model import _as_numpy

    origin = importlib.util.find_spec("pytriton").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(
        "stub_utils", f"{origin}/tritonserver/backends/python/triton_python_backend_utils.py"
    )
    stub_utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stub_utils)

    class Wire:
        """A request input as the stub holds it: its bytes and declared shape (``as_numpy`` as the stub's)."""

        def __init__(self, data: bytes, shape: list[int]) -> None:
            self.data, self.shape = data, shape

        def as_numpy(self) -> np.ndarray:
            return stub_utils.deserialize_bytes_tensor(self.data).reshape(self.shape)

    video = b"\x00\x00\x00\x18ftypmp42" + bytes(200)
    element = len(video).to_bytes(4, "little") + video
    assert _as_numpy(Wire(element, [1, 1]), "VIDEO")[0, 0] == video
    cases = [(Wire(video, [1, 1]), "its data is not BYTES elements"),
             (Wire(element, [2, 1]), "another number of elements than its declared shape")]  # fmt: skip
    for wire, words in cases:
        with pytest.raises(ConfigError, match=words) as e:
            _as_numpy(wire, "VIDEO")
        assert "send VIDEO as BYTES [n, 1]" in str(e.value)


def test_an_unusable_cache_means_running_without_it_said_once(tmp_path, cli_files):
    """The cache root a file (and, below, a folder root cannot write): ``stdd classify`` on the default CPU path
    exits 0 with one warning line per cache, the encoder graph built once (in a folder of this process)."""
    from stdd_fast.user_cache import CacheWarning, writable_folder

    _, ckpt, clip = cli_files
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "STDD_BACKEND"}  # the default: measured, graph cached
    env["STDD_CACHE_DIR"] = str(blocked)
    proc = subprocess.run([*STDD, "classify", str(clip), "--weights", str(ckpt), "--classes", "a,b"],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    warned = [line for line in proc.stderr.splitlines() if "warning" in line]
    print("[measured] " + "\n".join(warned))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(warned) == 2 and all(w.startswith("stdd: warning: cannot write ") for w in warned)
    assert all("(a file is where a folder should be): running without it" in w for w in warned)
    assert sum("building the test-tiny encoder graph" in line for line in proc.stderr.splitlines()) == 1
    with pytest.warns(CacheWarning, match=r"cannot write encoder graphs in /sys/stdd-cache \(Operation not permitted"):
        assert not writable_folder(Path("/sys/stdd-cache"), "encoder graphs")  # read-only, even for root


def test_a_full_disk_under_the_encoder_cache_means_building_it_elsewhere(tmp_path, model):
    """ENOSPC while the graph is written (a raw OSError before): said once, built in this process's folder."""
    from stdd_fast.predict.encoder_cache import cached_encoder
    from stdd_fast.user_cache import CacheWarning

    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 64 KiB tmpfs here to fill a disk ({mounted.stderr.decode().strip()})")
    try:
        with pytest.warns(CacheWarning, match=r"cannot write encoder graphs in .*full \(No space left on device\)"):
            cached = cached_encoder(model, 8, full)
        print(f"[measured] {cached.describe()}")
        assert cached.built and cached.path.parent != full and cached.path.is_file()
    finally:
        subprocess.run(["umount", str(full)], check=False)
