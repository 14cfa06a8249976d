"""The classifier a predictor scores with in PyTorch, swappable while it runs, and the predict loop around it.

A :class:`ClassifierSlot` holds one :class:`Head` (class names and fp32 weights on the device) and
replaces it in one assignment, so a call that took the head scores with it to the end while
:meth:`ClassifierSlot.set` installs another for the next call: no call ever mixes two classifiers.
:class:`ScoredInTorch` is every predictor whose encoder output is scored here (the torch backend and
the ONNX Runtime encoder): encode in chunks, then score the whole call with the head it started with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from stdd_fast import ops
from stdd_fast.classifier import Classifier
from stdd_fast.decisions import Decider, check_calibrated_for
from stdd_fast.errors import ClassifierError, ConfigError
from stdd_fast.predict.contract import Prediction, PredictorBase, check_clips


@dataclass(frozen=True)
class Head:
    """One classifier as scored: its artifact, class names and weights [K, N, D] | [K, D] (fp32, on the device),
    and its decisions (:mod:`stdd_fast.decisions`; None when it carries none)."""

    classifier: Classifier | None = None
    classes: tuple[str, ...] | None = None
    weights: torch.Tensor | None = None
    decider: Decider | None = None

    def score(self, embeddings: torch.Tensor, logit_scale: torch.Tensor, impl: str) -> torch.Tensor | None:
        """Logits [B, K] of frame embeddings [B, T, D] (None without a classifier)."""
        if self.weights is None:
            return None
        return ops.score(embeddings, self.weights, logit_scale, impl=impl)


class ClassifierSlot:
    """The current :class:`Head` of a predictor. ``embed_dim`` / ``text_tower`` check every classifier set;
    ``logit_scale`` (log tau) is what its decisions scale scores by; ``visual`` (the model's
    :meth:`~stdd_fast.model.STDDModel.visual_fingerprint`) checks that calibrated thresholds were measured
    with this model."""

    def __init__(
        self,
        device: torch.device,
        embed_dim: int,
        text_tower: str | None,
        logit_scale: torch.Tensor | float,
        visual: str | None = None,
    ) -> None:
        self.device, self.embed_dim, self.text_tower = device, embed_dim, text_tower
        self.logit_scale, self.visual = logit_scale, visual
        self.head = Head()
        self._lock = threading.Lock()

    def set(self, classifier: Classifier | None) -> None:
        """Score with ``classifier`` from the next call on (None: embeddings only)."""
        if classifier is not None:
            if not isinstance(classifier, Classifier):
                raise ConfigError(f"classifier must be a Classifier or None; got {type(classifier).__name__}")
            if classifier.num_classes == 0:  # every score would be empty: a run without labels, never an error
                raise ClassifierError("the classifier has 0 classes: build one with classes (stdd build-classifier)")
            classifier.check_compatible(self.embed_dim, self.text_tower)
            check_calibrated_for(classifier, self.visual)
            weights = classifier.weights.to(self.device, torch.float32)
            head = Head(classifier, tuple(classifier.classes), weights, classifier.decider(self.logit_scale))
        else:
            head = Head()
        with self._lock:
            self.head = head


class ScoredInTorch(PredictorBase):
    """A predictor that encodes clips (``_encode`` on a chunk, ``_input`` moves a call's clips) and scores
    the embeddings in PyTorch through ``self._slot`` with ``self.logit_scale`` and ``self._score_impl``."""

    _slot: ClassifierSlot
    _score_impl: str = "auto"

    def _input(self, clips: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode(self, clips: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, clips: torch.Tensor) -> Prediction:
        """Logits, embeddings and the class names the logits belong to (one classifier for the whole call)."""
        check_clips(clips, self.image_size, self.num_frames)
        head = self._slot.head  # this call's classifier, whatever set_classifier does meanwhile
        emb = torch.cat(self.in_chunks(self._encode, self._input(clips)))  # [B, T, D] float32
        logits = head.score(emb, self.logit_scale, self._score_impl)  # [B, K]
        return Prediction(logits, emb, head.classes, head.decider)

    @property
    def classes(self) -> tuple[str, ...] | None:
        return self._slot.head.classes

    @property
    def classifier(self) -> Classifier | None:
        return self._slot.head.classifier

    @property
    def decider(self) -> Decider | None:
        return self._slot.head.decider

    def set_classifier(self, classifier: Classifier | None) -> None:
        """Score with ``classifier`` from the next call on (None: embeddings only); checked against the model."""
        self._slot.set(classifier)
