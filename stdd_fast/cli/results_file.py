"""``stdd classify --output``: every result as it completes, one line each, failures and all class scores included.

``.jsonl``: one JSON object per video (``VideoResult.to_dict()`` plus ``class_scores`` {class: logit}).
``.csv``: ``video, labels, scores, probabilities, error_type, error, decode_backend`` (lists joined by
``;``); when the classifier decides, ``detected, confidences`` (the detected classes and their
confidences, best first, ``;``-joined; both empty when nothing is detected or the video failed); then
one ``score:<class>`` column per class. Each line is flushed when written, so an
interrupted run keeps every video it finished.

A file that already holds results is never overwritten unasked (:func:`check_output`): ``resume``
skips the videos it holds a successful result for and appends the others (a failed video runs again;
a video's last line is its result), ``overwrite`` starts the file over. Before appending, a line a
kill cut short is dropped, and the file's columns must be this run's classes.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from stdd_fast.errors import ConfigError
from stdd_fast.results import VideoResult
from stdd_fast.user_cache import check_not_special

FORMATS = (".jsonl", ".csv")
HEAD = ["video", "labels", "scores", "probabilities", "error_type", "error", "decode_backend"]
DECIDED = ["detected", "confidences"]  # only in the files of a classifier that decides


def video_key(video: str) -> str:
    """How a video is matched between runs: its path as written, normalised (``./a.mp4`` is ``a.mp4``)."""
    return os.path.normpath(video)


def _complete_lines(path: Path) -> list[str]:
    """The file's lines that end in a newline (a last line without one was cut short by a kill)."""
    return path.read_text(encoding="utf-8", errors="replace").split("\n")[:-1]


def _entries(lines: list[str]) -> list[dict] | None:
    """The JSON objects of a results file's lines; None when a line is not one (not a file of ours)."""
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("video"), str):
            return None
        entries.append(entry)
    return entries


def held_results(path: Path) -> dict[str, bool] | None:
    """{video: whether its last result in the file succeeded}; None when the file is not a results file."""
    lines = _complete_lines(path)
    held: dict[str, bool] = {}
    if path.suffix == ".csv":
        rows = list(csv.reader(lines))
        if not rows or rows[0][: len(HEAD)] != HEAD:
            return None
        width, error_type = len(rows[0]), HEAD.index("error_type")
        for row in rows[1:]:
            if len(row) != width:
                return None
            held[video_key(row[0])] = row[error_type] == ""
        return held
    entries = _entries(lines)
    if entries is None:
        return None
    for entry in entries:
        held[video_key(entry["video"])] = entry.get("error") is None
    return held


def check_output(path: str | Path, resume: bool = False, overwrite: bool = False) -> set[str]:
    """Check a results path before any work; the videos ``resume`` skips (those the file holds a success for).

    ConfigError for a folder, another suffix, both ``resume`` and ``overwrite``, a file that already exists
    when neither is asked, or (``resume``) a file that is not a results file.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder; name a file such as {path / 'results.jsonl'}")
    check_not_special(path, "--output")  # a FIFO would block the first write, a link to /dev/null lose them all
    if path.suffix not in FORMATS:
        raise ConfigError(f"--output {path}: name it results.jsonl or results.csv")
    if resume and overwrite:
        raise ConfigError("pass --resume (keep the results and add the rest) or --overwrite (start over), not both")
    if overwrite or not path.is_file() or path.stat().st_size == 0:
        return set()
    held = held_results(path)
    if held is None:
        what = "is not a results file of stdd classify" if resume else "already exists"
        raise ConfigError(f"--output {path} {what}: pass --overwrite to replace it, or write to another file")
    if not resume:
        raise ConfigError(
            f"--output {path} already holds the results of {len(held)} video(s): pass --resume to skip those and "
            "append the rest, or --overwrite to start over (or write to another file)"
        )
    return {video for video, ok in held.items() if ok}


def _drop_cut_line(path: Path) -> None:
    """Truncate ``path`` after its last newline (in place: the complete lines are never rewritten)."""
    with path.open("r+b") as f:
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def _decided(r: VideoResult) -> list[str]:
    """The CSV's ``detected`` and ``confidences`` cells of a result."""
    found = r.detected or []
    return [";".join(d.label for d in found), ";".join(f"{d.confidence:.6g}" for d in found)]


class ResultsFile:
    """A results file being written (a context manager); ``append``: after the results it holds (``--resume``);
    ``decides``: the classifier makes decisions (a CSV then has the ``detected`` and ``confidences`` columns)."""

    def __init__(self, path: str | Path, classes: list[str], append: bool = False, decides: bool = False) -> None:
        self.path = Path(path)
        self.classes, self.decides = list(classes), decides
        head = HEAD + (DECIDED if decides else []) + [f"score:{c}" for c in self.classes]
        append = append and self.path.is_file() and self.path.stat().st_size > 0
        if append:
            self._check_classes(_complete_lines(self.path), head)
            _drop_cut_line(self.path)
        # OSError (unwritable): the runner's exit 2
        self._file = self.path.open("a" if append else "w", encoding="utf-8", newline="")
        self._csv = None
        if self.path.suffix == ".csv":
            self._csv = csv.writer(self._file)
            if not append:
                self._csv.writerow(head)
                self._file.flush()

    def _check_classes(self, lines: list[str], head: list[str]) -> None:
        """ConfigError when the file was written with other classes than this run's (its columns would lie)."""
        if self.path.suffix == ".csv":
            same = next(csv.reader(lines[:1]), []) == head
        else:
            scored = [e["class_scores"] for e in _entries(lines) or [] if e.get("class_scores")]
            same = not scored or list(scored[0]) == self.classes
        if not same:
            raise ConfigError(
                f"--output {self.path} holds results for other classes than this run's {len(self.classes)}: "
                "--resume needs the same classes and classifier; pass --overwrite to start over, or write to another "
                "file"
            )

    def write(self, r: VideoResult) -> None:
        scores = [] if r.logits is None else [float(v) for v in r.logits.tolist()]
        if self._csv is None:
            by_class = dict(zip(self.classes, scores, strict=True)) if scores else {}
            self._file.write(json.dumps({**r.to_dict(), "class_scores": by_class}) + "\n")
        else:
            self._csv.writerow(
                [
                    r.source,
                    ";".join(r.labels),
                    ";".join(f"{s:.6g}" for s in r.scores),
                    ";".join(f"{p:.6g}" for p in r.probabilities),
                    "" if r.error is None else type(r.error).__name__,
                    "" if r.error is None else str(r.error),
                    r.decode_backend or "",
                    *(_decided(r) if self.decides else []),
                    *(f"{s:.6g}" for s in scores),
                ]
            )
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
