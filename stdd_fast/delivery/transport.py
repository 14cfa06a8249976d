"""One HTTP POST with hard time limits, that another thread can cut short: the webhook's only network code.

Standard library only (``http.client``), so webhooks work without extras. Each POST opens its own
connection (events are rare; a fresh connection never inherits a half-dead one) and is bounded twice:
``connect_timeout`` for the TCP (and TLS) handshake, ``timeout`` for the whole request from the first
byte sent to the response's headers, enforced by a watchdog that shuts the socket down, so a server
that accepts and never answers, or answers a byte a minute, costs at most ``timeout``. :meth:`abort`
does the same on demand (``close()`` of the sink uses it).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from stdd_fast.errors import ConfigError

MAX_RESPONSE_BYTES = 1 << 16  # the body of a response is read (then dropped) up to this, never more


@dataclass(frozen=True)
class Response:
    """What the endpoint answered: the status, and ``Retry-After`` in seconds when it gave one."""

    status: int
    retry_after: float | None = None


def parse_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path?query)`` of an http(s) URL; ConfigError naming it when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"webhook url={url!r}: give an http:// or https:// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise ConfigError(f"webhook url={url!r}: {e}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (only the delta form: a date is ignored, the backoff decides then)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class Transport:
    """POSTs to one URL (see the module docstring for the limits)."""

    def __init__(self, url: str, connect_timeout: float, timeout: float) -> None:
        self.scheme, self.host, self.port, self.path = parse_url(url)
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> Response:
        """POST ``body``; the response's status. OSError / HTTPException when no answer came in time."""
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()
            conn.sock.settimeout(self.timeout)
            with self._lock:
                self._sock = conn.sock
            watchdog = threading.Timer(self.timeout, self.abort, args=(conn.sock,))
            watchdog.daemon = True
            watchdog.start()
            try:
                conn.request("POST", self.path, body=body, headers={**headers, "Connection": "close"})
                response = conn.getresponse()
                response.read(MAX_RESPONSE_BYTES)
            finally:
                watchdog.cancel()
            return Response(response.status, _retry_after(response.getheader("Retry-After")))
        finally:
            with self._lock:
                self._sock = None
            conn.close()

    def abort(self, only: socket.socket | None = None) -> None:
        """Cut the request in progress short (it fails with an OSError); nothing when there is none.
        only: that request's socket (a watchdog firing late never cuts the next request)."""
        with self._lock:
            if self._sock is not None and only in (None, self._sock):
                with contextlib.suppress(OSError):  # already closed by the other side: failing on its own
                    self._sock.shutdown(socket.SHUT_RDWR)
