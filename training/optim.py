"""What is trained and how: the frozen text tower, AdamW parameter groups (STDD-SPEC §3.7).

Trainable: the whole visual tower (``visual.*``), ``logit_scale`` and, with ``distill="paper"``,
the distillation projector (``projector_v.*``). The text tower is frozen (``requires_grad=False``):
the classifier is a fixed tensor built once from it, as released.

Weight decay follows the released ``ZERO_WD_1D_PARAM`` rule: parameters with ``ndim == 1`` or a name
ending in ``.bias`` get none; everything else gets ``weight_decay``, **including the 0-d
``logit_scale``** (the rule only checks ``len(shape) == 1``), which the released optimizer therefore
decays. We reproduce that. The released optimizer also holds the text tower, whose ``.grad`` stays
None so AdamW skips it; leaving it out is the same update.
"""

from __future__ import annotations

import torch
from torch import nn

from stdd_fast.text import TEXT_TOWER_PREFIXES

TRAINABLE_PREFIXES = ("visual.", "logit_scale", "projector_v.")


def is_trainable(name: str) -> bool:
    """Whether a parameter of the STDD model (with its projector) is fine-tuned."""
    return name.startswith(TRAINABLE_PREFIXES)


def freeze_for_training(model: nn.Module) -> None:
    """Set ``requires_grad``: visual tower, logit_scale and projector on; text tower (and anything else) off."""
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable(name))


def is_decayed(name: str, param: torch.Tensor) -> bool:
    """The released rule: no decay for 1-D parameters and biases; 0-d ``logit_scale`` IS decayed."""
    return not (param.ndim == 1 or name.endswith(".bias"))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups over the trainable parameters: ``[{"params", "names", "weight_decay"}, ...]``.

    Group 0 is decayed, group 1 is not. Frozen parameters (the text tower) are left out.
    Order follows ``named_parameters()``, so the optimizer state of a checkpoint maps back.
    """
    decay, no_decay = ([], []), ([], [])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(TEXT_TOWER_PREFIXES):  # guard against a caller that unfroze it by hand
            continue
        target = decay if is_decayed(name, p) else no_decay
        target[0].append(name)
        target[1].append(p)
    return [
        {"params": decay[1], "names": decay[0], "weight_decay": weight_decay},
        {"params": no_decay[1], "names": no_decay[0], "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (call :func:`freeze_for_training` first)."""
    groups = param_groups(model, weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
