"""How long to wait before trying an event again: exponential backoff with jitter, bounded."""

from __future__ import annotations

import random
from dataclasses import dataclass

from stdd_fast.checks import check_number


@dataclass(frozen=True)
class Backoff:
    """Waits ``initial * 2**(n-1)`` seconds after the n-th failure in a row, capped at ``max_delay``.

    "Equal jitter": the wait is drawn in [half, all] of that, so many senders that failed together do
    not retry together, and none retries sooner than half the schedule. A ``Retry-After`` from the
    endpoint lengthens the wait (never past ``max_delay``).
    """

    initial: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        check_number("retry_initial", self.initial, unit="seconds")
        check_number("retry_max_delay", self.max_delay, low=self.initial, strict=False, unit="seconds")

    def delay(self, failures: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` (>= 1) failures in a row."""
        step = min(self.max_delay, self.initial * 2 ** min(failures - 1, 62))
        wait = step / 2 + rng.uniform(0, step / 2)
        return max(wait, min(retry_after, self.max_delay)) if retry_after is not None else wait
