"""Delivering events (:mod:`stdd_fast.events`) where they are wanted, without losing any and without slowing inference.

Sinks: :class:`JsonlSink` (stdout or a file), :class:`CallbackSink` (a Python function),
:class:`WebhookSink` (an HTTP POST per event, signed, retried, spooled to disk); :func:`open_sink`
picks one from a string (``-``, a path, a URL). Each one:

* takes ``send(event)`` without waiting on the receiver (a bounded queue, one worker thread);
* delivers in the order events were sent, one at a time;
* counts everything (:class:`DeliveryStats`: queued, delivered, retried, spooled, redelivered,
  recovered, dropped, failed, pending) and says every loss in a :class:`DeliveryWarning`;
* returns from ``close(timeout)`` within the timeout with the final counts.

The webhook adds at-least-once delivery across outages and restarts (the spool), bounded memory
and disk, and an HMAC-SHA256 signature a receiver checks with :func:`verify_signature`. Events carry
stable ids: a receiver deduplicates redeliveries by ``(id, kind)``. Bodies are our schema or an
NVIDIA VSS incident (:class:`EventFormat`). Torch-free; the standard library only.
"""

from stdd_fast.delivery.base import Sink
from stdd_fast.delivery.callback import CallbackSink
from stdd_fast.delivery.formats import FORMATS, EventFormat
from stdd_fast.delivery.jsonl import JsonlSink
from stdd_fast.delivery.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from stdd_fast.delivery.stats import DeliveryStats, DeliveryWarning
from stdd_fast.delivery.targets import open_sink
from stdd_fast.delivery.webhook import SECRET_ENV, WebhookConfig, WebhookSink

__all__ = [
    "FORMATS",
    "SECRET_ENV",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "CallbackSink",
    "DeliveryStats",
    "DeliveryWarning",
    "EventFormat",
    "JsonlSink",
    "Sink",
    "WebhookConfig",
    "WebhookSink",
    "open_sink",
    "verify_signature",
]
