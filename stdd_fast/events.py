"""Events: an action that started (and later ended) in a video or stream, as they are delivered.

The segmenter (:mod:`stdd_fast.timeline`) turns window decisions into segments; online, each
segment becomes two events: ``"open"`` when its class turns on, ``"close"`` when it turns off (the
close carries the whole segment). An event's ``id`` is the same for both and stable across runs and
restarts (derived from the source, the class and the first window), so a receiver deduplicates
redeliveries by ``(id, kind)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields

EVENT_SCHEMA = "stdd_fast.event/1"
EVENT_KINDS = ("open", "close")


@dataclass(frozen=True)
class Evidence:
    """One window that backs an event: its span (frames, seconds) and the class's confidence there."""

    window: int
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    confidence: float


@dataclass(frozen=True)
class Event:
    """An action's start (``kind="open"``) or its end (``"close"``, with the whole segment).

    source: the stream or file; label: the class; start_* / end_*: the segment's span (``end_*`` None
    while open: the open event knows only the windows seen so far, in ``evidence``); peak_confidence /
    mean_confidence: over its windows; windows: how many; evidence: the windows (the last few of a long
    segment: :data:`EVIDENCE_KEPT`); delay_s: seconds from the end of the window that decided it to the
    event (how late it is, bounded by the segmenter's settings); sequence: its number among the events
    of its source, from 0 (the order a sink delivers them in).
    """

    id: str
    kind: str
    source: str
    label: str
    start_frame: int
    start_time: float
    end_frame: int | None
    end_time: float | None
    peak_confidence: float
    mean_confidence: float
    windows: int
    sequence: int
    delay_s: float = 0.0
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """Our JSON schema (``schema``: :data:`EVENT_SCHEMA`); field by field (``asdict`` deep-copies: slower)."""
        fields = {name: getattr(self, name) for name in _FIELDS}
        return {"schema": EVENT_SCHEMA, **fields, "evidence": [e.__dict__.copy() for e in self.evidence]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


_FIELDS = tuple(f.name for f in fields(Event) if f.name != "evidence")
EVIDENCE_KEPT = 16


def event_id(source: str, label: str, start_frame: int) -> str:
    """The stable id of the segment of ``label`` whose first window starts at ``start_frame`` of ``source``."""
    return hashlib.sha256(f"{source}\x00{label}\x00{start_frame}".encode()).hexdigest()[:20]
