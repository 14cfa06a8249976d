"""The released recipe: LR schedule (STDD-SPEC §2 table), AdamW groups (§3.7), recipe files and overrides."""

import itertools
import json

import pytest
import torch
from helpers import randomize_, report

from stdd_fast import ConfigError, create_model
from stdd_fast.text import TEXT_TOWER_PREFIXES
from stdd_fast.training import LRSchedule, Recipe, attach_projector, build_optimizer, param_groups
from stdd_fast.training.optim import freeze_for_training

# STDD-SPEC §2: epoch -> lr of the released per-iteration schedule
SPEC_LR_TABLE = {
    0: 3.33e-8,
    0.5: 8.5748e-7,
    1: 1.68165e-6,
    2: 3.33e-6,
    7: 2.84721e-6,
    12: 1.68165e-6,
    17: 5.16091e-7,
    21: 5.35939e-8,
    22: 3.33e-8,
}


def test_lr_schedule_reproduces_the_spec_table():
    schedule = LRSchedule.from_recipe(Recipe())
    worst = max(abs(schedule(e) - lr) / lr for e, lr in SPEC_LR_TABLE.items())
    report("LR schedule vs SPEC §2 table (max rel err, table has 5-6 digits)", worst)
    assert worst < 1e-5


def test_lr_schedule_is_per_iteration_and_continuous():
    s = LRSchedule()
    steps = 1000
    lrs = [s(e + i / steps) for e in range(22) for i in range(steps)] + [s(22)]
    pairs = list(itertools.pairwise(lrs))
    assert all(a < b for a, b in pairs[: 2 * steps])  # warm-up rises
    assert all(a >= b for a, b in pairs[2 * steps :])  # cosine falls
    assert max(abs(a - b) for a, b in pairs) < 3.33e-6 / 500  # no jumps
    with pytest.raises(ConfigError, match="warmup_epochs"):
        LRSchedule(warmup_epochs=22, epochs=22)


def _trainable_model():
    model = randomize_(create_model("test-tiny"))
    freeze_for_training(model)
    attach_projector(model)
    return model


def test_adamw_parameter_groups_follow_the_released_rule():
    model = _trainable_model()
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    named = dict(model.named_parameters())
    # no decay: exactly the 1-D parameters and the biases
    assert all(named[n].ndim == 1 or n.endswith(".bias") for n in no_decay["names"])
    assert all(named[n].ndim != 1 and not n.endswith(".bias") for n in decay["names"])
    for n in ("visual.class_embedding", "visual.ln_pre.weight", "visual.transformer.resblocks.0.attn.in_proj_bias"):
        assert n in no_decay["names"]
    for n in ("visual.conv1.weight", "visual.proj", "visual.positional_embedding", "projector_v.0.weight"):
        assert n in decay["names"]
    # the 0-d logit_scale falls in the decayed group, as released (SPEC §3.7)
    assert "logit_scale" in decay["names"] and named["logit_scale"].ndim == 0
    # text tower frozen and absent; every trainable parameter in exactly one group
    grouped = decay["names"] + no_decay["names"]
    assert len(grouped) == len(set(grouped))
    assert not [n for n in grouped if n.startswith(TEXT_TOWER_PREFIXES)]
    assert all(not p.requires_grad for n, p in named.items() if n.startswith(TEXT_TOWER_PREFIXES))
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert set(grouped) == trainable
    assert trainable == {n for n in named if n.startswith(("visual.", "logit_scale", "projector_v."))}


def test_adamw_hyperparameters_and_logit_scale_decay():
    model = _trainable_model()
    opt = build_optimizer(model, lr=0.1)
    assert [g["betas"] for g in opt.param_groups] == [(0.9, 0.999)] * 2
    assert [g["eps"] for g in opt.param_groups] == [1e-8] * 2
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    text_before = model.token_embedding.weight.clone()
    scale = model.logit_scale.detach().clone()
    bias = model.visual.ln_post.bias.detach().clone()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only decoupled weight decay moves a parameter
    assert torch.equal(model.logit_scale.detach(), scale * (1 - 0.1 * 0.01))
    assert torch.equal(model.visual.ln_post.bias.detach(), bias)
    assert torch.equal(model.token_embedding.weight, text_before)


def test_recipe_defaults_are_the_released_values():
    r = Recipe()
    assert (r.epochs, r.batch_size, r.base_lr, r.warmup_start_lr, r.end_lr, r.warmup_epochs) == (
        22,
        32,
        3.33e-6,
        3.33e-8,
        3.33e-8,
        2.0,
    )
    assert (r.betas, r.eps, r.weight_decay, r.clip_grad_norm) == ((0.9, 0.999), 1e-8, 0.01, 1.0)
    assert (r.precision, r.distill, r.distill_ratio, r.seed) == ("fp16", "paper", 2.0, 0)
    assert (r.num_frames, r.sampling_rate, r.hflip) == (8, 16, True)
    assert (r.average, r.average_start, r.checkpoint_period) == ("swa", 2, 1)
    assert r.jitter_for(224) == (224, 256) and r.jitter_for(32) == (32, 37)
    assert r.stca_config().channel_fold == 32 and r.stca_config().temporal_scale == (1, 2)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_recipe_files_round_trip(tmp_path, suffix):
    r = Recipe(arch="test-tiny", stca={"mask_rate": 0.0}, betas=(0.8, 0.99), clip_grad_norm=None, epochs=3)
    path = r.save(tmp_path / f"recipe{suffix}")
    assert Recipe.load(path) == r


@pytest.mark.parametrize("content", [b"\xff\xfe\x00epochs: 3\n", b"[" * 5000, b"epochs: [3\n\t- x"])
def test_unreadable_recipe_files_give_a_config_error(tmp_path, content):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"recipe.yaml: not (valid YAML|UTF-8 text)") as e:
        Recipe.load(path)
    print(content[:12], "->", e.value)


def test_overrides_are_coerced_and_validated(tmp_path):
    (tmp_path / "r.yaml").write_text("arch: test-tiny\nbase_lr: 1e-4\nbetas: [0.8, 0.9]\n")
    r = Recipe.load(tmp_path / "r.yaml")
    assert r.base_lr == 1e-4 and r.betas == (0.8, 0.9)  # YAML reads '1e-4' as a string
    r = r.with_overrides(["epochs=4", "warmup_epochs=0.5", "hflip=false", "clip_grad_norm=none", "stca.mask_rate=0"])
    assert (r.epochs, r.warmup_epochs, r.hflip, r.clip_grad_norm) == (4, 0.5, False, None)
    assert r.stca_config().mask_rate == 0.0
    with pytest.raises(ConfigError, match="did you mean 'base_lr'"):
        r.with_overrides(["base_rl=1"])
    for override in ("base_lr=nan", "weight_decay=inf", "gwa_mu=-inf", "clip_grad_norm=inf"):
        with pytest.raises(ConfigError, match="expected a finite float"):
            r.with_overrides([override])
    with pytest.raises(ConfigError, match=r"Recipe\.betas='\[nan, 0\.9\]': expected tuple"):
        r.with_overrides(["betas=[nan, 0.9]"])
    with pytest.raises(ConfigError, match=r"target_fps=0\.0: must be > 0"):
        r.with_overrides(["target_fps=0"])
    with pytest.raises(ConfigError, match="'paper', 'none'"):
        r.with_overrides(["distill=nope"])
    with pytest.raises(ConfigError, match="expected int"):
        r.with_overrides(["epochs=two"])
    with pytest.raises(ConfigError, match="unknown STCA settings"):
        r.with_overrides(["stca.mask_ratio=0.5"])
    with pytest.raises(ConfigError, match="divisible"):
        r.with_overrides(["batch_size=6", "grad_accum=4"])


def test_train_cli_prints_the_resolved_recipe(capsys):
    from stdd_fast.training.train import main

    assert main(["arch=test-tiny", "base_lr=2e-5", "--print-recipe"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["base_lr"] == 2e-5 and printed["arch"] == "test-tiny" and printed["epochs"] == 22
