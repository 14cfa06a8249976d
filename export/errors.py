"""Typed errors of the export package (all are :class:`stdd_fast.errors.StddError`)."""

from __future__ import annotations

from stdd_fast.errors import ExportError

__all__ = ["ExportError", "GraphCheckError", "ParityError", "PlanMismatchError"]


class GraphCheckError(ExportError):
    """An exported graph with an op TensorRT's ONNX parser rejects, a data-dependent shape or wrong I/O."""


class ParityError(ExportError):
    """An exported graph whose outputs do not match the torch reference within the tolerance table."""


class PlanMismatchError(ExportError):
    """A TensorRT plan built for another GPU or TensorRT version, or with a missing/foreign sidecar."""

    exit_code = 2  # the plan cannot be used here: a configuration error, not a failed job
