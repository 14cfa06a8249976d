"""Events as JSON lines, on stdout or appended to a file, one line per event, flushed per event.

The worker thread does the writing, so a slow reader of stdout (a paused terminal, a full pipe) never
stalls inference: events wait in the bounded queue, and past it are dropped, counted and said. A file
is opened when the sink is made, so a path that cannot take lines fails at once, with a typed
:class:`~stdd_fast.errors.OutputError`: a FIFO, device or socket (or a link to one, such as
``/dev/zero``), a folder, a missing folder, no permission.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import TextIO

from stdd_fast.delivery.base import QueuedSink
from stdd_fast.delivery.formats import EventFormat
from stdd_fast.errors import OutputError
from stdd_fast.events import Event
from stdd_fast.user_cache import check_not_special


def open_for_append(path: Path, what: str) -> TextIO:
    """``path`` opened to append UTF-8 text, created if missing; OutputError when it is not a regular file
    that can be written. Never blocks (a FIFO is refused, not opened for a reader that never comes)."""
    check_not_special(path, what)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
    except OSError as e:
        raise OutputError(f"{what} {path} cannot be written ({e.strerror or e}): name a writable file") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutputError(f"{what} {path} is not a regular file: name a regular file (or a new path)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


class JsonlSink(QueuedSink):
    """JSON lines to ``path`` (appended), or to ``stream`` (default: standard output) when ``path`` is None.

    format: an :class:`~stdd_fast.delivery.formats.EventFormat` (default: our schema); max_queue: events
    held while the writer is behind.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        stream: TextIO | None = None,
        format: EventFormat | None = None,
        max_queue: int = 10_000,
    ) -> None:
        if path is not None and stream is not None:
            raise OutputError("give path= or stream=, not both")
        self.format = format or EventFormat()
        self.path = None if path is None else Path(path)
        self._out = open_for_append(self.path, "events file") if self.path is not None else stream or sys.stdout
        super().__init__(f"events to {self.path or 'stdout'}", max_queue)

    def _deliver(self, event: Event, sent_at: float) -> None:
        self._out.write(self.format.render(event, sent_at).decode() + "\n")
        self._out.flush()

    def _finish(self) -> None:
        if self.path is not None:
            self._out.close()
