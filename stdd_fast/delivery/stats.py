"""What a sink did with the events it was given: one set of counts, kept under a lock, read as a frozen snapshot.

Every event a sink accepts ends in exactly one of four places, so the counts always add up::

    queued + recovered == delivered + dropped + failed + pending

``queued``: given to ``send()``. ``recovered``: found in the spool when the sink started (left by a
process that stopped before delivering them). ``delivered``: acknowledged (a 2xx from a webhook, a line
written, the callback returned). ``dropped``: discarded by a bound (the spool full: oldest first; the
memory queue full, for sinks without a spool; sent after ``close``). ``failed``: will never be delivered
(refused by the endpoint for good, a copy kept in the spool's ``rejected.jsonl``; the callback raised; a
write failed; memory full and the spool refusing writes; damaged on disk). ``pending``: still on the
way, in memory or in the spool.

Two more count attempts, not events: ``retried`` (attempts that failed and will be tried again) and
``spooled`` (events written to the spool; ``redelivered``: delivered from it). Drops and failures are
also said as a :class:`DeliveryWarning` the first time each kind happens and again in the summary at
``close``: nothing is lost without being counted and said.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, fields


class DeliveryWarning(RuntimeWarning):
    """Events dropped, failed or left undelivered, or a spool that cannot be written: said, never silent."""


@dataclass(frozen=True)
class DeliveryStats:
    """A snapshot of a sink's counts (see the module docstring for what each one counts).

    queue_peak: the most events held in memory at once (never above the sink's ``max_queue``);
    last_error: the last error met (an endpoint's status, an exception), or None.
    """

    queued: int = 0
    delivered: int = 0
    retried: int = 0
    spooled: int = 0
    redelivered: int = 0
    recovered: int = 0
    dropped: int = 0
    failed: int = 0
    pending: int = 0
    queue_peak: int = 0
    last_error: str | None = None

    @property
    def lost(self) -> int:
        """Events that will never reach the receiver: dropped + failed."""
        return self.dropped + self.failed

    def summary(self) -> str:
        """One line with every count, e.g. ``queued=10 delivered=10 retried=3 ... pending=0``."""
        counts = " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name != "last_error")
        return counts + (f" last_error={self.last_error!r}" if self.last_error else "")


class Counters:
    """The live counts of one sink, safe to bump from the caller's thread and the worker's."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._counts = {f.name: 0 for f in fields(DeliveryStats) if f.name not in ("pending", "last_error")}
        self._last_error: str | None = None
        self._warned: set[str] = set()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                self._counts[name] += n

    def peak(self, held: int) -> None:
        """Note that ``held`` events are in memory now (for ``queue_peak``)."""
        with self._lock:
            self._counts["queue_peak"] = max(self._counts["queue_peak"], held)

    def error(self, what: str, message: str) -> None:
        """Remember ``message`` as the last error; a :class:`DeliveryWarning` the first time ``what`` happens."""
        with self._lock:
            self._last_error = message
            first = what not in self._warned
            self._warned.add(what)
        if first:
            warnings.warn(f"{self.name}: {message}", DeliveryWarning, stacklevel=2)

    def snapshot(self, pending: int) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(**self._counts, pending=pending, last_error=self._last_error)

    def say_losses(self, stats: DeliveryStats, where: str) -> None:
        """At close: a :class:`DeliveryWarning` with the whole summary when anything was lost or is left behind."""
        if stats.lost or stats.pending:
            left = f"; {stats.pending} not delivered yet, {where}" if stats.pending else ""
            lost = f"{stats.dropped} dropped, {stats.failed} failed" if stats.lost else "nothing lost"
            warnings.warn(
                f"{self.name}: {lost}{left} ({stats.summary()})",
                DeliveryWarning,
                stacklevel=3,
            )
