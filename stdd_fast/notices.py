"""One line on stderr before slow one-time work: what is about to happen, and roughly how long it takes.

The first ``Engine(...)`` or ``stdd classify`` on a machine builds the encoder graph and measures the
two CPU backends (over a minute with ViT-B/16 on 2 cores); said first, the wait is not mistaken for a
hang. A notice is escaped like every other line (:func:`stdd_fast.terminal.escape`) and names who
speaks: ``stdd_fast`` in Python, the command's name under :func:`stdd_fast.cli.runner.run`.

On by default. ``STDD_QUIET=1`` turns notices off for the process; :func:`quiet` for a block of
code (``Engine(..., quiet=True)`` uses it). Both are context-local, so a quiet engine built on one
thread does not silence another's.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar

from stdd_fast.terminal import escape

QUIET_ENV = "STDD_QUIET"
_QUIET: ContextVar[bool] = ContextVar("stdd_fast_quiet", default=False)
_SPEAKER: ContextVar[str] = ContextVar("stdd_fast_speaker", default="stdd_fast")


def quiet_now() -> bool:
    """Whether notices are off here (:func:`quiet`, or ``STDD_QUIET`` set to anything but ``0``)."""
    return _QUIET.get() or os.environ.get(QUIET_ENV, "0").strip() not in ("", "0")


def notice(message: str) -> None:
    """``<speaker>: <message>`` on stderr, unless notices are off."""
    if not quiet_now():
        print(f"{_SPEAKER.get()}: {escape(message)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No notices inside the block (``on=False``: the block keeps the current setting)."""
    token = _QUIET.set(_QUIET.get() or on)
    try:
        yield
    finally:
        _QUIET.reset(token)


@contextlib.contextmanager
def speaking_as(name: str) -> Iterator[None]:
    """Notices inside the block are prefixed ``name:`` (a command's name)."""
    token = _SPEAKER.set(name)
    try:
        yield
    finally:
        _SPEAKER.reset(token)


def about(seconds: float) -> str:
    """A rough duration for a notice: "a few seconds", "about 40 s", "about 3 min"."""
    if seconds < 10:
        return "a few seconds"
    if seconds < 90:
        return f"about {round(seconds, -1):.0f} s"
    return f"about {round(seconds / 60):.0f} min"
