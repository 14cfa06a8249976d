"""Events as incidents of NVIDIA's Video Search and Summarization (VSS) blueprint, for receivers built for it.

VSS moves incidents as the Metropolis ``nv.Incident`` record (JSON in Elasticsearch, in the
``mdx-incidents`` / ``mdx-vlm-incidents`` Kafka topics, and in the body its Alert Microservice POSTs
to a webhook such as its Slack relay). The field names below are the ones VSS's own code reads and
writes (source, Apache-2.0: https://github.com/NVIDIA-AI-Blueprints/video-search-and-summarization,
``services/alert/src/realtime/services/incident_service.py`` (``Id``, ``sensorId``, ``timestamp``,
``end``, ``category``, ``info`` as a map of strings) and ``skills/alerts/alert-notify-slack/`` (the
webhook relay: also ``place.name``); the incidents API reference is
https://docs.nvidia.com/vss/system-components/middleware/api-gateway-mcp/video-analytics-api/video-analytics-api-reference/incidents/controller-incidents-get-incidents).
Only fields whose meaning is documented there are filled; nothing is invented.

================  ====================================================================================
VSS field         from the event
================  ====================================================================================
``Id``            ``<event id>-<kind>``: one document per message (an open and its close are two, as
                  VSS's real-time path writes one per positive chunk); stable across redeliveries
``sensorId``      ``sensor_id=`` when given, else the event's ``source``
``timestamp``     wall-clock UTC (ISO 8601, ms, ``Z``) of the segment's start
``end``           wall-clock UTC of the segment's end (close events only: an open segment has none)
``category``      the class (``label``)
``place``         ``{"name": place}`` when ``place=`` is given
``info``          strings, as ``nv.Incident`` keeps them: ``kind``, ``segmentId`` (the event id,
                  shared by open and close), ``source``, ``startFrame``/``endFrame``,
                  ``startSeconds``/``endSeconds`` (media time), ``peakConfidence``,
                  ``meanConfidence``, ``windows``, ``sequence``, ``delaySeconds``, ``schema``
================  ====================================================================================

No ``info.verdict``: VSS sets it when a vision-language model has verified an alert, which these
events have not been. Wall-clock times are media time + the wall-clock time of the video's frame 0:
``origin`` when given (a recorded file: when it was recorded); otherwise, for live streams, estimated
from a source's first event as it is sent (:func:`estimate_origin`) and kept for all its later events,
so an open and its close agree on the segment's start.
"""

from __future__ import annotations

from datetime import datetime, timezone

from stdd_fast.events import EVENT_SCHEMA, Event


def iso_utc(seconds: float) -> str:
    """A Unix time as VSS writes timestamps: ``2026-04-23T10:20:30.123Z``."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def estimate_origin(event: Event, sent_at: float) -> float:
    """The Unix time of a live source's media time 0, from an event sent at ``sent_at``: it was decided
    ``delay_s`` after its last evidence window ended (exact for an open event; a close is decided a little
    after its last window, which is why a source keeps the estimate of its first event)."""
    decided = event.evidence[-1].end_time if event.evidence else event.start_time
    return sent_at - event.delay_s - decided


def vss_incident(event: Event, origin: float, sensor_id: str | None = None, place: str | None = None) -> dict:
    """``event`` as an ``nv.Incident`` dict (the table in the module docstring); ``origin``: the Unix time of its
    media time 0."""
    info = {
        "kind": event.kind,
        "segmentId": event.id,
        "source": event.source,
        "startFrame": str(event.start_frame),
        "startSeconds": f"{event.start_time:.3f}",
        "peakConfidence": f"{event.peak_confidence:.4f}",
        "meanConfidence": f"{event.mean_confidence:.4f}",
        "windows": str(event.windows),
        "sequence": str(event.sequence),
        "delaySeconds": f"{event.delay_s:.3f}",
        "schema": EVENT_SCHEMA,
    }
    incident = {
        "Id": f"{event.id}-{event.kind}",
        "sensorId": sensor_id or event.source,
        "timestamp": iso_utc(origin + event.start_time),
        "category": event.label,
        "info": info,
    }
    if event.end_time is not None:
        incident["end"] = iso_utc(origin + event.end_time)
        info["endSeconds"] = f"{event.end_time:.3f}"
    if event.end_frame is not None:
        info["endFrame"] = str(event.end_frame)
    if place:
        incident["place"] = {"name": place}
    return incident
