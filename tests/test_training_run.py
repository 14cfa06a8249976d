"""A tiny fine-tuning run on synthetic clips: overfits, resumes exactly, averages into a loadable checkpoint."""

import math

import pytest
import torch
from helpers import report
from training_fixtures import tiny_checkpoint, tiny_dataset, tiny_recipe

import stdd_fast
from stdd_fast.checkpoints import read_state_dict
from stdd_fast.numerics import EXACT_MAX_REL, max_rel_err
from stdd_fast.training import export_average, finetune
from stdd_fast.training.averaging import epoch_checkpoints, gaussian_weights
from stdd_fast.training.data import StepSampler, TrainClips, read_video_list
from stdd_fast.training.evaluate import evaluate_splits
from stdd_fast.training.trainer import read_training_checkpoint

EPOCHS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    ds = tiny_dataset(root / "data")  # 8 clips, 4 classes separable by colour
    ckpt = tiny_checkpoint(root / "init.safetensors")
    recipe = tiny_recipe(ds, ckpt, root / "run", epochs=EPOCHS)
    return root, ds, ckpt, recipe, finetune(recipe)


def test_tiny_run_overfits_eight_clips(setup):
    _, ds, _, _, result = setup
    last = result.history[-1]
    print(f"[measured] final epoch: loss {last['loss']:.4f}, ce {last['ce']:.4f}, train acc {last['train_acc']:.3f}")
    assert len(result.history) == EPOCHS and last["clips"] == 8 and last["skipped"] == 0
    assert last["train_acc"] == 1.0  # train-mode masks and augmentation
    assert last["loss"] < result.history[0]["loss"]
    assert [s["global_step"] for s in result.steps] == list(range(1, 2 * EPOCHS + 1))
    # and the official eval protocol on the same clips agrees
    model = stdd_fast.load_model(result.last_checkpoint)
    rep = evaluate_splits(model, [ds.csv], [ds.classes], prefix=ds.prefix, num_views=3, num_frames=4)
    assert rep["splits"][0]["top1"] == 100.0


def test_epoch_checkpoints_load_with_load_model(setup):
    _, _, _, _, result = setup
    assert [p.name for p in result.checkpoints] == [f"checkpoint_epoch_{e:05d}.pt" for e in range(1, EPOCHS + 1)]
    model = stdd_fast.load_model(result.checkpoints[2])
    assert model.checkpoint_info.format == "stdd_fast" and model.checkpoint_info.epoch == 3
    assert not any(k.startswith("projector_v") for k in model.state_dict())
    state = read_training_checkpoint(result.checkpoints[2])["training"]
    assert {"optimizer", "scaler", "rng", "projector", "global_step", "recipe"} <= set(state)
    assert state["global_step"] == 6


def test_resume_from_mid_run_checkpoint_reaches_the_same_weights(setup):
    root, _, _, recipe, result = setup
    resumed = finetune(recipe.replace(output_dir=str(root / "resumed")), resume=result.checkpoints[2])
    assert [h["epoch"] for h in resumed.history] == list(range(1, EPOCHS + 1))
    full = torch.load(result.last_checkpoint, weights_only=True)
    again = torch.load(resumed.last_checkpoint, weights_only=True)
    worst = max((full["model"][k] - again["model"][k]).abs().max().item() for k in full["model"])
    proj = full["training"]["projector"]
    worst_proj = max((proj[k] - again["training"]["projector"][k]).abs().max().item() for k in proj)
    report("resumed vs uninterrupted final weights (max abs diff; bitwise expected)", max(worst, worst_proj))
    assert worst == 0.0 and worst_proj == 0.0
    assert resumed.steps[0]["global_step"] == 7 and resumed.steps[0]["loss"] == result.steps[6]["loss"]


def test_swa_export_is_the_uniform_mean_and_loads(setup):
    root, _, _, _, result = setup
    assert result.average is not None and result.average.name == f"swa_1_{EPOCHS}.safetensors"
    model = stdd_fast.load_model(result.average)
    assert model.checkpoint_info.format == "stdd_fast"
    states = [read_state_dict(p)[0] for p in result.checkpoints]
    name = "visual.transformer.resblocks.1.attn.in_proj_weight"
    mean = torch.stack([s[name] for s in states]).double().mean(0)
    err = report("SWA vs hand-computed mean", max_rel_err(model.state_dict()[name], mean))
    assert err <= EXACT_MAX_REL
    # Gaussian weights (released gwa: mu 15, sigma 10) over ids 2..6 of the same run
    out = export_average(root / "run", root / "gwa.safetensors", method="gwa", start=2, end=EPOCHS)
    weights = gaussian_weights(range(2, EPOCHS + 1), 15, 10)
    assert math.isclose(sum(weights), 1.0) and weights == sorted(weights)  # rising towards mu
    gwa = stdd_fast.load_model(out).state_dict()[name]
    expected = sum(w * s[name].double() for w, s in zip(weights, states[1:], strict=True))
    assert report("GWA vs hand-computed weighted mean", max_rel_err(gwa, expected)) <= EXACT_MAX_REL
    assert sorted(epoch_checkpoints(root / "run")) == list(range(1, EPOCHS + 1))


def test_unreadable_videos_are_skipped_and_counted(tmp_path):
    ds = tiny_dataset(tmp_path / "data", broken=2)  # 8 good + 2 corrupt rows
    ckpt = tiny_checkpoint(tmp_path / "init.safetensors")
    # batch 5 x 2 steps covers all 10 rows each epoch; one loader worker exercises the worker path
    recipe = tiny_recipe(ds, ckpt, tmp_path / "run", epochs=2, batch_size=5, num_workers=1, average="none")
    result = finetune(recipe)
    for h in result.history:
        assert (h["skipped"], h["clips"]) == (2, 8) and math.isfinite(h["loss"])
        assert len(h["skipped_videos"]) == 2 and all("broken" in e for e in h["skipped_videos"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu(tmp_path, precision):
    ds = tiny_dataset(tmp_path / "data", num_classes=2, per_class=2)
    ckpt = tiny_checkpoint(tmp_path / "init.safetensors")
    recipe = tiny_recipe(ds, ckpt, tmp_path / "run", epochs=2, precision=precision, average="none", grad_accum=2)
    result = finetune(recipe)
    assert all(math.isfinite(h["loss"]) for h in result.history)
    scaler = read_training_checkpoint(result.last_checkpoint)["training"]["scaler"]
    assert bool(scaler) == (precision == "fp16")  # a GradScaler only for fp16


def test_train_clip_sampling_is_a_function_of_seed_epoch_and_index(setup):
    _, ds, _, _, _ = setup
    items = read_video_list(ds.csv, ds.prefix, 4)
    clips = TrainClips(items, 32, num_frames=4, jitter=(32, 37), seed=0)
    a, b = clips[(3, 1)], clips[(3, 1)]
    assert torch.equal(a["clip"], b["clip"]) and a["valid"] and a["clip"].shape == (4, 3, 32, 32)
    assert not torch.equal(clips[(3, 2)]["clip"], a["clip"])  # another epoch, another draw
    # the union of one step's micro-batches is the same for any split over processes / accumulation
    single = list(StepSampler(8, 4, world_size=1, grad_accum=2, seed=5))
    shards = [list(StepSampler(8, 4, world_size=2, rank=r, seed=5)) for r in range(2)]
    for step in range(2):
        assert sorted(single[4 * step : 4 * step + 4]) == sorted(
            shards[0][2 * step : 2 * step + 2] + shards[1][2 * step : 2 * step + 2]
        )
