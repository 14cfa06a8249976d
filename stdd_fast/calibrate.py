"""Thresholds from a site's own footage, no labels needed: :func:`calibrate` (``stdd calibrate``).

The engine scores footage that shows ordinary activity window by window, exactly as a stream would
cut it (:meth:`stdd_fast.Engine.stream`: one view per window, ``window`` frames, a new window every
``stride``), and sets each class's threshold on the STDD score ``s`` (:mod:`stdd_fast.decisions`) so
that ordinary footage exceeds it at most at the false-alarm rate asked: ``"1/h"`` of footage,
``"1/1000w"`` (per 1,000 windows), ``"2/min"``... A rate per time becomes a rate per window through
the footage's duration per window. The threshold of a class is its ``(a+1)``-th highest background
score, with ``a`` the most background windows allowed over it such that the one-sided 95 % upper
confidence bound of the false-alarm rate (Clopper-Pearson) stays at or below the rate asked: the
rate is then guaranteed, not only hit on the footage seen (a threshold at the plain empirical
quantile misses the rate on new footage about half the time). That needs at least ``ln 0.05 /
ln(1 - p)`` (about ``3 / p``) windows for a per-window rate ``p``; less footage is refused, naming
how much is needed.

With a few labelled clips per class (``positives``) a class can instead aim at a recall on them
(``aim="recall"``) or at the best F1 of its positives against the background windows (``aim="f1"``);
classes without positives keep the false-alarm aim.

The thresholds, the quantiles of each class's background scores (what a detection's confidence is
read from) and their provenance (footage, windows, the rate asked, the model's fingerprint, the
sampling, window and stride, the date) go into the classifier artifact; one calibrated for another
model or other views is refused where it is used.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import stdd_fast
from stdd_fast.checks import check_choice, check_number
from stdd_fast.classifier import Classifier
from stdd_fast.decisions import QUANTILE_LEVELS, Calibration
from stdd_fast.errors import ConfigError, StddError

if TYPE_CHECKING:
    from stdd_fast.engine import Engine

AIMS = ("false_alarms", "recall", "f1")
_UNITS = {"h": 3600.0, "hour": 3600.0, "min": 60.0, "minute": 60.0, "s": 1.0, "second": 1.0}
_RATE = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+]*)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class FalseAlarmRate:
    """False alarms allowed: ``count`` per ``amount`` ``unit`` ("seconds" of footage, or "windows")."""

    count: float
    amount: float
    unit: str
    text: str

    def per_window(self, footage_s: float, windows: int) -> float:
        """The rate as a probability per window, for footage of ``footage_s`` seconds cut into ``windows``."""
        units = windows / self.amount if self.unit == "windows" else footage_s / self.amount
        return min(1.0, self.count * units / max(windows, 1))


def windows_needed(p: float, confidence: float = 0.95) -> int:
    """The fewest windows whose 95 % upper bound with no false alarm is at most ``p`` (about ``3 / p``)."""
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-p)) if p < 1 else 1


def allowed_over(windows: int, p: float) -> int | None:
    """The most windows that may exceed a threshold while the 95 % upper bound stays <= ``p`` (None: not even 0)."""
    if _binomial_upper(0, windows) > p:
        return None
    lo, hi = 0, windows  # the bound grows with the count: bisect the largest count that keeps it under p
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _binomial_upper(mid, windows) <= p else (lo, mid - 1)
    return lo


def parse_rate(rate: str | float) -> FalseAlarmRate:
    """``"1/h"``, ``"0.5/min"``, ``"3/1000w"`` (per 1,000 windows) or a float (per window) -> FalseAlarmRate."""
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        check_number("false_alarms", rate, hint="false alarms per window")
        return FalseAlarmRate(float(rate), 1.0, "windows", f"{rate:g}/window")
    found = _RATE.match(str(rate).lower()) if isinstance(rate, str) else None
    if found:
        count, amount, unit = found.group(1), found.group(2) or "1", found.group(3)
        try:
            count_v, amount_v = float(count), float(amount)
        except ValueError:
            count_v = amount_v = float("nan")
        kind = "windows" if unit in ("w", "window", "windows") else "seconds" if unit in _UNITS else None
        if kind is not None and math.isfinite(count_v) and math.isfinite(amount_v) and count_v > 0 and amount_v > 0:
            scale = 1.0 if kind == "windows" else _UNITS[unit]
            return FalseAlarmRate(count_v, amount_v * scale, kind, str(rate).strip())
    raise ConfigError(
        f"false_alarms={rate!r}: give a positive rate such as '1/h' (per hour of footage), '2/min', '1/1000w' "
        "(per 1,000 windows) or a number per window"
    )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


@dataclass
class ClassReport:
    """What calibration set for one class and how much backs it."""

    label: str
    threshold: float
    aim: str
    background_above: int  # background windows over the threshold
    background_windows: int
    positives: int = 0
    positives_above: int = 0

    def false_alarm_bound(self) -> float:
        """The one-sided 95 % upper bound of the per-window false-alarm probability (Clopper-Pearson)."""
        return _binomial_upper(self.background_above, self.background_windows)


@dataclass
class CalibrationReport:
    """A calibration: the classifier with its thresholds, one :class:`ClassReport` per class, and the run.

    scores: float32 [N, K], the background windows' scores (for the plots); failed: ``{file: error}``
    of footage that gave no window; windows_per_s: how fast the footage was scored.
    """

    classifier: Classifier
    classes: list[ClassReport]
    scores: torch.Tensor
    positive_scores: dict[str, torch.Tensor] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    footage_s: float = 0.0
    files: int = 0
    windows_per_s: float = 0.0

    def table(self) -> str:
        """The report as a text table, one line per class."""
        head = f"{'class':<32} {'threshold':>9} {'aim':<12} {'over':>10} {'95% bound/win':>13} {'recall':>8}"
        lines = [head]
        for c in self.classes:
            recall = f"{c.positives_above}/{c.positives}" if c.positives else "-"
            lines.append(
                f"{c.label[:32]:<32} {c.threshold:9.4f} {c.aim:<12} {c.background_above:>4}/{c.background_windows:<5} "
                f"{c.false_alarm_bound():13.2e} {recall:>8}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        windows = self.scores.shape[0]
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return (
            f"{windows} windows of {self.files} files ({_duration(self.footage_s)} of footage{failed}), "
            f"{self.windows_per_s:.1f} windows/s"
        )

    def plot(self, path: str | Path) -> Path:
        """A PNG of each class's background score distribution (and its positives') with its threshold."""
        from stdd_fast.deps import require

        require("matplotlib")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = len(self.classes)
        cols = min(k, 4)
        rows = math.ceil(k / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
        for i, c in enumerate(self.classes):
            ax = axes[i // cols][i % cols]
            ax.hist(self.scores[:, i].numpy(), bins=40, color="0.6", label="background windows")
            if c.label in self.positive_scores:
                ax.hist(self.positive_scores[c.label].numpy(), bins=20, alpha=0.6, label="positives")
            ax.axvline(c.threshold, color="C3", label=f"threshold {c.threshold:.4f}")
            ax.set_title(c.label[:40], fontsize=9)
            ax.set_xlabel("STDD score s")
            ax.locator_params(axis="x", nbins=5)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
        for j in range(k, rows * cols):
            axes[j // cols][j % cols].axis("off")
        fig.suptitle(f"calibration: {self.summary()}", fontsize=9)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path


def _binomial_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """Clopper-Pearson one-sided upper bound of p from k successes in n trials (bisection on the binomial cdf)."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence

    def cdf(p: float) -> float:  # P[X <= k]
        total, term = 0.0, (1.0 - p) ** n
        for i in range(k + 1):
            total += term
            term *= (n - i) / (i + 1) * p / (1.0 - p) if p < 1.0 else 0.0
        return total

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return hi


def window_scores(engine: Engine, sources: Sequence[str | Path], window, stride) -> tuple[torch.Tensor, dict, float]:
    """The STDD scores ``s`` [N, K] of every window of ``sources`` (as a stream cuts them), the files that gave no
    window ``{file: error}``, and the seconds of footage they hold."""
    from stdd_fast.video.pyav import probe

    tau = float(torch.as_tensor(engine.logit_scale, dtype=torch.float32).exp())
    rows, failed, footage = [], {}, 0.0
    for source in sources:
        name = str(source)
        try:
            info = probe(source)
        except StddError as e:
            failed[name] = f"{type(e).__name__}: {e}"
            continue
        got = []
        # every window scored: a motion gate would repeat still windows' scores and skew the distribution
        for result in engine.stream(source, window, stride, top_k=1, motion_gate=None):
            if result.error is not None and result.index < 0:  # the stream ended with an error: no more windows
                failed[name] = f"{type(result.error).__name__}: {result.error}"
                break
            if result.error is None:
                got.append(result.logits.float() / tau)
        if got:
            rows.extend(got)
            footage += info.num_frames / info.fps if info.fps else 0.0
            failed.pop(name, None)  # windows before a late error still count
        elif name not in failed:
            failed[name] = "no window: the file is shorter than one window (see window=)"
    scores = torch.stack(rows) if rows else torch.empty(0, len(engine.classes))
    return scores, failed, footage


def _threshold_for_rate(scores: torch.Tensor, allowed: int) -> torch.Tensor:
    """Per class the (allowed+1)-th highest score: at most ``allowed`` windows exceed it. scores [N, K] -> [K]."""
    return scores.sort(dim=0, descending=True).values[allowed]


def _threshold_for_recall(positives: torch.Tensor, recall: float) -> float:
    """The threshold that ``recall`` of the positives' scores exceed (just below the one that must pass)."""
    ordered = positives.sort().values
    must_pass = min(math.floor((1.0 - recall) * len(ordered)), len(ordered) - 1)
    return float(torch.nextafter(ordered[must_pass], torch.tensor(-2.0)))


def _threshold_for_f1(positives: torch.Tensor, background: torch.Tensor) -> float:
    """The threshold of the best F1 of the positives against the background windows (ties: the higher one)."""
    candidates = torch.cat([positives, background]).unique().sort().values
    candidates = torch.cat([torch.nextafter(candidates[:1], torch.tensor(-2.0)), candidates])
    tp = (positives[None, :] > candidates[:, None]).sum(1).float()
    fp = (background[None, :] > candidates[:, None]).sum(1).float()
    fn = len(positives) - tp
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    best = torch.nonzero(f1 == f1.max()).flatten().max()
    return float(candidates[best])


def calibrate(
    engine: Engine,
    background: Sequence[str | Path],
    *,
    false_alarms: str | float = "1/h",
    positives: Mapping[str, Sequence[str | Path]] | None = None,
    aim: str = "false_alarms",
    recall: float = 0.9,
    window: int | str | None = None,
    stride: int | str = 16,
) -> CalibrationReport:
    """Thresholds for the engine's classifier from ordinary footage (see the module docstring).

    background: video files of ordinary activity (each cut into windows as a stream would be; a file that
    fails or is shorter than one window is reported in ``failed`` and the run goes on). false_alarms: the
    rate asked. positives: ``{class: [clips]}``, labelled examples for ``aim="recall"`` (``recall`` of
    their windows above the threshold) or ``aim="f1"``. window / stride: as :meth:`Engine.stream`.
    Returns a :class:`CalibrationReport`; its ``classifier`` carries the thresholds (save it).
    """
    check_choice("aim", aim, AIMS)
    check_number("recall", recall, strict=True)
    if recall > 1:
        raise ConfigError(f"recall={recall!r}: must be in (0, 1]")
    rate = parse_rate(false_alarms)
    classifier = engine.classifier
    if classifier is None or not engine.classes:
        raise ConfigError("calibrate the classifier of an Engine with classes (classes=[...] or classifier=...)")
    visual = getattr(engine.predictor, "visual", None)
    if visual is None:
        raise ConfigError(
            f"backend {engine.backend!r} runs an exported graph without the model's fingerprint: calibrate with "
            "the checkpoint (backend torch or onnxruntime), then export the calibrated classifier"
        )
    positives = dict(positives or {})
    unknown = sorted(set(positives) - set(engine.classes))
    if unknown:
        raise ConfigError(f"positives name classes {unknown[:5]} the classifier does not have: {engine.classes[:8]}")
    if aim != "false_alarms" and not positives:
        raise ConfigError(f"aim={aim!r} needs labelled clips: positives={{'class': ['clip.mp4', ...]}}")
    files = [str(p) for p in background]
    if not files:
        raise ConfigError("no background footage given: pass files of ordinary activity (--background)")
    start = time.perf_counter()
    scores, failed, footage_s = window_scores(engine, files, window, stride)
    positive_scores: dict[str, torch.Tensor] = {}
    for label, clips in positives.items():
        got, bad, _ = window_scores(engine, [str(c) for c in clips], window, stride)
        failed.update({f"{label}: {k}": v for k, v in bad.items()})
        if got.shape[0] == 0:
            raise ConfigError(f"positives of {label!r}: none of {len(clips)} clips gave a window ({bad})")
        positive_scores[label] = got[:, engine.classes.index(label)]
    seconds = time.perf_counter() - start
    windows = scores.shape[0]
    if windows == 0:
        raise ConfigError(
            f"too little background footage for {rate.text}: no window from {len(files)} files ({len(failed)} "
            "failed, each said why); give files of ordinary activity longer than one window"
        )
    p = rate.per_window(footage_s, windows)
    allowed = allowed_over(windows, p)
    if allowed is None:
        need = windows_needed(p)
        raise ConfigError(
            f"too little background footage for {rate.text}: {windows} windows ({_duration(footage_s)}) of "
            f"{len(files)} files ({len(failed)} failed); guaranteeing that rate takes at least {need} windows (about "
            f"{_duration(need * footage_s / windows)} at this stride): add footage or ask a higher rate"
        )
    thresholds = _threshold_for_rate(scores, allowed)
    reports = []
    for k, label in enumerate(engine.classes):
        class_aim = aim if label in positive_scores else "false_alarms"
        pos = positive_scores.get(label)
        if class_aim == "recall":
            thresholds[k] = _threshold_for_recall(pos, recall)
        elif class_aim == "f1":
            thresholds[k] = _threshold_for_f1(pos, scores[:, k])
        above = int((scores[:, k] > thresholds[k]).sum())
        pos_above = 0 if pos is None else int((pos > thresholds[k]).sum())
        reports.append(
            ClassReport(
                label, float(thresholds[k]), class_aim, above, windows, 0 if pos is None else len(pos), pos_above
            )
        )
    levels = torch.linspace(0.0, 1.0, QUANTILE_LEVELS)
    quantiles = torch.quantile(scores.double(), levels.double(), dim=0).float().T.contiguous()  # [K, L]
    s = engine.sampling
    provenance = {
        "version": 1,
        "aim": aim,
        "false_alarms": rate.text,
        "per_window": p,
        "allowed_over": allowed,
        "footage_s": footage_s,
        "windows": windows,
        "files": len(files),
        "failed_files": len(failed),
        "model": visual,
        "sampling": {"num_frames": s.num_frames, "sampling_rate": s.sampling_rate, "target_fps": float(s.target_fps)},
        "window": None if window is None else str(window),
        "stride": str(stride),
        "positives": {label: len(v) for label, v in positive_scores.items()},
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "stdd_fast": stdd_fast.__version__,
    }
    calibrated = dataclasses.replace(classifier, calibration=Calibration(thresholds.float(), quantiles, provenance))
    return CalibrationReport(
        calibrated, reports, scores, positive_scores, failed, footage_s, len(files),
        windows / seconds if seconds > 0 else 0.0,
    )  # fmt: skip
