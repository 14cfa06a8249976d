"""Progress of a running corpus job, counted from the Parquet files its run has finished writing.

Counting written rows (not rows handed to a writer) means the figures shown are the ones a kill
would keep, and a batch Ray retried after a worker died is not counted twice.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from stdd_fast.batch.output import count_rows
from stdd_fast.terminal import progress_bar, stderr_is_terminal


class Progress:
    """A thread that shows ``done / total videos, failed, videos/s`` while a run writes into ``run_dir``.

    ``show``: True: a tqdm bar on a terminal, elsewhere a plain line (at most every ``every`` seconds);
    None: the bar on a terminal, nothing elsewhere; False: nothing. A context manager around the run.
    """

    def __init__(self, run_dir: Path, total: int, show: bool | None, every: float = 2.0) -> None:
        self.run_dir, self.total, self.every = run_dir, total, every
        terminal = stderr_is_terminal()
        self.bar_wanted, self.lines_wanted = show is not False and terminal, show is True and not terminal
        self.done = self.failed = 0
        self._counted: dict[Path, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stdd-batch-progress", daemon=True)
        self._bar = None
        self.start = 0.0  # set when the run starts

    def __enter__(self) -> Progress:
        if self.bar_wanted:
            self._bar = progress_bar(self.total, True, "stdd batch", "video")
        self.start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
        if self._bar is not None:
            self._bar.close()

    def _poll(self) -> bool:
        """Count the files finished since the last poll; True when the counts moved."""
        moved = False
        for file in sorted(self.run_dir.glob("*.parquet")) if self.run_dir.is_dir() else ():
            if file not in self._counted and (counts := count_rows(file)) is not None:
                self._counted[file] = counts
                self.done, self.failed, moved = self.done + counts[0], self.failed + counts[1], True
                if self._bar is not None:
                    self._bar.update(counts[0])
                    self._bar.set_postfix(failed=self.failed, refresh=False)
        return moved

    def _watch(self) -> None:
        shown = float("-inf")
        while not self._stop.wait(0.25):
            moved = self._poll()
            now = time.perf_counter()
            if moved and self.lines_wanted and now - shown >= self.every:
                rate = self.done / max(now - self.start, 1e-9)
                print(
                    f"stdd batch: {self.done}/{self.total} videos done, {self.failed} failed, {rate:.2f} videos/s",
                    file=sys.stderr,
                    flush=True,
                )
                shown = now
