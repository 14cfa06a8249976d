"""stdd-fast: a fast, deterministic, exportable inference engine for STDD zero-shot action recognition.

Names are imported on first use (PEP 562): ``import stdd_fast`` loads neither torch nor open_clip,
so the command line answers ``--help`` at once; ``stdd_fast.Engine`` and the rest load their
modules when first touched. The typed errors are plain Python and imported here.
"""

from __future__ import annotations

import importlib

from stdd_fast.errors import (
    BackendUnavailableError,
    CheckpointError,
    ClassifierError,
    ConfigError,
    NonFiniteError,
    OutputError,
    StddError,
    StreamError,
    UnsafeCheckpointError,
    VideoError,
)

__version__ = "0.1.0"

_LAZY = {
    "Engine": "stdd_fast.engine",
    "Predictor": "stdd_fast.predict.contract",
    "PredictorConfig": "stdd_fast.predict.config",
    "ClassSource": "stdd_fast.predict.config",
    "build_predictor": "stdd_fast.predict.build",
    "VideoLoader": "stdd_fast.video.loader",
    "SamplingConfig": "stdd_fast.video.config",
    "DecodeConfig": "stdd_fast.video.config",
    "StreamConfig": "stdd_fast.stream.config",
    "create_model": "stdd_fast.factory",
    "load_model": "stdd_fast.factory",
    "read_state_dict": "stdd_fast.checkpoints",
    "save_checkpoint": "stdd_fast.checkpoints",
    "Classifier": "stdd_fast.classifier",
    "build_classifier": "stdd_fast.classifier",
    "ArchConfig": "stdd_fast.config",
    "STCAConfig": "stdd_fast.config",
    "get_arch": "stdd_fast.config",
    "list_models": "stdd_fast.config",
    "STDDModel": "stdd_fast.model",
    "aggregate_views": "stdd_fast.head",
    "score": "stdd_fast.ops",
    "OPENVCLIP_TEMPLATES": "stdd_fast.prompts",
    "STDD_TEMPLATES": "stdd_fast.prompts",
    "Timings": "stdd_fast.results",
    "VideoResult": "stdd_fast.results",
    "WindowResult": "stdd_fast.results",
}
_SUBMODULES = ("video", "stream", "export", "training", "numerics")

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "ClassifierError",
    "ConfigError",
    "NonFiniteError",
    "OutputError",
    "StddError",
    "StreamError",
    "UnsafeCheckpointError",
    "VideoError",
    *sorted(_LAZY),
    "video",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'stdd_fast' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
