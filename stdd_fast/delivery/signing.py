"""How a webhook receiver knows a request came from us and was not replayed: HMAC-SHA256 over time and body.

Each POST carries two headers::

    X-Stdd-Timestamp: 1767225600
    X-Stdd-Signature: sha256=<hex>

where ``<hex>`` is ``HMAC-SHA256(secret, f"{timestamp}.".encode() + body).hexdigest()``: the Unix time in
whole seconds, a dot, then the exact body bytes as received (verify before parsing the JSON). A
receiver recomputes it with the shared secret, compares in constant time, and refuses a timestamp
older than a few minutes (replays). Every attempt is signed afresh, so a redelivery from the spool
hours later still carries a current timestamp over the same body. In Python::

    from stdd_fast.delivery import verify_signature
    ok = verify_signature(secret, body, headers["X-Stdd-Timestamp"], headers["X-Stdd-Signature"])
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Stdd-Signature"
TIMESTAMP_HEADER = "X-Stdd-Timestamp"
SCHEME = "sha256="


def signature(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Stdd-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds, as a string)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return SCHEME + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str | bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two headers that sign ``body`` now."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify_signature(
    secret: str | bytes,
    body: bytes,
    timestamp: str,
    received: str,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether ``received`` signs ``body`` at ``timestamp`` with ``secret``, and ``timestamp`` is within
    ``tolerance_s`` seconds of ``now`` (the receiver's clock)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(signature(secret, timestamp, body), received)
