"""The sink contract, and the queue-and-worker base of the sinks that write locally (JSONL, a callback).

A sink takes events from the inference loop and delivers them somewhere. The contract:

* ``send(event)`` never waits on the receiver: it puts the event on a bounded in-memory queue (or,
  for a webhook, spills to its spool) and returns after a bounded, small amount of work;
* events are delivered one at a time by one worker thread, in the order they were sent;
* ``close(timeout)`` stops taking events, delivers what it can, and returns within ``timeout`` seconds
  with the final :class:`~stdd_fast.delivery.stats.DeliveryStats`;
* ``stats()`` is a snapshot of the counts at any time; nothing is dropped without being counted and
  said (:class:`~stdd_fast.delivery.stats.DeliveryWarning`).

Sinks are context managers: ``with sink: ...`` closes them (with the default timeout) on the way out.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol, runtime_checkable

from stdd_fast.checks import check_int, check_number
from stdd_fast.delivery.stats import Counters, DeliveryStats
from stdd_fast.events import Event

CLOSE_TIMEOUT = 10.0  # seconds close() waits by default


@runtime_checkable
class Sink(Protocol):
    """Where events go (see the module docstring for the guarantees)."""

    def send(self, event: Event) -> None: ...

    def close(self, timeout: float = CLOSE_TIMEOUT) -> DeliveryStats: ...

    def stats(self) -> DeliveryStats: ...


class QueuedSink:
    """A bounded queue of events and one worker thread that hands them, in order, to :meth:`_deliver`.

    A full queue drops the new event (counted, said once): the receiver is slower than the events.
    An exception from :meth:`_deliver` counts the event as failed (said once per exception type) and
    the worker goes on with the next one.
    """

    def __init__(self, name: str, max_queue: int) -> None:
        self.max_queue = check_int("max_queue", max_queue, low=1, hint="events held in memory")
        self._counters = Counters(name)
        self._queue: deque[tuple[Event, float]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._stop_at = float("inf")
        self._in_flight = 0
        self._thread = threading.Thread(target=self._work, daemon=True, name=f"stdd-{name}")
        self._thread.start()

    def send(self, event: Event) -> None:
        with self._cond:
            self._counters.add(queued=1)
            if self._closing:
                self._counters.add(dropped=1)
                self._counters.error("closed", "an event was sent after close(): dropped")
                return
            if len(self._queue) >= self.max_queue:
                self._counters.add(dropped=1)
                self._counters.error("full", f"{self.max_queue} events waiting: the receiver is slower, events dropped")
                return
            self._queue.append((event, time.time()))
            self._counters.peak(len(self._queue))
            self._cond.notify()

    def _deliver(self, event: Event, sent_at: float) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Release what the sink holds (a file), once the worker has stopped."""

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or time.monotonic() >= self._stop_at:
                    return
                event, sent_at = self._queue.popleft()
                self._in_flight = 1
            try:
                self._deliver(event, sent_at)
                self._counters.add(delivered=1)
            except Exception as e:  # a receiver's failure is counted, never the end of the stream
                self._counters.add(failed=1)
                self._counters.error(type(e).__name__, f"an event could not be delivered ({type(e).__name__}: {e})")
            finally:
                with self._cond:
                    self._in_flight = 0

    def stats(self) -> DeliveryStats:
        with self._cond:
            pending = len(self._queue) + self._in_flight
        return self._counters.snapshot(pending)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> DeliveryStats:
        """Deliver what is queued within ``timeout`` seconds; what is left then is dropped (counted, said)."""
        check_number("timeout", timeout, strict=False, unit="seconds")
        with self._cond:
            first = not self._closing
            if first:
                self._closing = True
                self._stop_at = time.monotonic() + timeout
                self._cond.notify_all()
            wait = max(0.0, self._stop_at - time.monotonic())
        self._thread.join(wait)
        with self._cond:
            self._counters.add(dropped=len(self._queue))
            self._queue.clear()
        if not self._thread.is_alive():
            self._finish()
        stats = self.stats()
        if first:
            self._counters.say_losses(stats, "the receiver was still busy with one at close")
        return stats

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
