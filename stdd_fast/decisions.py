"""Deciding, not just ranking: which classes a video or window shows, each with a confidence a user can read.

A ranking always has a winner: the softmax over K classes sums to 1 whether anything happens or
not, and a logit (``tau · s`` summed over views) has no scale to threshold. A decision acts on the
STDD score ``s`` itself: the cosine similarities of frame and prompt embeddings pooled over frames and
prompts (STDD-SPEC §3.4), one per view, and for a video of V views the mean of its views
(``logits / (tau · V)``). ``s`` does not depend on which other classes are in the classifier, so a
class is decided on its own, and several classes (or none) can be detected at once.

Two references a class must beat, in the classifier artifact:

* **calibrated thresholds** (:mod:`stdd_fast.calibrate`): per class, the score ordinary footage of the
  site exceeds only at the false-alarm rate asked. The confidence of a detection is the share of the
  calibration windows that scored lower (interpolated in the recorded quantiles of their scores): how
  unusual this score is for ordinary footage; 0.999 means one calibration window in a thousand scored
  as high. A classifier that has them decides by them.
* **background prompts** ("none of these"): descriptions of ordinary scenes scored like classes; a
  class is detected when its ``s`` beats the best of them. Usable before any calibration, and cruder:
  its confidence is ``sigmoid(tau · (s - s_background))``, the two-way softmax between the class and
  the strongest background description, which says how clearly it beat "nothing happening" and
  nothing about how often ordinary footage does so.

Without either, there are no decisions (``detected`` is None) and everything is as before, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from stdd_fast.errors import ClassifierError, ConfigError

QUANTILE_LEVELS = 1001  # recorded quantiles of the calibration scores per class: levels 0, 0.001, ..., 1


@dataclass(frozen=True)
class Detection:
    """One class a video or window shows: its score ``s``, the score it had to beat, and the confidence."""

    label: str
    score: float
    threshold: float
    confidence: float

    def to_dict(self) -> dict:
        return {"label": self.label, "score": self.score, "threshold": self.threshold, "confidence": self.confidence}


@dataclass(frozen=True)
class Decision:
    """Every class's verdict on one video or window: scores ``s``, the references they had to beat, the
    confidences, and ``detected`` (bool): all [K] float32 (bool) tensors on the CPU; [B, K] for the B videos or
    windows of one call (:meth:`Decider.decisions`), ``row(b)`` being the b-th one's."""

    scores: torch.Tensor
    reference: torch.Tensor
    confidence: torch.Tensor
    detected: torch.Tensor

    def row(self, b: int) -> Decision:
        return Decision(self.scores[b], self.reference[b], self.confidence[b], self.detected[b])

    def detections(self, classes: Sequence[str]) -> list[Detection]:
        """The detected classes of a [K] decision, best confidence first."""
        return Decision(*(t[None] for t in (self.scores, self.reference, self.confidence, self.detected))).per_row(
            classes
        )[0]

    def per_row(self, classes: Sequence[str]) -> list[list[Detection]]:
        """The detected classes of each row of a [B, K] decision, best confidence first (a few host operations for
        the whole call: one ``.tolist()`` per field, not one indexing per class)."""
        rows, ks = self.detected.nonzero(as_tuple=True)
        values = (t[rows, ks].tolist() for t in (self.scores, self.reference, self.confidence))
        found: list[list[Detection]] = [[] for _ in range(self.detected.shape[0])]
        for b, k, s, ref, c in zip(rows.tolist(), ks.tolist(), *values, strict=True):
            found[b].append(Detection(classes[k], s, ref, c))
        return [sorted(f, key=lambda d: (-d.confidence, -d.score)) for f in found]


@dataclass(frozen=True)
class Calibration:
    """Per-class thresholds on ``s`` and what backs them.

    thresholds: float32 [K]: a class is detected when its ``s`` is above its threshold. quantiles:
    float32 [K, QUANTILE_LEVELS], the calibration windows' scores of each class at evenly spaced
    levels (the confidence of a score is its level). provenance: where they come from (footage
    duration, windows, rate asked, the model's fingerprint, the sampling, the window and stride, the
    date...; :func:`stdd_fast.calibrate.calibrate` writes it).
    """

    thresholds: torch.Tensor
    quantiles: torch.Tensor
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        t, q = self.thresholds, self.quantiles
        if not (isinstance(t, torch.Tensor) and t.ndim == 1):
            raise ClassifierError(f"calibration thresholds must be a [K] tensor; got {getattr(t, 'shape', t)!r}")
        if not (isinstance(q, torch.Tensor) and q.ndim == 2 and q.shape[0] == t.shape[0] and q.shape[1] >= 2):
            raise ClassifierError(
                f"calibration quantiles must be [K={t.shape[0]}, levels >= 2]; got {getattr(q, 'shape', q)!r}"
            )
        bad = ~(torch.isfinite(t) & (t.abs() <= 1.0))
        if bool(bad.any()):
            raise ClassifierError(
                f"calibration thresholds of classes {bad.nonzero().flatten().tolist()[:5]} are NaN or outside "
                f"[-1, 1] (a score s is a cosine similarity): {t[bad].tolist()[:5]}; calibrate again (stdd calibrate)"
            )
        if not bool(torch.isfinite(q).all()) or bool((q.diff(dim=1) < 0).any()):
            raise ClassifierError("calibration quantiles must be finite and non-decreasing per class; calibrate again")

    def select(self, rows: Sequence[int]) -> Calibration:
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return Calibration(self.thresholds[index], self.quantiles[index], dict(self.provenance))

    def check_sampling(self, num_frames: int, sampling_rate: int, target_fps: float) -> None:
        """ConfigError unless these are the frames a view held when the thresholds were set."""
        recorded = self.provenance.get("sampling")
        if not recorded:
            return
        now = {"num_frames": num_frames, "sampling_rate": sampling_rate, "target_fps": float(target_fps)}
        differ = {k: (recorded.get(k), v) for k, v in now.items() if recorded.get(k) != v}
        if differ:
            said = ", ".join(f"{k} {a!r} when calibrated, {b!r} now" for k, (a, b) in differ.items())
            raise ConfigError(
                f"the classifier's thresholds were calibrated for other views ({said}): sample as then, or "
                "calibrate again with these settings (stdd calibrate)"
            )


def check_views(scorer: object, sampling) -> None:
    """ConfigError when the thresholds ``scorer`` decides with (a predictor, or a classifier) were calibrated for
    other views than ``sampling`` (a SamplingConfig) makes."""
    calibration = getattr(scorer, "calibration", None) or getattr(
        getattr(scorer, "classifier", None), "calibration", None
    )
    if calibration is not None:
        calibration.check_sampling(sampling.num_frames, sampling.sampling_rate, sampling.target_fps)


def check_calibrated_for(classifier, visual: str | None) -> None:
    """ClassifierError when ``classifier``'s thresholds were calibrated with another model than ``visual``."""
    calibration = classifier.calibration
    recorded = None if calibration is None else calibration.provenance.get("model")
    if recorded and visual and recorded != visual:
        raise ClassifierError(
            f"the classifier's thresholds were calibrated with another model (visual tower {recorded}, this one is "
            f"{visual}): calibrate it again with these weights (stdd calibrate), or use the model it was made for"
        )


class Decider:
    """The decisions of one classifier: ``decide(view_logits [V, K], embeddings [V, T, D])`` -> Detections.

    classes: the K names; calibration: a :class:`Calibration` (None: none); background: float32
    [M, N, D] | [M, D] background-prompt weights (None: none); logit_scale: log(tau) of the model.
    """

    def __init__(
        self,
        classes: Sequence[str],
        logit_scale: torch.Tensor | float,
        calibration: Calibration | None = None,
        background: torch.Tensor | None = None,
    ) -> None:
        if calibration is None and background is None:
            raise ConfigError("a Decider needs calibrated thresholds or background prompts")
        self.classes = list(classes)
        self.tau = float(torch.as_tensor(logit_scale, dtype=torch.float32).exp())
        self.calibration, self.background = calibration, background
        self._tables: dict[torch.device, tuple] = {}

    def _on(self, device: torch.device) -> tuple:
        """(thresholds, quantiles, background) on ``device``, moved once: a call decides where its logits are."""
        if device not in self._tables:
            c, bg = self.calibration, self.background
            self._tables[device] = (
                None if c is None else c.thresholds.to(device),
                None if c is None else c.quantiles.to(device, torch.float32),
                None if bg is None else bg.to(device, torch.float32),
            )
        return self._tables[device]

    def on_levels(self) -> list[float]:
        """The confidence at which each class is detected: its threshold's quantile level, or 0.5 (background)."""
        if self.calibration is None:
            return [0.5] * len(self.classes)
        return _levels(self.calibration.thresholds, self.calibration.quantiles).tolist()

    def video_scores(self, view_logits: torch.Tensor) -> torch.Tensor:
        """``s`` of each class: the mean over views of ``logits / tau``; float32 [..., K] from [..., V, K] (on their
        device)."""
        return (view_logits.float() / self.tau).mean(-2)

    def decide(self, view_logits: torch.Tensor, embeddings: torch.Tensor | None = None) -> list[Detection]:
        """The detected classes of one video (or window: V = 1), best confidence first."""
        return self.decision(view_logits, embeddings).detections(self.classes)

    def decision(self, view_logits: torch.Tensor, embeddings: torch.Tensor | None = None) -> Decision:
        """Every class's score, reference, confidence and verdict for one video (or window: V = 1): logits
        [V, K], embeddings [V, T, D] (needed by background prompts)."""
        return self.decisions(view_logits[None], None if embeddings is None else embeddings[None]).row(0)

    def decisions(self, view_logits: torch.Tensor, embeddings: torch.Tensor | None = None) -> Decision:
        """The decisions of B videos (or windows) of V views at once, as a [B, K] Decision: logits [B, V, K],
        embeddings [B, V, T, D]. A handful of operations for the whole call, whatever B is, on the device the
        logits are on (on a GPU, a few kernels rather than host work per window); the Decision is on the CPU."""
        s = self.video_scores(view_logits)  # [B, K]
        thresholds, quantiles, background = self._on(s.device)
        if thresholds is not None:
            reference = thresholds.expand_as(s)
            confidence = _levels(s, quantiles)
        else:
            if embeddings is None:
                raise ConfigError("background prompts are scored from the frame embeddings: pass them")
            from stdd_fast.head import score

            b, v = embeddings.shape[:2]
            views = embeddings.to(s.device, torch.float32).flatten(0, 1)  # [B*V, T, D]
            s_bg = (score(views, background, math.log(self.tau)) / self.tau).view(b, v, -1).mean(1).amax(-1)
            reference = s_bg[:, None].expand_as(s)  # [B, K]: the best background description of each
            confidence = torch.sigmoid(self.tau * (s - reference))
        s, reference, confidence = torch.stack([s, reference, confidence]).cpu()  # one copy to the host
        return Decision(s, reference, confidence, s > reference)


def _levels(scores: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """The quantile level of each class's score (linear between recorded quantiles; 0 below, 1 above): [..., K]
    from scores [..., K] and quantiles [K, L]."""
    q = quantiles.float()  # [K, L]
    last = q.shape[1] - 1
    x = scores.float().reshape(-1, q.shape[0]).T.contiguous()  # [K, B]
    upper = torch.searchsorted(q, x, right=True)  # [K, B]: the first recorded quantile above
    hi_i, lo_i = upper.clamp(1, last), (upper - 1).clamp(0, last - 1)
    lo, hi = q.gather(1, lo_i), q.gather(1, hi_i)
    frac = torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-30), torch.zeros_like(x)).clamp(0, 1)
    level = torch.where(upper == 0, 0.0, torch.where(upper > last, 1.0, (lo_i.float() + frac) / last))
    return level.T.reshape(scores.shape)
