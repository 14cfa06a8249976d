"""Each loader round-trips a checkpoint written in its real format; bad files fail with typed errors."""

import io
import os
import pickle

import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file
from torch import nn

import stdd_fast
from stdd_fast import CheckpointError, STCAConfig, UnsafeCheckpointError, create_model, load_model, save_checkpoint


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _torchscript_archive(state: dict, path) -> None:
    """Write a TorchScript archive whose state dict is ``state`` (the layout of OpenAI's CLIP files)."""
    root = _Holder()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        mod = root
        for name in parents:
            if not hasattr(mod, name):
                mod.add_module(name, _Holder())
            mod = getattr(mod, name)
        mod.register_buffer(leaf, value.clone())
    torch.jit.script(root).save(str(path))


@pytest.fixture(scope="module")
def source():
    return randomize_(create_model("test-tiny"), seed=3)


def _openai_state(model):
    state = {k: (v.half() if v.is_floating_point() and v.ndim >= 2 else v) for k, v in model.state_dict().items()}
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    return state


def _official_state(model, prefix="model."):
    return {prefix + k: v for k, v in model.state_dict().items()}


WRITERS = {
    "openai-torchscript.pt": lambda m, p: _torchscript_archive(_openai_state(m), p),
    "openai-state-dict.pt": lambda m, p: torch.save(_openai_state(m), p),
    "open_clip.bin": lambda m, p: torch.save(m.state_dict(), p),
    "open_clip-train.pt": lambda m, p: torch.save(
        {
            "epoch": 3,
            "name": "run",
            "state_dict": {"module." + k: v for k, v in m.state_dict().items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        },
        p,
    ),
    "open_clip.safetensors": lambda m, p: save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(p)),
    "checkpoint_epoch_00005.pyth": lambda m, p: torch.save(
        {
            "epoch": 4,
            "model_state": {
                **_official_state(m),
                **_official_state(m, "raw_model."),
                "projector_v.0.weight": torch.randn(32, 32),
                "projector_v.2.weight": torch.zeros(32, 32),
            },
            "optimizer_state": {
                "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4)}},
                "param_groups": [{"lr": 3.33e-6, "betas": (0.9, 0.999), "params": [0]}],
            },
            "cfg": "MODEL:\n  ARCH: vitb16\n  CHANNEL_FOLD: 32\n",
            "scaler_state": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 10},
        },
        p,
    ),
    "swa_2_22.pth": lambda m, p: torch.save({"model_state": _official_state(m)}, p),
    "stdd_fast.safetensors": lambda m, p: save_checkpoint(m, p),
}


@pytest.mark.parametrize("filename", list(WRITERS))
def test_loader_round_trip(source, tmp_path, filename):
    path = tmp_path / filename
    WRITERS[filename](source, path)
    model = load_model(path)
    print(filename, "->", model.checkpoint_info)
    assert model.arch.name == "test-tiny"
    expected = source.state_dict()
    fp16 = filename.startswith("openai")
    for k, v in model.state_dict().items():
        want = expected[k].half().float() if fp16 and v.ndim >= 2 else expected[k]
        assert torch.equal(v, want), k
    assert float(model.logit_scale.detach()) == float(source.logit_scale.detach())


def test_official_checkpoint_drops_raw_model_and_projector(source, tmp_path):
    path = tmp_path / "checkpoint_epoch_00005.pyth"
    WRITERS[path.name](source, path)
    info = load_model(path).checkpoint_info
    assert info.format == "stdd-official" and info.epoch == 4 and info.has_cfg
    assert info.ignored_prefixes == {"raw_model.": len(source.state_dict()), "projector_v.": 2}


def test_own_format_keeps_the_stca_config(source, tmp_path):
    model = randomize_(create_model("test-tiny", stca=stdd_fast.STCAConfig(shuffle="seeded", seed=9)))
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    info = load_model(path).checkpoint_info
    assert info.stca["shuffle"] == "seeded" and info.stca["seed"] == 9


def test_dtype_and_impl_arguments(source, tmp_path):
    path = save_checkpoint(source, tmp_path / "m.safetensors")
    model = load_model(path, dtype=torch.float64, stca=None)
    assert model.visual.proj.dtype == torch.float64 and model.stca is None


def _bad(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_truncated_files(source, tmp_path):
    for name, writer in WRITERS.items():
        good = tmp_path / f"good-{name}"
        writer(source, good)
        data = good.read_bytes()
        bad = _bad(tmp_path, f"cut-{name}", data[: len(data) // 2])
        with pytest.raises(CheckpointError) as e:
            load_model(bad)
        print(name, "->", e.value)
        assert str(bad) in str(e.value)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (b"not a checkpoint at all", "could not read"),
        (b"." + bytes(4095), "could not read"),  # pickle's STOP first: the unpickler raised IndexError
    ],
)
def test_garbage_files(tmp_path, data, fragment):
    path = _bad(tmp_path, "garbage.pt", data)
    with pytest.raises(CheckpointError, match=fragment):
        load_model(path)


def test_random_bytes_after_every_first_byte_give_a_checkpoint_error(tmp_path):
    """The first byte picks the unpickler's (or zip reader's) path: every one must end in a CheckpointError."""
    gen = torch.Generator().manual_seed(0)
    for first in range(256):
        tail = torch.randint(0, 256, (511,), generator=gen, dtype=torch.uint8).numpy().tobytes()
        path = _bad(tmp_path, f"garbage-{first}.pt", bytes([first]) + tail)
        with pytest.raises(CheckpointError, match=r"could not read|holds a") as e:
            load_model(path)
        assert str(path) in str(e.value)


def test_missing_file():
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model("/nonexistent/ViT-B-16.pt")


def test_wrong_architecture_lists_misshaped_keys(source, tmp_path):
    path = save_checkpoint(source, tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_model(path, arch="ViT-B-16")
    msg = str(e.value)
    print(msg)
    assert "does not fit architecture ViT-B-16" in msg and "mis-shaped" in msg
    assert "looks like architecture 'test-tiny'" in msg


def test_missing_and_unexpected_keys_are_listed(source, tmp_path):
    state = dict(source.state_dict())
    del state["visual.ln_post.weight"]
    state["visual.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        load_model(path, arch="test-tiny")
    msg = str(e.value)
    print(msg)
    assert "missing (1): ['visual.ln_post.weight']" in msg and "unexpected (1): ['visual.extra.weight']" in msg


def test_not_a_clip_checkpoint(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match="not a CLIP ViT checkpoint"):
        load_model(path)


class _Exploit:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_needing_code_is_refused_unless_trusted(source, tmp_path):
    path = tmp_path / "evil.pt"
    state = {**source.state_dict(), "payload": _Exploit()}
    buf = io.BytesIO()
    torch.save(state, buf, pickle_module=pickle)
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeCheckpointError) as e:
        load_model(path)
    print(e.value)
    assert "trust_pickle=True" in str(e.value)
    with pytest.raises(CheckpointError, match="non-tensor entries"):
        load_model(path, trust_pickle=True)


def test_load_model_applies_the_stca_config_a_checkpoint_records(tmp_path):
    stca = STCAConfig(shuffle="seeded", seed=5, temporal_scale=(1, 2, 3), channel_fold=16, mask_rate=0.25)
    source = randomize_(create_model("test-tiny", stca=stca), seed=2)
    path = save_checkpoint(source, tmp_path / "custom.safetensors")
    loaded = load_model(path)
    assert loaded.stca == stca and loaded.checkpoint_info.stca_overridden == {}
    frames = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_video(frames), source.encode_video(frames))
    override = load_model(path, stca=STCAConfig())  # an explicit config wins, and the difference is reported
    assert override.stca == STCAConfig()
    assert override.checkpoint_info.stca_overridden == {
        "channel_fold": [16, 32],
        "temporal_scale": [(1, 2, 3), (1, 2)],
        "mask_rate": [0.25, 0.5],
        "shuffle": ["seeded", "none"],
        "seed": [5, 0],
    }
    assert load_model(path, stca=None).stca is None


def test_load_model_leaves_the_callers_rng_alone(tmp_path):
    path = save_checkpoint(create_model("test-tiny"), tmp_path / "tiny.safetensors")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model(path)
    assert torch.equal(torch.rand(3), expected)
