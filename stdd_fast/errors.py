"""Typed errors. Every message names the offending value and the fix."""

from __future__ import annotations


class StddError(Exception):
    """Base class of every error stdd_fast raises on purpose."""


class ConfigError(StddError, ValueError):
    """An invalid configuration value (unknown name, impossible combination)."""


class CheckpointError(StddError):
    """A checkpoint file that cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that needs arbitrary code to load and was not trusted explicitly."""


class ClassifierError(StddError):
    """A classifier artifact or label file that is missing, malformed or mismatched."""


class VideoError(StddError):
    """A video that cannot be opened, decoded or sampled."""


class NonFiniteError(StddError):
    """Scores or embeddings that came out NaN or Inf: that video or window has no result (never a NaN score)."""


class StreamError(VideoError):
    """A stream that failed or stalled and could not be reconnected, or that sent unusable frames."""


class OutputError(StddError, OSError):
    """An output that cannot be written where asked (no such folder, not a directory, no permission, disk full)."""


class ExportError(StddError):
    """An export or engine build that cannot be produced (or did not verify)."""


class GraphCheckError(ExportError):
    """An exported graph with an op TensorRT's ONNX parser rejects, a data-dependent shape or wrong I/O."""


class ParityError(ExportError):
    """An exported graph whose outputs do not match the torch reference within the tolerance table."""


class PlanMismatchError(ExportError):
    """A TensorRT plan built for another GPU or TensorRT version, or with a missing/foreign sidecar."""

    exit_code = 2  # the plan cannot be used here: a configuration error, not a failed job


class BackendUnavailableError(StddError, ImportError):
    """An optional backend (Triton, DALI, ONNX Runtime, TensorRT) that is not importable here."""


def choice_error(what: str, value: object, valid: tuple | list) -> ConfigError:
    """The standard error for a closed choice: names the value and lists the valid ones."""
    listed = ", ".join(repr(v) for v in valid)
    return ConfigError(f"unknown {what} {value!r}; valid values: {listed}")
