"""The learning-rate schedule: per-iteration linear warm-up, then cosine (STDD-SPEC §2, ``lr_policy.py``).

With ``e`` the exact epoch (``epoch + step / steps_per_epoch``), base ``b``, warm-up start ``s``,
end ``z``, warm-up length ``w`` and ``E`` epochs::

    e <  w:  lr = s + e * (cos(w) - s) / w          # cos(w) = b: the cosine starts at its peak
    e >= w:  lr = cos(e) = z + (b - z) * (1 + cos(pi * (e - w) / (E - w))) / 2

The released values (b = 3.33e-6, s = z = 3.33e-8, w = 2, E = 22) give the table of SPEC §2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stdd_fast.errors import ConfigError


@dataclass(frozen=True)
class LRSchedule:
    """lr(epoch) for a float epoch position; call it with ``epoch + step / steps_per_epoch``."""

    base_lr: float = 3.33e-6
    warmup_start_lr: float = 3.33e-8
    end_lr: float = 3.33e-8
    warmup_epochs: float = 2.0
    epochs: int = 22

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"LRSchedule.warmup_epochs={self.warmup_epochs!r}: must lie in [0, epochs={self.epochs})")

    @classmethod
    def from_recipe(cls, recipe: object) -> LRSchedule:
        return cls(recipe.base_lr, recipe.warmup_start_lr, recipe.end_lr, recipe.warmup_epochs, recipe.epochs)

    def cosine(self, epoch: float) -> float:
        """The cosine part, counted from the end of the warm-up (``COSINE_AFTER_WARMUP``)."""
        w = self.warmup_epochs
        progress = (epoch - w) / (self.epochs - w)
        return self.end_lr + (self.base_lr - self.end_lr) * (math.cos(math.pi * progress) + 1.0) * 0.5

    def __call__(self, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            peak = self.cosine(self.warmup_epochs)
            return self.warmup_start_lr + epoch * (peak - self.warmup_start_lr) / self.warmup_epochs
        return self.cosine(epoch)
