"""The flat keywords of the Engine, ``build_predictor`` and ``BatchConfig``, routed to the config object each
belongs to: one table, so a keyword means the same everywhere and an unknown one lists the valid ones.

    Engine(weights, classes, device="cuda", num_views=1, decode_workers=2)
    == Engine(weights, classes, predictor=PredictorConfig(device="cuda"), sampling=SamplingConfig(num_views=1),
              decode=DecodeConfig(workers=2))

Sections: ``predictor`` (:class:`~stdd_fast.predict.PredictorConfig`), ``classes``
(:class:`~stdd_fast.predict.ClassSource`), ``sampling`` (:class:`~stdd_fast.video.config.SamplingConfig`),
``decode`` (:class:`~stdd_fast.video.config.DecodeConfig`). Torch-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from stdd_fast.errors import ConfigError
from stdd_fast.predict.config import PREDICTOR_ALIASES, ClassSource, PredictorConfig
from stdd_fast.video.config import DecodeConfig, SamplingConfig

SECTIONS: dict[str, type] = {
    "predictor": PredictorConfig,
    "classes": ClassSource,
    "sampling": SamplingConfig,
    "decode": DecodeConfig,
}

# keyword -> (section, field): every field by its own name, and the names the flat API has used
ROUTES: dict[str, tuple[str, str]] = {
    **{f.name: ("predictor", f.name) for f in dataclasses.fields(PredictorConfig)},
    **{alias: ("predictor", name) for alias, name in PREDICTOR_ALIASES.items()},
    **{f.name: ("classes", f.name) for f in dataclasses.fields(ClassSource)},
    "num_frames": ("sampling", "num_frames"),
    "sampling_rate": ("sampling", "sampling_rate"),
    "target_fps": ("sampling", "target_fps"),
    "num_views": ("sampling", "num_views"),
    "sampling_mode": ("sampling", "mode"),
    "decode_backend": ("decode", "backend"),
    "decode_workers": ("decode", "workers"),
    "decode_threads": ("decode", "threads"),
    "decode_batch": ("decode", "dali_batch"),
    "frame_budget_mb": ("decode", "frame_budget_mb"),
    "decode_memory_mb": ("decode", "frame_budget_mb"),
}


@dataclass(frozen=True)
class Settings:
    """The config objects of one consumer."""

    predictor: PredictorConfig
    classes: ClassSource
    sampling: SamplingConfig
    decode: DecodeConfig


def route(options: dict[str, Any], sections: tuple[str, ...] = tuple(SECTIONS)) -> dict[str, dict[str, Any]]:
    """Flat keywords -> {section: {field: value}} for ``sections``; ConfigError naming an unknown keyword."""
    routed: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for keyword, value in options.items():
        section, name = ROUTES.get(keyword, (None, None))
        if section not in routed:
            valid = sorted(k for k, (s, _) in ROUTES.items() if s in sections)
            raise ConfigError(f"unknown keyword {keyword}={value!r}; valid: {', '.join(valid)}")
        if name in routed[section]:
            raise ConfigError(f"{keyword}= sets {section} {name} a second time (under another name): pass one")
        routed[section][name] = value
    return routed


def settings(options: dict[str, Any], defaults: dict[str, object] | None = None, **given: object) -> Settings:
    """The config objects: each section from its object in ``given`` (``predictor=PredictorConfig(...)``) or
    from its flat keywords in ``options`` over ``defaults`` (a config object per section), never both."""
    routed = route(options)
    made = {}
    for section, kind in SECTIONS.items():
        obj, fields = given.get(section), routed[section]
        if obj is not None and fields:
            raise ConfigError(
                f"pass {section}={kind.__name__}(...) or its fields as keywords ({', '.join(sorted(fields))}), not both"
            )
        if obj is not None and not isinstance(obj, kind):
            raise ConfigError(f"{section}= must be a {kind.__name__}; got {type(obj).__name__}")
        base = (defaults or {}).get(section) or kind()
        made[section] = obj if obj is not None else dataclasses.replace(base, **fields) if fields else base
    return Settings(**made)
