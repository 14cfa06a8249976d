"""stdd_fast.training: full fine-tuning with the STDD recipe and zero-shot evaluation.

Public entry points (imported on first use, so ``import stdd_fast.training`` stays cheap and
``import stdd_fast`` never imports this package):

* :func:`compute_loss` — cross-entropy on the STDD score + optional frozen-CLIP distillation;
* :class:`Recipe`, :func:`finetune`, :class:`Trainer` — the released fine-tuning recipe and loop
  (``python -m stdd_fast.training.train``; the function is not called ``train`` because the
  submodule of that name would shadow it);
* :class:`LRSchedule`, :func:`build_optimizer`, :func:`param_groups`, :func:`freeze_for_training`;
* :func:`export_average`, :func:`average_checkpoints` — SWA / Gaussian weight averaging;
* :func:`evaluate_splits` — zero-shot evaluation (``python -m stdd_fast.training.eval``);
* :func:`read_video_list`, :class:`TrainClips` — the official list format and train-time clips;
* :func:`write_synthetic_dataset` — a tiny synthetic dataset for smoke runs.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "compute_loss": "losses",
    "attach_projector": "losses",
    "detach_projector": "losses",
    "distillation_loss": "losses",
    "Projector": "losses",
    "Recipe": "recipe",
    "LRSchedule": "schedule",
    "build_optimizer": "optim",
    "param_groups": "optim",
    "freeze_for_training": "optim",
    "finetune": "trainer",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "export_average": "averaging",
    "average_checkpoints": "averaging",
    "evaluate_splits": "evaluate",
    "read_video_list": "data",
    "TrainClips": "data",
    "write_synthetic_dataset": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stdd_fast.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stdd_fast.training.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
