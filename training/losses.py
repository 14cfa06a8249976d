"""The training objective: cross-entropy on the STDD score, plus optional frozen-CLIP distillation.

``distill="paper"`` (the default, ARCHITECTURE §4.8): with ê the unit frame embeddings of the STCA
model and r̂ those of a frozen copy of the initial CLIP (plain blocks, eval mode, no gradient),

    e'     = ê + 0.1 * projector_v(ê)
    L_dist = 1 - mean over the B*T frames of cos(e', r̂)
    loss   = CE(score(ê, W), y) + ratio * L_dist                       (ratio 2.0)

with gradients flowing into the encoder and the projector (FROSTER's form, which is what the paper
describes). The released code computes ``e'`` inside ``torch.no_grad()``, so there its term is a
constant and STDD effectively trains with cross-entropy alone (STDD-SPEC §3.6): that behaviour is
``distill="none"``.

The projector (SPEC §3.1) is ``Linear(D, D, bias=False) - GELU - Linear(D, D, bias=False)``, layer 0
Kaiming-normal, layer 2 zero: e' = ê at the start, so the term begins as plain feature distillation
and the projector learns how far the fine-tuned features may drift from CLIP's. It lives on the
model as the submodule ``projector_v`` (:func:`attach_projector`), so DDP, the optimizer and
gradient clipping see it; training checkpoints store it apart from the CLIP weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stdd_fast.classifier import Classifier
from stdd_fast.errors import ConfigError, choice_error
from stdd_fast.ops import score
from stdd_fast.training.recipe import DISTILLS

PROJECTOR_ATTR = "projector_v"
PROJECTOR_MIX = 0.1  # e' = ê + 0.1 * projector(ê), as released


class Projector(nn.Sequential):
    """The distillation projector: Linear(D, D, no bias) - GELU - Linear(D, D, no bias); [..., D] -> [..., D]."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        with torch.random.fork_rng(devices=[]):  # nn.Linear's default init would draw from the global RNG
            super().__init__(nn.Linear(dim, dim, bias=False), nn.GELU(), nn.Linear(dim, dim, bias=False))
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int = 0) -> None:
        """Layer 0 Kaiming normal, layer 2 zero, drawn from a private generator.

        A private generator keeps the global torch RNG untouched: train-mode STCA draws its masks
        from it in the released order, which must not depend on when the projector was built.
        """
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w = self[0].weight
            # kaiming_normal_ defaults: fan_in, gain sqrt(2) -> std = sqrt(2 / fan_in)
            w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / w.shape[1]) ** 0.5)
            self[2].weight.zero_()


def attach_projector(model: nn.Module, seed: int = 0) -> Projector:
    """The model's distillation projector, created (on the model's device) if it has none yet."""
    existing = getattr(model, PROJECTOR_ATTR, None)
    if existing is not None:
        return existing
    ref = model.logit_scale
    projector = Projector(model.arch.embed_dim, seed).to(device=ref.device, dtype=ref.dtype)
    projector.train(model.training)
    model.add_module(PROJECTOR_ATTR, projector)
    return projector


def detach_projector(model: nn.Module) -> Projector | None:
    """Remove and return the projector (e.g. before :func:`stdd_fast.save_checkpoint`)."""
    projector = getattr(model, PROJECTOR_ATTR, None)
    if projector is not None:
        delattr(model, PROJECTOR_ATTR)
    return projector


def _weights_of(classifier: Classifier | torch.Tensor, device: torch.device) -> torch.Tensor:
    w = classifier.weights if isinstance(classifier, Classifier) else classifier
    if not isinstance(w, torch.Tensor) or w.ndim not in (2, 3):
        raise ConfigError(
            f"classifier must be a Classifier or a weight tensor [K, N, D] / [K, D]; got {type(classifier).__name__}"
        )
    return w.to(device=device, dtype=torch.float32)


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-sample values [B]; with weights, sum(w * v) / max(sum(w), tiny)."""
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    projector: nn.Module,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``1 - mean cos(ê + 0.1 * projector(ê), r̂)`` over frames.

    student: unit frame embeddings ê [B, T, D] (with gradient); teacher: frozen-CLIP r̂ [B, T, D].
    sample_weight: optional [B] (0 drops a clip). Returns a 0-d float32 tensor.
    """
    mixed = student + PROJECTOR_MIX * projector(student).to(student.dtype)  # e' [B, T, D]
    cos = F.cosine_similarity(mixed.float(), teacher.float(), dim=-1)  # [B, T]
    return 1.0 - _weighted_mean(cos.mean(dim=1), sample_weight)


def compute_loss(
    model: nn.Module,
    clips: torch.Tensor,
    labels: torch.Tensor,
    classifier: Classifier | torch.Tensor,
    distill: str = "paper",
    raw_model: nn.Module | None = None,
    ratio: float = 2.0,
    projector: nn.Module | None = None,
    sample_weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The STDD training loss of one batch.

    model: an :class:`~stdd_fast.STDDModel` (put it in ``.train()`` mode for the released train-time
    STCA masks; its ``impl`` picks the STCA and scoring paths). clips: CLIP-normalised float
    [B, T, 3, H, W]. labels: LongTensor [B]. classifier: the frozen text classifier (a Classifier
    or its weights [K, N, D] / [K, D]). ``distill``: ``"paper"`` or ``"none"`` (module docstring).
    raw_model: the frozen initial CLIP (``stca=None``; needed for ``"paper"``; run in eval mode
    under no_grad). projector: default the model's ``projector_v``, attached with
    :func:`attach_projector` (seed 0) on first use. sample_weight: optional [B] weights (0 drops a
    clip, e.g. an unreadable video).

    Returns ``{"loss", "ce", "distill", "logits"}``: 0-d float32 losses (``loss`` carries the
    gradient; ``distill`` is 0 for ``"none"``) and the detached logits [B, K].
    """
    if distill not in DISTILLS:
        raise choice_error("distill", distill, DISTILLS)
    if clips.ndim != 5:
        raise ConfigError(f"clips must be [B, T, 3, H, W]; got shape {tuple(clips.shape)}")
    if labels.shape != clips.shape[:1]:
        raise ConfigError(f"labels must be [B] = [{clips.shape[0]}]; got shape {tuple(labels.shape)}")
    emb = model.encode_video(clips)  # ê [B, T, D], float32, unit norm
    weights = _weights_of(classifier, emb.device)
    logits = score(emb, weights, model.logit_scale, impl=model.impl)  # [B, K]
    ce = _weighted_mean(F.cross_entropy(logits.float(), labels, reduction="none"), sample_weight)
    if distill == "none":
        zero = ce.new_zeros(())
        return {"loss": ce, "ce": ce.detach(), "distill": zero, "logits": logits.detach()}
    if raw_model is None:
        raise ConfigError(
            "distill='paper' needs raw_model=: a frozen copy of the initial CLIP, e.g. "
            "stdd_fast.load_model(path, stca=None) or create_model(arch, stca=None, ...); or pass distill='none'"
        )
    if projector is None:
        projector = attach_projector(model)
    with torch.no_grad():
        raw_model.eval()  # forced on every call, as released: the teacher never runs in train mode
        teacher = raw_model.encode_video(clips)  # r̂ [B, T, D], unit norm
    dist = distillation_loss(emb, teacher, projector, sample_weight)
    loss = ce + ratio * dist
    return {"loss": loss, "ce": ce.detach(), "distill": dist.detach(), "logits": logits.detach()}
