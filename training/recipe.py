"""The training recipe: one frozen dataclass holding every knob, defaulting to the released values.

The defaults are the headline K400 fine-tuning of STDD-SPEC §2 (AdamW 0.9/0.999/1e-8, weight decay
0.01, per-iteration LR 3.33e-8 -> 3.33e-6 over a 2-epoch linear warm-up then cosine to 3.33e-8 at
epoch 22, 32 clips per optimizer step in total, fp16 autocast with a GradScaler, gradient clipping
1.0, seed 0, checkpoint every epoch, uniform weight averaging of epochs 2..22). A recipe file is JSON
or YAML with any subset of the fields; ``key=value`` overrides (dotted ``stca.mask_rate=0`` for the
STCA settings) are applied on top. Values are coerced to the field types and validated here, so a
typo fails before any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from stdd_fast.config import STCAConfig
from stdd_fast.errors import ConfigError, choice_error

Distill = Literal["paper", "none"]
DISTILLS: tuple[str, ...] = get_args(Distill)
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
Average = Literal["none", "swa", "gwa"]
AVERAGES: tuple[str, ...] = get_args(Average)
TextReduce = Literal["auto", "mean", "none"]
Impl = Literal["reference", "fused", "triton", "auto"]

# The released train jitter [224, 256] relative to its 224 crop; smaller test architectures scale it.
_JITTER_RATIO = 256 / 224


@dataclass(frozen=True)
class Recipe:
    """Everything a fine-tuning run needs. Defaults: the released K400 recipe (STDD-SPEC §2).

    Model: ``pretrained`` is a checkpoint path in any format :func:`stdd_fast.load_model` reads
    (OpenAI/open_clip CLIP, official STDD, ours); ``None`` builds ``arch`` with seeded random
    weights (smoke tests only). ``stca``: STCAConfig overrides (the headline values by default).
    ``impl``: the STCA path ("auto" = Triton on CUDA, else the fused PyTorch path).

    Data: ``train_csv`` rows ``relative/path,label`` under ``prefix``; ``classes`` an index->class
    JSON. The frozen text classifier is built once from the model's text tower: prompt level from
    ``xprompt`` (an official ``classes_xprompt_*.yml``) or ``askg`` (``classes_ASKG_*.yml``), else
    the 8 STDD templates (``text_reduce`` as in :func:`stdd_fast.build_classifier`); or loaded from a
    saved ``classifier`` artifact.
    ``jitter_scales``: the random short side range; None means (S, round(S*256/224)) for the
    model's image size S, i.e. the released (224, 256) at 224 and proportionally smaller for the
    tiny test architectures.

    Optimisation: ``batch_size`` is the *global* number of clips per optimizer step (released 32 =
    8 per GPU x 4); each process runs ``batch_size / (world_size * grad_accum)`` clips per forward.
    ``distill``: ``"paper"`` (frozen-CLIP distillation with gradients, ARCHITECTURE §4.8) or
    ``"none"`` (cross-entropy only, which is what the released code effectively trains).
    ``precision``: ``"fp16"`` (released: autocast + GradScaler), ``"bf16"`` (autocast, no scaler),
    ``"fp32"``.

    Output: a checkpoint every ``checkpoint_period`` epochs in ``output_dir``; ``average`` over the
    epoch checkpoints ``average_start..average_end`` (1-based epoch ids as in the released file
    names; None = the last) at the end: ``"swa"`` uniform, ``"gwa"`` Gaussian(``gwa_mu``,
    ``gwa_sigma``) weights.
    """

    # model
    arch: str | None = None
    pretrained: str | None = None
    init_seed: int = 0
    stca: dict = field(default_factory=dict)
    impl: Impl = "auto"
    # data
    train_csv: str = ""
    prefix: str = ""
    classes: str = ""
    xprompt: str | None = None
    askg: str | None = None
    classifier: str | None = None
    text_reduce: TextReduce = "auto"
    num_frames: int = 8
    sampling_rate: int = 16
    target_fps: float = 30.0
    jitter_scales: tuple[int, int] | None = None
    hflip: bool = True
    num_workers: int = 4
    # objective
    distill: Distill = "paper"
    distill_ratio: float = 2.0
    # optimisation
    epochs: int = 22
    batch_size: int = 32
    grad_accum: int = 1
    base_lr: float = 3.33e-6
    warmup_start_lr: float = 3.33e-8
    end_lr: float = 3.33e-8
    warmup_epochs: float = 2.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad_norm: float | None = 1.0
    precision: Precision = "fp16"
    seed: int = 0
    # output and run
    output_dir: str = "runs/stdd"
    checkpoint_period: int = 1
    average: Average = "swa"
    average_start: int = 2
    average_end: int | None = None
    gwa_mu: float = 15.0
    gwa_sigma: float = 10.0
    device: str | None = None
    log_every: int = 20

    def __post_init__(self) -> None:
        hints = _hints()
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        self.stca_config()  # validates the STCA overrides
        for name in ("num_frames", "sampling_rate", "epochs", "batch_size", "grad_accum", "checkpoint_period"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Recipe.{name}={getattr(self, name)!r}: must be >= 1")
        if self.log_every < 1:
            raise ConfigError(f"Recipe.log_every={self.log_every!r}: must be >= 1")
        if self.num_workers < 0:
            raise ConfigError(f"Recipe.num_workers={self.num_workers!r}: must be >= 0 (0 = load in the main process)")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"Recipe.batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum}; "
                "batch_size is the global clips per optimizer step"
            )
        for name in ("base_lr", "warmup_start_lr", "end_lr", "weight_decay", "eps", "distill_ratio"):
            if getattr(self, name) < 0:
                raise ConfigError(f"Recipe.{name}={getattr(self, name)!r}: must be >= 0")
        if self.target_fps <= 0:
            raise ConfigError(f"Recipe.target_fps={self.target_fps!r}: must be > 0 (frames per second)")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(
                f"Recipe.warmup_epochs={self.warmup_epochs!r}: must lie in [0, epochs={self.epochs}) "
                "(the cosine runs from the end of the warm-up to the last epoch)"
            )
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"Recipe.betas={self.betas!r}: both must lie in [0, 1)")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ConfigError(f"Recipe.clip_grad_norm={self.clip_grad_norm!r}: must be > 0, or None to disable")
        if self.jitter_scales is not None and not 1 <= self.jitter_scales[0] <= self.jitter_scales[1]:
            raise ConfigError(f"Recipe.jitter_scales={self.jitter_scales!r}: need 1 <= min <= max")
        if sum(v is not None for v in (self.xprompt, self.askg, self.classifier)) > 1:
            raise ConfigError(
                "Recipe: set xprompt= or askg= (build the classifier) or classifier= (load one), not more"
            )
        if self.gwa_sigma <= 0:
            raise ConfigError(f"Recipe.gwa_sigma={self.gwa_sigma!r}: must be > 0")
        if self.average_end is not None and self.average_end < self.average_start:
            raise ConfigError(
                f"Recipe.average_end={self.average_end} < average_start={self.average_start}: "
                "the averaged epoch range is empty"
            )

    # -- derived values ---------------------------------------------------------------------------

    def stca_config(self) -> STCAConfig:
        """The STCA settings: the headline STCAConfig() with ``stca`` overrides applied."""
        known = {f.name for f in dataclasses.fields(STCAConfig)}
        unknown = sorted(set(self.stca) - known)
        if unknown:
            raise ConfigError(f"Recipe.stca: unknown STCA settings {unknown}; valid: {sorted(known)}")
        return STCAConfig(**self.stca)

    def jitter_for(self, image_size: int) -> tuple[int, int]:
        """The random short-side range for a model of this input size (released: (224, 256) at 224)."""
        if self.jitter_scales is not None:
            lo, hi = self.jitter_scales
            if lo < image_size:
                raise ConfigError(
                    f"Recipe.jitter_scales={self.jitter_scales}: the short side must be at least the crop size "
                    f"{image_size}"
                )
            return lo, hi
        return image_size, round(image_size * _JITTER_RATIO)

    # -- (de)serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON-ready values (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        """A recipe from a mapping of field values (strings are coerced); unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"a recipe must be a mapping of field names to values; got {type(data).__name__}")
        _check_keys(data)
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a JSON or YAML recipe file (any subset of the fields; the rest keep their defaults)."""
        from stdd_fast import safe_yaml

        data = safe_yaml.load(path, "recipe", ConfigError)  # YAML is a superset of JSON
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of fields (key: value), not a {type(data).__name__}")
        try:
            return cls.from_dict(data or {})
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def save(self, path: str | Path) -> Path:
        """Write the recipe as JSON (``.json``) or YAML (any other suffix)."""
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        else:
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path

    def replace(self, **changes: object) -> Recipe:
        _check_keys(changes)
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: Sequence[str]) -> Recipe:
        """Apply ``key=value`` strings (``stca.key=value`` for STCA settings), e.g. ``base_lr=1e-5``."""
        changes: dict[str, object] = {}
        stca = dict(self.stca)
        for item in overrides:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"override {item!r}: expected key=value, e.g. base_lr=1e-5 or stca.mask_rate=0")
            if key.startswith("stca."):
                stca[key[len("stca.") :]] = _parse_scalar(value)
                changes["stca"] = stca
            else:
                changes[key] = value
        return self.replace(**changes)


# -- coercion ---------------------------------------------------------------------------------------


def _hints() -> dict[str, object]:
    return typing.get_type_hints(Recipe)


def _check_keys(data: dict) -> None:
    known = [f.name for f in dataclasses.fields(Recipe)]
    for key in data:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"unknown recipe field {key!r}{hint}; valid fields: {', '.join(known)}")


def _parse_scalar(text: str) -> object:
    """A YAML scalar or list from an override value ('0.0' -> 0.0, '[1,2]' -> [1, 2], 'true' -> True)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


_NONE_WORDS = ("none", "null", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _coerce(name: str, value: object, hint: object) -> object:
    """``value`` (a string from the command line, or a YAML/JSON value) as the field type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)
    if origin is Literal:
        if value not in args:
            raise choice_error(f"Recipe.{name}", value, args)
        return value
    try:
        if hint is bool:
            if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
                return value.strip().lower() in _TRUE_WORDS
            if isinstance(value, bool):
                return value
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool) or not math.isfinite(number := float(value)):
                raise ValueError
            return number
        if hint is str:
            if isinstance(value, os.PathLike):
                return os.fspath(value)
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if origin is tuple:
            items = _parse_scalar(value) if isinstance(value, str) else value
            if isinstance(items, str):
                items = [s for s in items.split(",") if s.strip()]
            if not isinstance(items, list | tuple) or len(items) != len(args):
                raise ValueError
            return tuple(_coerce(name, v, a) for v, a in zip(items, args, strict=True))
        if hint is dict or origin is dict:
            items = _parse_scalar(value) if isinstance(value, str) else value
            if not isinstance(items, dict):
                raise ValueError
            return dict(items)
    except (TypeError, ValueError):
        shown = "a finite float" if hint is float else getattr(hint, "__name__", str(hint))
        raise ConfigError(f"Recipe.{name}={value!r}: expected {shown}") from None
    raise ConfigError(f"Recipe.{name}: unsupported field type {hint}")  # a programming error, caught by tests
