"""stdd-fast: a fast, deterministic, exportable inference engine for STDD zero-shot action recognition."""

from stdd_fast import video
from stdd_fast.checkpoints import load_model, read_state_dict, save_checkpoint
from stdd_fast.classifier import Classifier, build_classifier
from stdd_fast.config import ArchConfig, STCAConfig, get_arch, list_models
from stdd_fast.engine import Engine
from stdd_fast.errors import (
    BackendUnavailableError,
    CheckpointError,
    ClassifierError,
    ConfigError,
    StddError,
    StreamError,
    UnsafeCheckpointError,
    VideoError,
)
from stdd_fast.head import aggregate_views
from stdd_fast.model import STDDModel, create_model
from stdd_fast.ops import score
from stdd_fast.prompts import OPENVCLIP_TEMPLATES, STDD_TEMPLATES
from stdd_fast.results import Timings, VideoResult
from stdd_fast.stream import WindowResult

__version__ = "0.1.0"

__all__ = [
    "OPENVCLIP_TEMPLATES",
    "STDD_TEMPLATES",
    "ArchConfig",
    "BackendUnavailableError",
    "CheckpointError",
    "Classifier",
    "ClassifierError",
    "ConfigError",
    "Engine",
    "STCAConfig",
    "STDDModel",
    "StddError",
    "StreamError",
    "Timings",
    "UnsafeCheckpointError",
    "VideoError",
    "VideoResult",
    "WindowResult",
    "aggregate_views",
    "build_classifier",
    "create_model",
    "get_arch",
    "list_models",
    "load_model",
    "read_state_dict",
    "save_checkpoint",
    "score",
    "video",
]
