"""Events handed to a Python function, on the sink's own thread.

The function runs on the worker thread, never the inference loop's, so a slow function delays only the
events behind it (held in the bounded queue). An exception it raises counts the event as failed, is
said once per exception type (:class:`~stdd_fast.delivery.stats.DeliveryWarning`) and never ends the
stream: the next event is handed over as usual.
"""

from __future__ import annotations

from collections.abc import Callable

from stdd_fast.delivery.base import QueuedSink
from stdd_fast.errors import ConfigError
from stdd_fast.events import Event


class CallbackSink(QueuedSink):
    """Calls ``fn(event)`` for each event, in the order they were sent. max_queue: events held while it runs."""

    def __init__(self, fn: Callable[[Event], object], max_queue: int = 10_000) -> None:
        if not callable(fn):
            raise ConfigError(f"fn={fn!r}: give a function that takes one Event")
        self.fn = fn
        super().__init__(f"events to {getattr(fn, '__qualname__', type(fn).__name__)}", max_queue)

    def _deliver(self, event: Event, sent_at: float) -> None:
        self.fn(event)
