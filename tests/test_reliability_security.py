"""Reliability class 1, security: loading runs no code a file carries; writers stay inside their folder.

Each case proves its point by the file system: a marker file that the payload would create, or a
snapshot of the folders around the output, checked before and after.
"""

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import small_arch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from test_triton_repo import fake_onnx, make_spec

from stdd_fast import CheckpointError, ConfigError, UnsafeCheckpointError, load_model
from stdd_fast.checkpoints import read_state_dict
from stdd_fast.serve.triton_repo import write_triton_repo

STDD = [sys.executable, "-c", "import sys; from stdd_fast.cli import main; sys.exit(main())"]


def _scripted(module: torch.nn.Module, path: Path) -> Path:
    with pytest.warns(FutureWarning):  # torch.jit.script/save are deprecated; OpenAI still ships this format
        torch.jit.script(module).save(str(path))
    return path


class _SideEffect(torch.nn.Module):
    """A TorchScript module whose __setstate__ creates a file (torch.from_file with shared=True does)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 3))
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        mapped = torch.from_file(state[1], shared=True, size=4, dtype=torch.uint8)
        self.weight = state[0] + mapped.sum().float()
        self.marker = state[1]
        self.training = state[2]


@pytest.fixture
def payload(tmp_path):
    marker = tmp_path / "outside" / "written-by-the-archive"
    marker.parent.mkdir()
    return _scripted(_SideEffect(str(marker)), tmp_path / "ViT-B-16.pt"), marker


def test_torchscript_setstate_is_not_run_by_load_model(payload):
    path, marker = payload
    with pytest.raises(UnsafeCheckpointError, match=r"__setstate__.*trust_pickle=True"):
        load_model(path)
    assert not marker.exists()


def test_torchscript_setstate_is_not_run_by_the_cli(payload, tmp_path):
    path, marker = payload
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"unused: the checkpoint fails first")
    cmd = [*STDD, "classify", str(clip), "--weights", str(path), "--classes", "a,b"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "trust_pickle" in proc.stderr
    assert not marker.exists()


def test_the_payload_is_real_when_trusted(payload):
    """With trust_pickle=True the archive's code runs (torch.jit.load): the marker proves the test can fail."""
    path, marker = payload
    state, _ = read_state_dict(path, trust_pickle=True)
    assert marker.exists() and set(state) == {"weight"}


def test_scripted_open_clip_model_loads_as_data_with_its_parameters(tmp_path):
    arch = small_arch(grid=8, layers=2)
    vision = CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=4, image_size=32)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
    source = CLIP(32, vision, text, quick_gelu=True).eval()
    path = _scripted(source, tmp_path / "scripted.pt")
    model = load_model(path, arch=arch)
    expected = source.state_dict()
    got = model.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert model.checkpoint_info.format == "openai-torchscript"


def _zip_archive(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/code/__torch__.py", "")
        zf.writestr("archive/constants.pkl", pickle.dumps(()))
        for key, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_torchscript_data_pickle_with_a_foreign_global_is_refused(tmp_path):
    marker = tmp_path / "shell-ran"
    path = _zip_archive(tmp_path / "archive.pt", pickle.dumps(_Shell(marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os)\.system"):
        load_model(path)
    assert not marker.exists()


def test_torchscript_tensor_that_overruns_its_storage_is_a_checkpoint_error(tmp_path):
    class _Overrun:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (_PersistentStorage(), 0, (100,), (1,), False, None))

    class _PersistentStorage:
        pass

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 4) if isinstance(obj, _PersistentStorage) else None

    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(_Overrun())
    path = _zip_archive(tmp_path / "overrun.pt", buf.getvalue(), {"0": bytes(16)})
    with pytest.raises(CheckpointError, match="overruns its storage"):
        load_model(path)


# -- Triton repository: the model name is one directory inside the repository --------------------------


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "name", ["..", "../escaped", "a/../../escaped", "/tmp/escaped", "sub/model", ".hidden", "-flag", "a\nb", 'a"b', ""]
)
def test_triton_model_names_with_path_syntax_are_refused(tmp_path, name):
    onnx_file = fake_onnx(tmp_path / "model.onnx", make_spec())
    repo = tmp_path / "work" / "repo"
    repo.mkdir(parents=True)
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match="Triton model name"):
        write_triton_repo(repo, onnx_file, name=name)
    assert _tree(tmp_path) == before
    assert not Path("/tmp/escaped").exists()


def test_triton_repo_refuses_a_planted_link_out_of_the_repository(tmp_path):
    onnx_file = fake_onnx(tmp_path / "model.onnx", make_spec())
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "stdd").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_triton_repo(repo, onnx_file, name="stdd")
    assert list(outside.iterdir()) == []


def test_triton_repo_refuses_class_names_that_would_corrupt_labels(tmp_path):
    spec = make_spec()
    bad = type(spec)(**{**spec.__dict__, "classes": ("run", "jump\nswim", "dance", "cook", "climb")})
    onnx_file = fake_onnx(tmp_path / "model.onnx", bad)
    with pytest.raises(ConfigError, match=r"class 1 .*labels.txt"):
        write_triton_repo(tmp_path / "repo", onnx_file)
    assert not (tmp_path / "repo" / "stdd" / "labels.txt").exists()


def test_stdd_export_model_name_escape_is_a_usage_error(tmp_path):
    onnx_file = fake_onnx(tmp_path / "model.onnx", make_spec())
    repo = tmp_path / "repo"
    cmd = [
        sys.executable,
        "-c",
        "import sys; from stdd_fast.export.cli import main; sys.exit(main())",
        "--triton-repo",
        str(repo),
        "--onnx-file",
        str(onnx_file),
        "--model-name",
        "../escaped",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Triton model name" in proc.stderr
    assert not (tmp_path / "escaped").exists()


# -- what reaches a terminal: user-controlled strings with their control characters made visible -----------------

HOSTILE = "clip\x1b]0;owned\x07\x1b[2J\u202eevil\r\x9bX"
RAW_CONTROLS = ["\x1b", "\x07", "\r", "\u202e", "\x9b"]


def test_escape_makes_every_active_character_visible():
    from stdd_fast.terminal import escape, escape_lines

    shown = escape(HOSTILE + "\nnext\tcol")
    assert not any(c in shown for c in [*RAW_CONTROLS, "\n", "\t"]), shown
    assert shown == "clip\\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\x0d\\x9bX\\nnext\\tcol"
    assert escape_lines("a\nb\tc\x1b") == "a\nb\tc\\x1b"  # whole lines keep their newlines and tabs
    assert escape("ordinary name, ümlaut, 日本") == "ordinary name, ümlaut, 日本"


def test_no_raw_control_byte_reaches_the_terminal_from_a_command(tmp_path):
    """Corpus files named with escape sequences: every line printed is escaped (class names with control
    characters are refused when the classifier is built)."""
    from video_fixtures import write_clip

    from stdd_fast import create_model, save_checkpoint

    weights = save_checkpoint(create_model("test-tiny", seed=0), tmp_path / "w.safetensors")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_clip(corpus / f"{HOSTILE}.mp4", 20, width=64, height=48)
    (corpus / f"broken{HOSTILE}.mp4").write_bytes(b"not a video")
    cmd = [*STDD, "classify", str(corpus), "--weights", str(weights), "--backend", "torch", "--views", "1",
           "--classes", "run,jump", "--top-k", "2"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    print(result.stdout, result.stderr)
    assert result.returncode == 1  # the broken file failed, the other was classified
    for stream in (result.stdout, result.stderr):
        assert not any(c in stream for c in RAW_CONTROLS), repr(stream)
    assert "\\x1b]0;owned\\x07" in result.stdout and "\\x1b[2J" in result.stderr
