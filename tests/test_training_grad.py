"""compute_loss: reference, fused (and Triton) paths give the same loss and parameter gradients.

Train mode with the released RNG order: ``torch.manual_seed`` is reset before each path, so every
path draws the same train-time STCA masks. Tolerance: the fp32 row of the table (max rel err 1e-5).
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_, report

from stdd_fast import ConfigError, create_model
from stdd_fast.numerics import FP32_MAX_REL, max_rel_err
from stdd_fast.ops import resolve_impl
from stdd_fast.training import attach_projector, compute_loss
from stdd_fast.training.optim import freeze_for_training


def _triton_runs() -> bool:
    try:
        resolve_impl("triton", torch.device("cpu"))
    except Exception:
        return False
    return True


OTHER_IMPLS = ["fused"] + (["triton"] if _triton_runs() else [])


def _setup(seed: int = 3):
    model = randomize_(create_model("test-tiny"), seed=seed).train()
    raw = create_model("test-tiny", stca=None)
    raw.load_state_dict(model.state_dict())
    raw.requires_grad_(False)
    freeze_for_training(model)
    projector = attach_projector(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-zero layer 2, so layer 0 receives a gradient too
        for p in projector.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    clips = torch.randn(2, 4, 3, 32, 32, generator=gen)
    labels = torch.tensor([1, 3])
    weights = F.normalize(torch.randn(5, 6, 32, generator=gen), dim=-1)  # prompt-level [K, N, D]
    return model, raw, clips, labels, weights


def _loss_and_grads(model, raw, clips, labels, weights, impl, distill):
    model.set_impl(impl)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same train-time masks for every path
    out = compute_loss(model, clips, labels, weights, distill=distill, raw_model=raw)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("distill", ["none", "paper"])
@pytest.mark.parametrize("impl", OTHER_IMPLS)
def test_paths_give_same_loss_and_gradients(impl, distill):
    model, raw, clips, labels, weights = _setup()
    ref, ref_grads = _loss_and_grads(model, raw, clips, labels, weights, "reference", distill)
    out, grads = _loss_and_grads(model, raw, clips, labels, weights, impl, distill)
    assert grads.keys() == ref_grads.keys()
    assert all(n.startswith(("visual.", "logit_scale", "projector_v.")) for n in grads)
    assert ("projector_v.0.weight" in grads) == (distill == "paper")
    for key in ("loss", "ce", "distill"):
        err = report(f"{impl} vs reference {key} (distill={distill})", max_rel_err(out[key], ref[key]))
        assert err <= FP32_MAX_REL
    worst_name, worst = max(((n, max_rel_err(grads[n], g)) for n, g in ref_grads.items()), key=lambda t: t[1])
    report(f"{impl} vs reference parameter gradients, worst tensor {worst_name} (distill={distill})", worst)
    assert worst <= FP32_MAX_REL
    assert len(grads) > 20


def test_paper_distillation_sends_gradient_into_encoder_and_projector():
    model, raw, clips, labels, weights = _setup()
    none, g_none = _loss_and_grads(model, raw, clips, labels, weights, "fused", "none")
    paper, g_paper = _loss_and_grads(model, raw, clips, labels, weights, "fused", "paper")
    assert torch.equal(none["ce"], paper["ce"])
    assert float(paper["distill"]) > 0 and float(none["distill"]) == 0
    assert torch.allclose(paper["loss"], paper["ce"] + 2.0 * paper["distill"])
    assert g_paper["projector_v.0.weight"].abs().sum() > 0 and g_paper["projector_v.2.weight"].abs().sum() > 0
    # the distillation term moves the encoder's gradient (the released no-grad version would not)
    assert not torch.allclose(g_paper["visual.conv1.weight"], g_none["visual.conv1.weight"])
    assert all(p.grad is None for p in raw.parameters())


def test_released_projector_init_makes_the_term_plain_feature_distillation():
    model, raw, clips, labels, weights = _setup()
    del model.projector_v
    before = torch.get_rng_state()
    projector = attach_projector(model)  # attached lazily by compute_loss too
    assert torch.equal(torch.get_rng_state(), before), "building the projector must not draw from the global RNG"
    assert projector[2].weight.abs().sum() == 0 and projector[0].weight.std() > 0
    assert not any(m.bias is not None for m in (projector[0], projector[2]))
    with torch.no_grad():
        model.eval()
        out = compute_loss(model, clips, labels, weights, distill="paper", raw_model=raw)
    # zero layer 2: e' = ê, so L_dist = 1 - mean cos(ê, r̂) (STCA student in eval mode, plain-CLIP teacher)
    emb, teacher = model.encode_video(clips), raw.encode_video(clips)
    expected = 1 - F.cosine_similarity(emb, teacher, dim=-1).mean()
    assert report("distill term vs 1 - mean cos", max_rel_err(out["distill"], expected)) <= FP32_MAX_REL


def test_compute_loss_validates_its_choices():
    model, _, clips, labels, weights = _setup()
    with pytest.raises(ConfigError, match="'paper', 'none'"):
        compute_loss(model, clips, labels, weights, distill="frozen")
    with pytest.raises(ConfigError, match="raw_model"):
        compute_loss(model, clips, labels, weights, distill="paper")
    with pytest.raises(ConfigError, match="labels"):
        compute_loss(model, clips, labels[:1], weights, distill="none")


def test_sample_weight_zero_drops_a_clip():
    model, raw, clips, labels, weights = _setup()
    model.set_impl("fused").eval()
    with torch.no_grad():
        both = compute_loss(model, clips, labels, weights, "paper", raw, sample_weight=torch.tensor([1.0, 0.0]))
        first = compute_loss(model, clips[:1], labels[:1], weights, "paper", raw)
    assert report("weighted loss vs loss of the kept clip", max_rel_err(both["loss"], first["loss"])) <= FP32_MAX_REL
