"""Events POSTed to a URL, signed, retried, and spooled to disk so that none is lost to an outage or a restart.

Guarantees:

* **Never blocks inference.** ``send`` renders the body and puts it on a bounded memory queue
  (``max_queue``); when the queue is full it moves the queue, then the new event, to the spool (writes to
  the page cache: no ``fsync``, no network). One worker thread does every POST.
* **At least once, in order.** Events are POSTed one at a time in the order they were sent. One that
  is not acknowledged (a 2xx) is written to the spool (:mod:`stdd_fast.delivery.spool`), and so is every
  event behind it; the worker retries the oldest with exponential backoff and jitter until it is
  acknowledged, then goes on. A redelivery sends the same body (rendered once, at ``send``), freshly
  signed; a receiver deduplicates by ``(id, kind)`` (also sent as the ``X-Stdd-Event-Id`` and
  ``X-Stdd-Event-Kind`` headers), since an acknowledgement lost on the way back means a second copy.
* **Across restarts.** What a closed or killed process left in the spool is delivered by the next sink
  on the same ``spool_dir`` before anything sent to it. A killed process loses only the events still in
  memory: while the endpoint answers, the one being POSTed and those queued behind it; while it does
  not, only those sent during the current attempt (at most ``timeout`` seconds' worth, or ``max_queue``).
* **Bounded.** Memory: ``max_queue`` events. Disk: ``max_spool_mib`` of undelivered events; past it the
  oldest are dropped, counted and said. An endpoint that refuses an event for good (400, 413, 415, 422:
  the same body can never succeed) does not block the ones behind it: that event goes to
  ``rejected.jsonl`` in the spool, counted as failed and said. Every other answer is retried.
* **Said, not silent.** A spool that cannot be created is an :class:`~stdd_fast.errors.OutputError` at
  once; one that fails later (a full disk) is a :class:`~stdd_fast.delivery.stats.DeliveryWarning`, the
  events staying in memory (delivered from there in order) until it takes writes again, and those that
  fit nowhere are counted as failed.

Signing: :mod:`stdd_fast.delivery.signing` (the secret from ``secret=`` or ``$STDD_WEBHOOK_SECRET``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from stdd_fast.checks import check_int, check_number
from stdd_fast.delivery.base import CLOSE_TIMEOUT
from stdd_fast.delivery.formats import EventFormat
from stdd_fast.delivery.retry import Backoff
from stdd_fast.delivery.signing import signed_headers
from stdd_fast.delivery.spool import Spool
from stdd_fast.delivery.stats import Counters, DeliveryStats
from stdd_fast.delivery.transport import Response, Transport, parse_url
from stdd_fast.errors import ConfigError
from stdd_fast.events import Event
from stdd_fast.user_cache import cache_root

SECRET_ENV = "STDD_WEBHOOK_SECRET"
PERMANENT = frozenset({400, 413, 415, 422})  # the endpoint refuses this body: sending it again cannot help
OWN_HEADERS = ("content-type", "x-stdd-")  # set by the sink; a header of the same name from headers= is refused


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how events are POSTed.

    url: http(s) endpoint. secret: HMAC key (None: ``$STDD_WEBHOOK_SECRET``; unset too: unsigned).
    spool_dir: the spool folder (None: ``<cache root>/spool/<hash of url>``, see :mod:`stdd_fast.user_cache`).
    max_queue: events held in memory. max_spool_mib: undelivered events kept on disk (MiB; the oldest
    are dropped past it). connect_timeout / timeout: seconds for the connection / the whole request.
    retry_initial / retry_max_delay: the backoff (:class:`~stdd_fast.delivery.retry.Backoff`). headers:
    extra request headers (an ``Authorization`` token). format: the body
    (:class:`~stdd_fast.delivery.formats.EventFormat`).
    """

    url: str
    secret: str | None = field(default=None, repr=False)
    spool_dir: str | Path | None = None
    max_queue: int = 1000
    max_spool_mib: float = 64.0
    connect_timeout: float = 5.0
    timeout: float = 10.0
    retry_initial: float = 0.5
    retry_max_delay: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)
    format: EventFormat = field(default_factory=EventFormat)

    def __post_init__(self) -> None:
        parse_url(self.url)
        secret = self.secret if self.secret is not None else os.environ.get(SECRET_ENV) or None
        if secret is not None and not secret:
            raise ConfigError("secret='': give a non-empty secret, or None for unsigned requests")
        object.__setattr__(self, "secret", secret)
        spool = self.spool_dir or cache_root() / "spool" / hashlib.sha256(self.url.encode()).hexdigest()[:16]
        object.__setattr__(self, "spool_dir", Path(spool))
        object.__setattr__(self, "headers", dict(self.headers))
        clash = [h for h in self.headers if h.lower().startswith(OWN_HEADERS)]
        if clash:
            raise ConfigError(f"headers {clash}: Content-Type and X-Stdd-* are set by the sink; drop them")
        check_int("max_queue", self.max_queue, low=1, hint="events held in memory")
        check_number("max_spool_mib", self.max_spool_mib, unit="MiB")
        check_number("connect_timeout", self.connect_timeout, unit="seconds")
        check_number("timeout", self.timeout, unit="seconds")
        Backoff(self.retry_initial, self.retry_max_delay)
        if not isinstance(self.format, EventFormat):
            raise ConfigError(f"format={self.format!r}: give an EventFormat (e.g. EventFormat('vss'))")

    @property
    def where(self) -> str:
        """The endpoint without credentials or query (what warnings name)."""
        scheme, host, port, path = parse_url(self.url)
        return f"{scheme}://{host}:{port}{path.split('?', 1)[0]}"


class _Item:
    """An event waiting in memory: its key (``<id> <kind>``), rendered body, and spool number once spooled."""

    __slots__ = ("body", "key", "seq")

    def __init__(self, key: str, body: bytes) -> None:
        self.key, self.body, self.seq = key, body, None


class WebhookSink:
    """POSTs each event to ``config.url`` (see the module docstring for the guarantees).

    ``WebhookSink("https://example.com/hook", secret=..., spool_dir=...)`` or ``WebhookSink(WebhookConfig(...))``.
    """

    def __init__(self, config: WebhookConfig | str, **options) -> None:
        if isinstance(config, WebhookConfig) and options:
            raise ConfigError(f"options {sorted(options)} given beside a WebhookConfig: put them in the config")
        self.config = config if isinstance(config, WebhookConfig) else WebhookConfig(config, **options)
        cfg = self.config
        self.spool = Spool(cfg.spool_dir, max(1, int(cfg.max_spool_mib * 2**20)))
        self._transport = Transport(cfg.url, cfg.connect_timeout, cfg.timeout)
        self._backoff, self._rng = Backoff(cfg.retry_initial, cfg.retry_max_delay), random.Random()
        self._counters = Counters(f"webhook {cfg.where}")
        self._counters.add(recovered=self.spool.recovered + self.spool.corrupt)
        self._corrupt_seen = 0
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closing, self._stop_at = False, float("inf")
        with self._cond:
            self._note_corrupt()
        self._thread = threading.Thread(target=self._main, daemon=True, name="stdd-webhook")
        self._thread.start()

    # -- the caller's side -----------------------------------------------------------------------

    def send(self, event: Event) -> None:
        item = _Item(f"{event.id} {event.kind}", self.config.format.render(event, time.time()))
        with self._cond:
            self._counters.add(queued=1)
            if self._closing:
                self._counters.add(dropped=1)
                self._counters.error("closed", "an event was sent after close(): dropped")
            elif len(self._queue) < self.config.max_queue:
                self._queue.append(item)
                self._counters.peak(len(self._queue))
            elif not self._spill(item):
                self._counters.add(failed=1)
                self._counters.error("nowhere", "the memory queue is full and the spool refuses writes: events lost")
            self._cond.notify()

    def stats(self) -> DeliveryStats:
        with self._cond:
            return self._counters.snapshot(len(self._queue) + self.spool.pending)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> DeliveryStats:
        """Deliver what can be delivered within ``timeout`` seconds; the rest stays in the spool for the next
        sink on it (said in a :class:`~stdd_fast.delivery.stats.DeliveryWarning`). Returns the final counts."""
        check_number("timeout", timeout, strict=False, unit="seconds")
        end = time.monotonic() + timeout
        with self._cond:
            first = not self._closing
            if first:
                self._closing = True
                self._stop_at = end - min(1.0, timeout / 5)  # the last moments are kept to write the spool
                self._cond.notify_all()
        self._thread.join(max(0.0, self._stop_at - time.monotonic()))
        self._transport.abort()  # a request still in progress is cut short: its event stays spooled
        self._thread.join(max(0.0, end - time.monotonic()))
        if self._thread.is_alive():  # still connecting: keep its events on disk from here
            with self._cond:
                self._spill()
            self.spool.sync()
        else:
            self.spool.close()
        stats = self.stats()
        if first:
            self._counters.say_losses(stats, f"kept in the spool {self.config.spool_dir} for the next sink on it")
        return stats

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the worker's side -----------------------------------------------------------------------

    def _spill(self, extra: _Item | None = None) -> bool:
        """Move the memory queue, then ``extra``, to the spool, in order (the sink's lock is held). False when
        the spool refuses writes: everything stays where it was, said once."""
        items = [*self._queue, *([extra] if extra else [])]
        if not items:
            return True
        try:
            seqs, dropped = self.spool.append([(item.key, item.body) for item in items])
        except OSError as e:
            self._counters.error(
                "spool",
                f"cannot write the spool {self.config.spool_dir} ({e.strerror or e}): events are held in memory "
                f"only (a restart loses them); free disk space or give spool_dir= a writable folder",
            )
            return False
        for item, seq in zip(items, seqs, strict=True):
            item.seq = seq
        self._queue.clear()
        self._counters.add(spooled=len(items), dropped=dropped)
        if dropped:
            self._counters.error(
                "spool full",
                f"the spool {self.config.spool_dir} is full ({self.config.max_spool_mib:g} MiB): the oldest "
                "undelivered events were dropped; raise max_spool_mib or bring the endpoint back",
            )
        return True

    def _note_corrupt(self) -> None:
        """Count spool records found damaged on disk as failed (they cannot be sent)."""
        new, self._corrupt_seen = self.spool.corrupt - self._corrupt_seen, self.spool.corrupt
        if new:
            self._counters.add(failed=new)
            self._counters.error("corrupt", f"{new} damaged records in the spool {self.config.spool_dir} skipped")

    def _main(self) -> None:
        try:
            self._work()
        except Exception as e:  # a bug must not end delivery silently: said, and the spool keeps the events
            self._counters.error(
                "worker",
                f"the delivery worker stopped ({type(e).__name__}: {e}); undelivered "
                f"events stay in the spool {self.config.spool_dir} for the next sink",
            )
            raise

    def _work(self) -> None:
        failures = 0  # failed attempts in a row at the oldest event
        while True:
            with self._cond:
                if self._queue and (self.spool.pending or failures):
                    self._spill()  # something is behind: new events wait on disk, not in memory
                while not (self._queue or self.spool.pending or self._closing):
                    self._cond.wait()
                if self._closing and (time.monotonic() >= self._stop_at or not (self._queue or self.spool.pending)):
                    break
                item = None if self.spool.pending else self._queue[0]
            try:
                failures = self._attempt(item, failures)
            except OSError as e:  # the spool's disk failed under us: said, then tried again after a pause
                self._counters.error("spool io", f"the spool {self.config.spool_dir} failed ({e}); retrying")
                failures += 1
                self._wait(self._backoff.delay(failures, self._rng))
        with self._cond:
            self._spill()
        self.spool.sync()

    def _attempt(self, item: _Item | None, failures: int) -> int:
        """POST the oldest event (``item`` from memory, else the spool's head); the failures in a row after it."""
        self.spool.sync()
        record = self.spool.head() if item is None else None
        if item is None and record is None:  # its last records were damaged on disk
            with self._cond:
                self._note_corrupt()
            return failures
        key, body = (item.key, item.body) if item is not None else (record.key, record.body)
        response = self._post(key, body)
        with self._cond:
            failures = self._settle(item, record.seq if record else None, key, body, response, failures)
        if failures:
            self._wait(self._backoff.delay(failures, self._rng, response.retry_after if response else None))
        return failures

    def _post(self, key: str, body: bytes) -> Response | None:
        event_id, kind = key.rsplit(" ", 1)
        headers = {"Content-Type": "application/json", "X-Stdd-Event-Id": quote(event_id), "X-Stdd-Event-Kind": kind}
        headers.update(self.config.headers)
        if self.config.secret is not None:
            headers.update(signed_headers(self.config.secret, body))
        try:
            return self._transport.post(body, headers)
        except (OSError, http.client.HTTPException) as e:
            self._counters.error(type(e).__name__, f"POST failed ({type(e).__name__}: {e}); retrying with backoff")
            return None

    def _settle(self, item: _Item | None, seq: int | None, key: str, body: bytes, response, failures: int) -> int:
        """Count the outcome of one attempt (the sink's lock is held); the failures in a row after it."""
        self._note_corrupt()
        seq = item.seq if item is not None else seq  # spilled while in flight: it is the spool's head now
        gone = seq is not None and getattr(self.spool.head(), "seq", None) != seq  # dropped by the bound meanwhile
        status = response.status if response is not None else None
        if status is not None and 200 <= status < 300:
            if seq is None:
                self._queue.popleft()
            elif gone:
                self._counters.add(dropped=-1)  # counted as dropped, yet it arrived
            else:
                self.spool.done(seq)
            self._counters.add(delivered=1, redelivered=int(seq is not None))
            return 0
        if status in PERMANENT:
            if seq is None:
                self._queue.popleft()
            elif not gone:
                self.spool.done(seq)
            if not gone:
                kept = self.spool.keep_rejected(key, body, f"HTTP {status}")
                where = f"kept in {self.config.spool_dir / 'rejected.jsonl'}" if kept else "not kept (spool unwritable)"
                self._counters.add(failed=1)
                said = f"the endpoint refused an event for good (HTTP {status}): {where}"
                self._counters.error(f"http {status}", said)
            return 0
        if status is not None:
            hint = "; check the secret and headers=" if status in (401, 403) else ""
            self._counters.error(f"http {status}", f"the endpoint answered HTTP {status}; retrying with backoff{hint}")
        self._counters.add(retried=1)
        return failures + 1

    def _wait(self, delay: float) -> None:
        """Wait out a backoff; events sent meanwhile go to the spool (and to disk) at once. Ends early at close's
        deadline."""
        until = time.monotonic() + delay
        while True:
            with self._cond:
                spilled = self._spill()
            self.spool.sync()
            with self._cond:
                remaining = min(until, self._stop_at) - time.monotonic()
                if remaining <= 0:
                    return
                if not (spilled and self._queue):  # else events came in while syncing: spill them first
                    self._cond.wait(remaining)
