"""Temporal action localisation metrics: timelines of untrimmed video against labelled footage.

Records are plain tuples (named for reading): ground truth ``(video_id, label, start, end)`` and
predictions ``(video_id, label, start, end, score)``, times in seconds.

* **tIoU** of two segments: intersection length / union length (0 when they do not overlap). Two
  zero-length segments at the same instant have tIoU 1 and at different instants 0 (ActivityNet's
  0/0 is NaN, which its matching loop then counts as a hit at any threshold).
* **AP of one class at a tIoU threshold**, as ActivityNet's detection evaluation computes it
  (``compute_average_precision_detection`` in ``Evaluation/eval_detection.py`` of
  github.com/activitynet/ActivityNet): predictions in descending score; each, in turn, is a hit when
  some still-unmatched ground truth of its class in its video has tIoU >= the threshold, and takes
  the one of highest tIoU among those; otherwise a false positive (a duplicate of a hit included).
  precision_i = hits_i / i and recall_i = hits_i / #ground truth after the i-th prediction; AP is the
  area under the interpolated curve (``interpolated_prec_rec``, "VOCdevkit from VOC 2011"): pad
  precision with 0 at both ends and recall with 0 and 1, make precision non-increasing from the right,
  sum (r_i - r_{i-1}) * p_i over the points where recall changes. No predictions: AP 0.
  Ties, which ActivityNet leaves to numpy's unstable argsort: tied scores keep the input order and
  tied tIoUs prefer the earlier ground truth (both orders are stable sorts).
* **mAP** at each threshold: the mean AP over the classes that have ground truth (predictions of
  other labels are listed apart, as ActivityNet knows only ground-truth classes); average mAP: the
  mean over the thresholds (0.3, 0.4, 0.5, 0.6, 0.7: the THUMOS14 protocol).
* **Event precision / recall / F1 at one tIoU** (per class): the same greedy matching over all the
  predictions; precision = hits / predictions (None without predictions), recall = hits / ground
  truth (None without ground truth), F1 = 2·hits / (predictions + ground truth), which is their
  harmonic mean and 0 when one side is empty. Micro: the same over all classes pooled; macro F1:
  the mean over the classes with ground truth or predictions.

Readers: ActivityNet JSON, a ``video_id,start,end,label`` CSV with a header, or a folder of THUMOS14
per-class ``<Class>_<subset>.txt`` files. This module is torch-free; only :func:`evaluate_timelines`
runs an :class:`~stdd_fast.Engine` it is given.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from stdd_fast.errors import ClassifierError, ConfigError, NonFiniteError, OutputError, VideoError

log = logging.getLogger(__name__)

TIOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
CSV_COLUMNS = ("video_id", "start", "end", "label")


class GroundTruth(NamedTuple):
    video_id: str
    label: str
    start: float
    end: float


class Prediction(NamedTuple):
    video_id: str
    label: str
    start: float
    end: float
    score: float


@dataclass(frozen=True)
class Annotations:
    """A labelled set: every video (ones without actions too: their predictions are false positives),
    the ground-truth segments, and durations in seconds where the file gives them."""

    source: str
    videos: tuple[str, ...]
    segments: tuple[GroundTruth, ...]
    durations: Mapping[str, float]

    @property
    def labels(self) -> list[str]:
        return sorted({g.label for g in self.segments})


# --- readers -------------------------------------------------------------------------------------


def read_annotations(path: str | Path, subset: str | None = None) -> Annotations:
    """Ground truth from ActivityNet JSON (``.json``), a folder of THUMOS14 per-class txt files, or a
    ``video_id,start,end,label`` CSV (any other file). ``subset``: keep only the videos of that
    subset (JSON ``subset`` field; the ``_<subset>`` suffix of THUMOS14 file names).
    Malformed input raises ConfigError naming the file, the line (in JSON, that of the video's key, with
    the annotation's index) and the field. A byte-order mark, as spreadsheets write, is skipped."""
    path = Path(path)
    if path.is_dir():
        return _read_thumos_folder(path, subset)
    if not path.is_file():
        raise ConfigError(f"{path}: no such annotations file or folder")
    if path.suffix.lower() == ".json":
        return _read_activitynet(path, subset)
    if subset is not None:
        raise ConfigError(f"{path}: a CSV has no subsets; drop --subset {subset!r} or split the file")
    return _read_csv(path)


def _seconds(value: object, where: str, field: str) -> float:
    if isinstance(value, bool):  # float(True) is 1.0: a JSON true is no time
        value = str(value)
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {field} must be a time in seconds; got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{where}: {field} must be a finite time >= 0 seconds; got {value!r}")
    return seconds


def _segment(video_id: str, label: object, start: object, end: object, where: str) -> GroundTruth:
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"{where}: label must be a non-empty class name; got {label!r}")
    t0, t1 = _seconds(start, where, "start"), _seconds(end, where, "end")
    if t1 < t0:
        raise ConfigError(f"{where}: end {t1:g} s is before start {t0:g} s; swap them")
    return GroundTruth(video_id, label.strip(), t0, t1)


def _line_of_key(text: str, key: str, start: int) -> tuple[int | None, int]:
    """The line of the JSON object key ``key`` at or after ``start`` (json gives no positions of values)."""
    found = re.compile(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:").search(text, start)
    if found is None:  # the key was written with escapes: name no line rather than a wrong one
        return None, start
    return text.count("\n", 0, found.start()) + 1, found.end()


def _read_activitynet(path: Path, subset: str | None) -> Annotations:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise ConfigError(f'{path}: expected ActivityNet JSON {{"database": {{video_id: {{"annotations": [...]}}}}}}')
    videos, segments, durations, subsets, pos = [], [], {}, set(), 0
    for video_id, entry in database.items():
        line, pos = _line_of_key(text, video_id, pos)
        where = f"{path}:{line}: video {video_id!r}" if line else f"{path}: video {video_id!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations", []), list):
            raise ConfigError(f'{where}: expected {{"annotations": [{{"segment": [start, end], "label": name}}]}}')
        subsets.add(entry.get("subset"))
        if subset is not None and entry.get("subset") != subset:
            continue
        if entry.get("duration") is not None:
            durations[video_id] = _seconds(entry["duration"], where, "duration")
        videos.append(video_id)
        for k, ann in enumerate(entry.get("annotations", [])):
            at = f"{where} annotation {k}"
            seg = ann.get("segment") if isinstance(ann, dict) else None
            if not isinstance(seg, list | tuple) or len(seg) != 2:
                raise ConfigError(f'{at}: expected {{"segment": [start, end], "label": name}}; got {ann!r}')
            segments.append(_segment(video_id, ann.get("label"), seg[0], seg[1], at))
    if subset is not None and not videos:
        named = sorted(str(s) for s in subsets)
        raise ConfigError(f"{path}: no video of subset {subset!r}; the subsets there: {', '.join(named)}")
    return Annotations(str(path), tuple(videos), tuple(segments), durations)


def _read_csv(path: Path) -> Annotations:
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f)
        header = [h.strip() for h in next(rows, [])]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise ConfigError(
                f"{path}:1: the header must name the columns {','.join(CSV_COLUMNS)} (any order); "
                f"missing {', '.join(missing)}; got {','.join(header)!r}"
            )
        col = {c: header.index(c) for c in CSV_COLUMNS}
        videos, segments = {}, []
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}:{rows.line_num}"
            if len(row) != len(header):
                raise ConfigError(f"{where}: {len(row)} fields where the header has {len(header)}; got {row!r}")
            video_id = row[col["video_id"]].strip()
            if not video_id:
                raise ConfigError(f"{where}: video_id is empty")
            videos[video_id] = None
            segments.append(_segment(video_id, row[col["label"]], row[col["start"]], row[col["end"]], where))
    return Annotations(str(path), tuple(videos), tuple(segments), {})


def _read_thumos_folder(folder: Path, subset: str | None) -> Annotations:
    # THUMOS14 ships one "<video> <start> <end>" file per class; Ambiguous marks unclear footage, not a class
    files = sorted(p for p in folder.glob("*.txt") if not p.name.startswith("Ambiguous_"))
    if subset is not None:
        files = [p for p in files if p.stem.endswith(f"_{subset}")]
    if not files:
        raise ConfigError(f"{folder}: no per-class '<Class>_{subset or '<subset>'}.txt' files there")
    videos, segments = {}, []
    for p in files:
        label = p.stem.rsplit("_", 1)[0] if "_" in p.stem else p.stem
        for lineno, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise ConfigError(f"{p}:{lineno}: expected '<video> <start> <end>'; got {line!r}")
            videos[fields[0]] = None
            segments.append(_segment(fields[0], label, fields[1], fields[2], f"{p}:{lineno}"))
    return Annotations(str(folder), tuple(sorted(videos)), tuple(segments), {})


# --- metrics -------------------------------------------------------------------------------------


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two segments (start, end) in the same time unit."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    if union == 0:  # two instants: the same one, or two that do not meet
        return 1.0 if a[0] == b[0] else 0.0
    return inter / union


def interpolated_ap(precision: Sequence[float], recall: Sequence[float]) -> float:
    """Area under the precision/recall points with ActivityNet's (VOC 2011) interpolation."""
    mprec = [0.0, *precision, 0.0]
    mrec = [0.0, *recall, 1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def _check_predictions(predictions: Iterable[Sequence]) -> list[Prediction]:
    out = []
    for i, record in enumerate(predictions):
        p = Prediction(*record)
        if not (math.isfinite(p.score) and math.isfinite(p.start) and math.isfinite(p.end)) or p.end < p.start:
            raise ConfigError(f"prediction {i} {p}: start <= end and a score, all finite, are needed")
        out.append(p)
    return out


def _hits(predictions: Sequence[Prediction], ground_truth: Sequence[GroundTruth], tiou: float) -> list[bool]:
    """Hit or not for each prediction of one class, in descending score (ties: input order)."""
    by_video: dict[str, list[int]] = {}
    for j, g in enumerate(ground_truth):
        by_video.setdefault(g.video_id, []).append(j)
    taken = [False] * len(ground_truth)
    hits = []
    for p in sorted(predictions, key=lambda p: -p.score):
        ious = [
            (temporal_iou((p.start, p.end), (ground_truth[j].start, ground_truth[j].end)), j)
            for j in by_video.get(p.video_id, ())
        ]
        hit = False
        for iou, j in sorted(ious, key=lambda c: -c[0]):  # best tIoU first; a taken one passes to the next
            if iou < tiou:
                break
            if not taken[j]:
                taken[j] = hit = True
                break
        hits.append(hit)
    return hits


def average_precision(predictions: Iterable[Sequence], ground_truth: Iterable[Sequence], tiou: float) -> float | None:
    """AP of one class's predictions against that class's ground truth at ``tiou`` (see the module
    docstring); None (undefined) without ground truth."""
    preds, gts = _check_predictions(predictions), [GroundTruth(*g) for g in ground_truth]
    if not gts:
        return None
    hits = _hits(preds, gts, tiou)
    precision, recall, tp = [], [], 0
    for i, hit in enumerate(hits, start=1):
        tp += hit
        precision.append(tp / i)
        recall.append(tp / len(gts))
    return interpolated_ap(precision, recall)


def _check_thresholds(thresholds: Iterable[float]) -> tuple[float, ...]:
    out = tuple(float(t) for t in thresholds)
    bad = [t for t in out if not 0 < t <= 1]
    if not out or bad:
        raise ConfigError(f"tIoU thresholds must lie in (0, 1]; got {list(out)} (e.g. 0.3 0.4 0.5 0.6 0.7)")
    return out


def _by_label(records: Iterable[Sequence], kind: type) -> dict[str, list]:
    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(r[1], []).append(kind(*r))
    return groups


def mean_average_precision(
    predictions: Iterable[Sequence], ground_truth: Iterable[Sequence], thresholds: Iterable[float] = TIOU_THRESHOLDS
) -> dict[str, Any]:
    """Per-class AP and mAP at each threshold, and their mean.

    Returns thresholds [N], per_class {label: [AP per threshold]} (classes with ground truth), mAP [N]
    and average_mAP (None without ground truth), labels_without_ground_truth (predicted only).
    """
    thresholds = _check_thresholds(thresholds)
    preds, gts = _by_label(_check_predictions(predictions), Prediction), _by_label(ground_truth, GroundTruth)
    per_class = {c: [average_precision(preds.get(c, []), gts[c], t) for t in thresholds] for c in sorted(gts)}
    m_ap = [sum(aps[i] for aps in per_class.values()) / len(per_class) for i in range(len(thresholds))] if gts else None
    return {
        "thresholds": list(thresholds),
        "per_class": per_class,
        "mAP": m_ap,
        "average_mAP": sum(m_ap) / len(m_ap) if m_ap else None,
        "labels_without_ground_truth": sorted(set(preds) - set(gts)),
    }


def _prf(predicted: int, truths: int, hits: int) -> dict[str, Any]:
    return {
        "predictions": predicted,
        "ground_truth": truths,
        "hits": hits,
        "precision": hits / predicted if predicted else None,
        "recall": hits / truths if truths else None,
        "f1": 2 * hits / (predicted + truths) if predicted + truths else None,
    }


def event_scores(predictions: Iterable[Sequence], ground_truth: Iterable[Sequence], tiou: float = 0.5) -> dict:
    """Per-class event precision / recall / F1 at ``tiou`` (see the module docstring), micro and macro."""
    (tiou,) = _check_thresholds([tiou])
    preds, gts = _by_label(_check_predictions(predictions), Prediction), _by_label(ground_truth, GroundTruth)
    per_class = {}
    for c in sorted(set(preds) | set(gts)):
        p, g = preds.get(c, []), gts.get(c, [])
        per_class[c] = _prf(len(p), len(g), sum(_hits(p, g, tiou)))
    micro = _prf(*(sum(s[k] for s in per_class.values()) for k in ("predictions", "ground_truth", "hits")))
    f1s = [s["f1"] for s in per_class.values()]
    return {"tiou": tiou, "per_class": per_class, "micro": micro, "macro_f1": sum(f1s) / len(f1s) if f1s else None}


def evaluate_detections(
    predictions: Iterable[Sequence],
    ground_truth: Iterable[Sequence],
    thresholds: Iterable[float] = TIOU_THRESHOLDS,
    event_tiou: float = 0.5,
) -> dict[str, Any]:
    """The report's metrics: mAP per threshold and average, per-class AP and events (fractions in [0, 1])."""
    predictions, ground_truth = _check_predictions(predictions), [GroundTruth(*g) for g in ground_truth]
    maps = mean_average_precision(predictions, ground_truth, thresholds)
    events = event_scores(predictions, ground_truth, event_tiou)
    keys = [f"{t:g}" for t in maps["thresholds"]]
    per_class = {
        c: {"ap": dict(zip(keys, maps["per_class"][c], strict=True)) if c in maps["per_class"] else None, **s}
        for c, s in events["per_class"].items()
    }
    return {
        "tiou_thresholds": maps["thresholds"],
        "mAP": None if maps["mAP"] is None else dict(zip(keys, maps["mAP"], strict=True)),
        "average_mAP": maps["average_mAP"],
        "event_tiou": events["tiou"],
        "events": {"micro": events["micro"], "macro_f1": events["macro_f1"]},
        "per_class": per_class,
        "labels_without_ground_truth": maps["labels_without_ground_truth"],
        "ground_truth_segments": len(ground_truth),
        "predicted_segments": len(predictions),
        "unit": "fraction",
    }


def format_table(report: Mapping[str, Any]) -> str:
    """The metrics of :func:`evaluate_detections` as a text table (percent): a row per class, then the
    mAP per threshold beside the pooled (micro) events, then average mAP and macro F1."""
    keys = [f"{t:g}" for t in report["tiou_thresholds"]]
    tiou = f"{report['event_tiou']:g}"
    heads = ["class", "gt", "pred", *(f"AP@{k}" for k in keys), f"P@{tiou}", f"R@{tiou}", f"F1@{tiou}"]

    def row(name: str, s: Mapping[str, Any], aps: Mapping[str, float] | None) -> list[str]:
        values = [*(None if aps is None else aps[k] for k in keys), s["precision"], s["recall"], s["f1"]]
        return [name, str(s["ground_truth"]), str(s["predictions"]), *map(_pct, values)]

    rows = [row(c, s, s["ap"]) for c, s in report["per_class"].items()]
    rows.append(row("all (mAP; events pooled)", report["events"]["micro"], report["mAP"]))
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    lines = [
        "  ".join([r[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True))])
        for r in [heads, *rows]
    ]
    lines.append(
        f"average mAP over tIoU {', '.join(keys)}: {_pct(report['average_mAP'])} %; "
        f"macro F1 @ tIoU {tiou}: {_pct(report['events']['macro_f1'])} %"
    )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


# --- timelines of the annotated videos ------------------------------------------------------------


def check_labels(labels: Iterable[str], classes: Sequence[str]) -> None:
    """Every annotated label must be a class of the classifier (else its AP is 0 by a naming slip)."""
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ClassifierError(
            f"annotation label(s) {', '.join(map(repr, unknown))} are not classes of the classifier "
            f"({', '.join(map(repr, classes[:20]))}{'...' if len(classes) > 20 else ''}); rename them in the "
            "annotations or build the classifier from the annotation labels (no --classifier / --classes-file)"
        )


def video_file(video_id: str, prefix: str | Path) -> Path | None:
    """The file of an annotated video under ``prefix``: the id itself, or with a video extension
    (ActivityNet's ids also with the ``v_`` that the downloaded files carry)."""
    root = Path(prefix)
    for stem in (video_id, f"v_{video_id}"):
        for name in (stem, *(stem + ext for ext in VIDEO_EXTENSIONS)):
            if (root / name).is_file():
                return root / name
    return None


def timeline_predictions(engine: Any, video_id: str, path: str | Path, **options: Any) -> list[Prediction]:
    """One video's :meth:`Engine.timeline <stdd_fast.Engine.timeline>` (``options`` pass through) as
    prediction records: each segment's label, start and end (seconds), its peak confidence as the score.
    Raises the file's error; a Ctrl-C that cut the timeline short ends the evaluation (KeyboardInterrupt)."""
    timeline = engine.timeline(str(path), **options)
    if timeline.interrupted:  # scoring a cut timeline would count its missing end as missed actions
        raise KeyboardInterrupt
    if timeline.error is not None:
        raise timeline.error
    return [
        Prediction(video_id, s.label, float(s.start_time), float(s.end_time), float(s.peak_confidence))
        for s in timeline.segments
    ]


def run_timelines(engine: Any, videos: Mapping[str, Path], **options: Any) -> tuple[list[Prediction], dict[str, str]]:
    """Predictions of every video (id -> file), and the error of each video that could not be read
    (skipped); a setup error (a classifier that decides nothing...) ends the run."""
    predictions, errors = [], {}
    for i, (video_id, path) in enumerate(videos.items(), start=1):
        try:
            found = timeline_predictions(engine, video_id, path, **options)
        except (VideoError, NonFiniteError, OSError) as e:  # one bad file must not end an hour-long evaluation
            errors[video_id] = f"{type(e).__name__}: {e}"
            log.warning("timeline %d/%d: %s skipped (%s)", i, len(videos), video_id, errors[video_id])
            continue
        predictions += found
        log.info("timeline %d/%d: %s, %d segments", i, len(videos), video_id, len(found))
    return predictions, errors


def activitynet_results(predictions: Iterable[Prediction]) -> dict:
    """Predictions in ActivityNet's results format (the file its evaluation code reads)."""
    results: dict[str, list] = {}
    for p in predictions:
        results.setdefault(p.video_id, []).append({"label": p.label, "segment": [p.start, p.end], "score": p.score})
    return {"version": "stdd-fast", "results": results, "external_data": {}}


def evaluate_timelines(
    engine: Any,
    annotations: Annotations,
    prefix: str | Path = "",
    thresholds: Iterable[float] = TIOU_THRESHOLDS,
    event_tiou: float = 0.5,
    output_dir: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Timelines of the annotated videos (files under ``prefix``) scored against the annotations.

    Metrics are over the videos evaluated; a video without a file or whose timeline failed is
    skipped and listed. ``options`` go to ``Engine.timeline`` (``progress=``, ``segments=``...).
    Writes ``report.json`` and ``predictions.json`` (ActivityNet results format) to ``output_dir``.
    Returns the report (see :func:`evaluate_detections`).
    """
    check_labels(annotations.labels, engine.classes)
    files, errors = {}, {}
    for video_id in annotations.videos:
        path = video_file(video_id, prefix)
        if path is None:
            errors[video_id] = f"no file {video_id}[{'|'.join(VIDEO_EXTENSIONS)}] under {Path(prefix).resolve()}"
        else:
            files[video_id] = path
    predictions, failed = run_timelines(engine, files, **options)
    errors.update(failed)
    evaluated = [v for v in annotations.videos if v not in errors]
    if not evaluated:
        first = "; ".join(f"{v}: {e}" for v, e in list(errors.items())[:3])
        raise ConfigError(f"none of the {len(errors)} annotated videos could be evaluated ({first}); check --prefix")
    kept = set(evaluated)
    report = {
        "annotations": annotations.source,
        "videos": len(annotations.videos),
        "evaluated": len(evaluated),
        "skipped": len(errors),
        "skipped_videos": [{"video_id": v, "error": errors[v]} for v in annotations.videos if v in errors],
        **evaluate_detections(
            predictions, [g for g in annotations.segments if g.video_id in kept], thresholds, event_tiou
        ),
        "classes": list(engine.classes),
    }
    if output_dir is not None:
        out = Path(output_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            results = out / "predictions.json"
            results.write_text(json.dumps(activitynet_results(predictions), indent=1) + "\n", encoding="utf-8")
            report["predictions_json"] = str(results)
            report["report_json"] = str(out / "report.json")
            (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"cannot write the report under {out}: {e}; pick another --output") from e
    return report
