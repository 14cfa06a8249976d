"""What an event looks like on the wire: our schema (``"stdd"``) or an NVIDIA VSS incident (``"vss"``).

A sink renders each event once, when it is sent, and keeps those bytes: a redelivery (from the spool,
after a restart too) sends exactly the same body, so a receiver may hash it or compare it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from stdd_fast.checks import check_choice
from stdd_fast.delivery.vss import estimate_origin, vss_incident
from stdd_fast.errors import ConfigError
from stdd_fast.events import Event

FORMATS = ("stdd", "vss")


@dataclass(frozen=True)
class EventFormat:
    """How events are written.

    name: ``"stdd"`` (``Event.to_json``: the ``stdd_fast.event/1`` schema) or ``"vss"`` (an ``nv.Incident``,
    see :mod:`stdd_fast.delivery.vss`). The VSS options: sensor_id (``sensorId``; None: the event's
    source), place (``place.name``; None: no place), origin (a timezone-aware datetime: the wall-clock
    time of the video's frame 0; None: estimated per source from its first event, right for live streams).
    """

    name: Literal["stdd", "vss"] = "stdd"
    sensor_id: str | None = None
    place: str | None = None
    origin: datetime | None = None
    _origins: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice("event format", self.name, FORMATS)
        vss_only = [n for n in ("sensor_id", "place", "origin") if getattr(self, n) is not None]
        if self.name != "vss" and vss_only:
            raise ConfigError(f"{vss_only} apply to format='vss' only; drop them or set format='vss'")
        if self.origin is not None and (not isinstance(self.origin, datetime) or self.origin.tzinfo is None):
            raise ConfigError(f"origin={self.origin!r}: give a timezone-aware datetime (e.g. with tzinfo=timezone.utc)")

    def render(self, event: Event, sent_at: float) -> bytes:
        """The UTF-8 JSON body of ``event`` (one line: no raw newline); ``sent_at``: Unix time of ``send``."""
        if self.name == "stdd":
            return event.to_json().encode()
        if self.origin is not None:
            origin = self.origin.timestamp()
        else:  # one estimate per source, kept: its events agree on where its media time 0 is
            origin = self._origins.setdefault(event.source, estimate_origin(event, sent_at))
        incident = vss_incident(event, origin, self.sensor_id, self.place)
        return json.dumps(incident, sort_keys=True).encode()
