"""Reloading a classifier artifact into a running engine when its file changes on disk (``stdd stream
--watch-classifier``): the vocabulary changes without a restart, never by half a file."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

from stdd_fast.checks import check_number
from stdd_fast.errors import ClassifierError, StddError
from stdd_fast.user_cache import special_kind

_NOTHING_REFUSED = object()


def file_signature(path: str | Path) -> tuple[int, int, int] | None:
    """(size, mtime in ns, inode) of a file, None if it cannot be seen: what tells a changed file."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


class ClassifierWatcher:
    """Reloads a classifier artifact into an engine when the file changes on disk.

    A thread checks the file's signature (size, mtime, inode) every ``interval`` seconds. A change
    is acted on once it has held still for one check, so a file that is still being written is not
    read; the file is then loaded and checked against the model, and swapped in only if both pass
    and the file did not change meanwhile. Anything else is reported (``report``, default stderr)
    and the current classifier stays. The swap is :meth:`Engine.set_classifier`: a window being
    scored keeps the classes it started with, the next one has the new. ``loaded``: the signature
    of the file the engine was built from (taken before it was read, so a change while the engine
    started is not missed).
    """

    def __init__(
        self,
        engine,
        path: str | Path,
        interval: float = 1.0,
        loaded: tuple[int, int, int] | None = None,
        report: Callable[[str], object] | None = None,
    ) -> None:
        check_number("--watch-interval", interval, unit="seconds")
        self.engine, self.path, self.interval = engine, Path(path), float(interval)
        self.report = report or (lambda text: print(text, file=sys.stderr, flush=True))
        self.reloads = 0
        self._loaded = self._seen = loaded if loaded is not None else file_signature(path)
        self._refused: object = _NOTHING_REFUSED  # the signature of a file that failed: reported once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="stdd-watch-classifier")

    def start(self) -> ClassifierWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5.0)

    def _main(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as e:  # a bug must not end the watching silently; the stream goes on either way
                self.report(f"stdd: internal error in --watch-classifier ({type(e).__name__}: {e}); still watching")

    def check(self) -> str | None:
        """One check: "reloaded", "refused", or None (no change, or a change that has not settled yet)."""
        from stdd_fast.classifier import Classifier

        signature = file_signature(self.path)
        settled, self._seen = signature == self._seen, signature
        if signature in (self._loaded, self._refused) or not settled:
            return None
        try:
            kind = special_kind(self.path)
            if kind is not None:  # reading a FIFO would block this thread, a device never end
                raise ClassifierError(f"{self.path} is {kind}, not a classifier file")
            classifier = Classifier.load(self.path)
            if file_signature(self.path) != signature:
                return None  # rewritten while it was read: read it again once it holds still
            self.engine.set_classifier(classifier)
        except StddError as e:  # unreadable, half-written, or built for another model
            self._refused = signature
            why = " ".join(str(e).split())
            self.report(f"stdd: error: --watch-classifier: {why}; still scoring with the previous classes")
            return "refused"
        self._loaded, self._refused = signature, _NOTHING_REFUSED
        self.reloads += 1
        shown = ", ".join(classifier.classes[:5]) + (", ..." if len(classifier.classes) > 5 else "")
        self.report(f"stdd: classifier reloaded from {self.path}: {classifier.num_classes} classes ({shown})")
        return "reloaded"
