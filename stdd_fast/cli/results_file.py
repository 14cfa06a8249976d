"""``stdd classify --output``: every result as it completes, one line each, failures and all class scores included.

``.jsonl``: one JSON object per video (``VideoResult.to_dict()`` plus ``class_scores`` {class: logit}).
``.csv``: ``video, labels, scores, probabilities, error_type, error, decode_backend`` (lists joined by
``;``), then one ``score:<class>`` column per class. Each line is flushed when written, so an
interrupted run keeps every video it finished.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from stdd_fast.errors import ConfigError
from stdd_fast.results import VideoResult

FORMATS = (".jsonl", ".csv")


def check_output(path: str | Path) -> Path:
    """A results path that can be written: a .jsonl or .csv file, not a folder (checked before any work)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder; name a file such as {path / 'results.jsonl'}")
    if path.suffix not in FORMATS:
        raise ConfigError(f"--output {path}: name it results.jsonl or results.csv")
    return path


class ResultsFile:
    """A results file being written (a context manager)."""

    def __init__(self, path: str | Path, classes: list[str]) -> None:
        self.path = check_output(path)
        self.classes = list(classes)
        self._file = self.path.open("w", encoding="utf-8", newline="")  # OSError (unwritable): the runner's exit 2
        self._csv = None
        if self.path.suffix == ".csv":
            self._csv = csv.writer(self._file)
            head = ["video", "labels", "scores", "probabilities", "error_type", "error", "decode_backend"]
            self._csv.writerow(head + [f"score:{c}" for c in self.classes])

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
