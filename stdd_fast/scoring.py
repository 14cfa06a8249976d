"""The classifier a predictor scores with, swappable while it runs.

A :class:`ClassifierSlot` holds one :class:`Head` (class names and fp32 weights on the device) and
replaces it in one assignment, so a call that took the head scores with it to the end while
:meth:`ClassifierSlot.set` installs another for the next call: no call ever mixes two classifiers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from stdd_fast import ops
from stdd_fast.classifier import Classifier
from stdd_fast.errors import ConfigError


@dataclass(frozen=True)
class Head:
    """One classifier as scored: its artifact, class names and weights [K, N, D] | [K, D] (fp32, on the device)."""

    classifier: Classifier | None = None
    classes: tuple[str, ...] | None = None
    weights: torch.Tensor | None = None

    def score(self, embeddings: torch.Tensor, logit_scale: torch.Tensor, impl: str) -> torch.Tensor | None:
        """Logits [B, K] of frame embeddings [B, T, D] (None without a classifier)."""
        if self.weights is None:
            return None
        return ops.score(embeddings, self.weights, logit_scale, impl=impl)


class ClassifierSlot:
    """The current :class:`Head` of a predictor; ``embed_dim`` / ``text_tower`` check every classifier set."""

    def __init__(self, device: torch.device, embed_dim: int, text_tower: str | None) -> None:
        self.device, self.embed_dim, self.text_tower = device, embed_dim, text_tower
        self.head = Head()
        self._lock = threading.Lock()

    def set(self, classifier: Classifier | None) -> None:
        """Score with ``classifier`` from the next call on (None: embeddings only)."""
        if classifier is not None:
            if not isinstance(classifier, Classifier):
                raise ConfigError(f"classifier must be a Classifier or None; got {type(classifier).__name__}")
            classifier.check_compatible(self.embed_dim, self.text_tower)
            head = Head(classifier, tuple(classifier.classes), classifier.weights.to(self.device, torch.float32))
        else:
            head = Head()
        with self._lock:
            self.head = head


class ScoresWithSlot:
    """The classifier side of a predictor that scores in PyTorch through ``self._slot`` (a ClassifierSlot)."""

    _slot: ClassifierSlot

    @property
    def classes(self) -> tuple[str, ...] | None:
        return self._slot.head.classes

    @property
    def classifier(self) -> Classifier | None:
        return self._slot.head.classifier

    def set_classifier(self, classifier: Classifier | None) -> None:
        """Score with ``classifier`` from the next call on (None: embeddings only); checked against the model."""
        self._slot.set(classifier)
