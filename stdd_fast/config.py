"""Configuration: the STCA settings and the named CLIP architectures.

Both are frozen dataclasses validated at construction, so a typo or an impossible value fails where
it is written, with the valid choices in the message.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from stdd_fast.choices import SHUFFLE_MODES, ShuffleMode
from stdd_fast.errors import ConfigError, choice_error


@dataclass(frozen=True)
class STCAConfig:
    """Space-time Cross Attention settings (STDD-SPEC §1, §2: the headline values are the defaults).

    ``shuffle`` governs the eval-time frame permutation of the window schedule:

    * ``"none"`` (default): frame ``t`` uses mask row ``t mod w``; deterministic.
    * ``"seeded"``: one permutation per layer, drawn once from ``torch.Generator().manual_seed(seed)``;
      deterministic, independent of batch composition, baked into exports.
    * ``"official"``: the released behaviour, a fresh permutation per video and per layer drawn from
      the global torch RNG in the released order (for parity with the released code only).

    Training mode always follows the released train-time schedule (random offset, then random
    permutation, from the global torch RNG), whatever ``shuffle`` says.
    """

    channel_fold: int = 32
    temporal_scale: tuple[int, ...] = (1, 2)
    mask_rate: float = 0.5
    mask_stride: tuple[int, int, int] = (1, 2, 2)
    spatial_repeat: bool = True
    shuffle: ShuffleMode = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "temporal_scale", tuple(self.temporal_scale))
        object.__setattr__(self, "mask_stride", tuple(self.mask_stride))
        if self.shuffle not in SHUFFLE_MODES:
            raise choice_error("STCAConfig.shuffle", self.shuffle, SHUFFLE_MODES)
        if not isinstance(self.channel_fold, int) or self.channel_fold < 2:
            raise ConfigError(f"STCAConfig.channel_fold={self.channel_fold!r}: must be an int >= 2")
        scales = self.temporal_scale
        if not scales or not all(isinstance(s, int) and s >= 1 for s in scales):
            raise ConfigError(
                f"STCAConfig.temporal_scale={scales!r}: must be a non-empty tuple of ints >= 1, e.g. (1, 2)"
            )
        stride = self.mask_stride
        if len(stride) != 3 or not all(isinstance(s, int) and s >= 1 for s in stride):
            raise ConfigError(f"STCAConfig.mask_stride={stride!r}: must be three ints >= 1, e.g. (1, 2, 2)")
        if stride[0] != 1:
            raise ConfigError(
                f"STCAConfig.mask_stride={stride!r}: the temporal stride must be 1 "
                "(the released code only supports s0 = 1, STDD-SPEC §1.2)"
            )
        w = self.window_size
        masked = self.mask_rate * w
        if not (0.0 <= self.mask_rate < 1.0) or not math.isclose(masked, round(masked), abs_tol=1e-9):
            raise ConfigError(
                f"STCAConfig.mask_rate={self.mask_rate!r}: must lie in [0, 1) and give a whole number of "
                f"masked positions per {w}-position window (mask_rate * {w} is {masked:g}); "
                f"valid rates here: {', '.join(f'{k / w:g}' for k in range(w))}"
            )
        if not isinstance(self.spatial_repeat, bool):
            raise ConfigError(f"STCAConfig.spatial_repeat={self.spatial_repeat!r}: must be a bool")
        if not isinstance(self.seed, int):
            raise ConfigError(f"STCAConfig.seed={self.seed!r}: must be an int")

    @property
    def window_size(self) -> int:
        """Positions per window, w = s0 * s1 * s2."""
        return self.mask_stride[0] * self.mask_stride[1] * self.mask_stride[2]

    @property
    def masked_per_window(self) -> int:
        """Masked positions per window, m (2 for the headline config)."""
        return round(self.mask_rate * self.window_size)

    def replace(self, **changes: object) -> STCAConfig:
        return dataclasses.replace(self, **changes)

    def check_fits(self, width: int, grid: tuple[int, int], arch_name: str = "") -> None:
        """Raise ConfigError if this config cannot run on a ``width``-channel ViT with this patch grid."""
        where = f" for {arch_name}" if arch_name else ""
        _, s1, s2 = self.mask_stride
        gh, gw = grid
        if gh % s1 or gw % s2:
            fits = sorted(
                {(1, a, b) for a in range(1, gh + 1) for b in range(1, gw + 1) if gh % a == 0 and gw % b == 0}
            )
            raise ConfigError(
                f"STCA mask_stride={self.mask_stride}{where} does not tile its {gh}x{gw} patch grid; "
                f"choose a stride whose spatial parts divide the grid (e.g. {fits[1:4]}) "
                "or build the model with stca=None (plain CLIP)"
            )
        c0 = width // self.channel_fold
        narrowest = c0 // 2 ** (max(self.temporal_scale) - 1)
        if narrowest < 1:
            raise ConfigError(
                f"STCA channel_fold={self.channel_fold} with temporal_scale={self.temporal_scale}{where} "
                f"(width {width}) shifts zero channels at the largest scale; lower channel_fold or the scale"
            )


@dataclass(frozen=True)
class ArchConfig:
    """A CLIP ViT architecture in the OpenAI layout (QuickGELU, class token, learnable positions)."""

    name: str
    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_heads: int
    text_layers: int
    context_length: int = 77
    vocab_size: int = 49408
    quick_gelu: bool = True

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return (side, side)

    @property
    def tokens_per_frame(self) -> int:
        gh, gw = self.grid
        return gh * gw + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ArchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown architecture fields {sorted(unknown)}; valid fields: {sorted(known)}")
        return cls(**d)


_ARCHS: dict[str, ArchConfig] = {
    a.name: a
    for a in (
        ArchConfig("ViT-B-16", 512, 224, 16, 768, 12, 12, 512, 8, 12),
        ArchConfig("ViT-B-32", 512, 224, 32, 768, 12, 12, 512, 8, 12),
        ArchConfig("ViT-L-14", 768, 224, 14, 1024, 24, 16, 768, 12, 12),
        # For tests and smoke runs: 8x8 patch grid, 64 channels; real tokenizer vocabulary.
        ArchConfig("test-tiny", 32, 32, 4, 64, 2, 4, 32, 2, 2),
    )
}


def list_models() -> list[str]:
    """Names of the built-in architectures."""
    return sorted(_ARCHS)


def get_arch(name: str | ArchConfig) -> ArchConfig:
    """The named architecture (an ArchConfig passes through)."""
    if isinstance(name, ArchConfig):
        return name
    try:
        return _ARCHS[name]
    except KeyError:
        raise choice_error("architecture", name, list_models()) from None
