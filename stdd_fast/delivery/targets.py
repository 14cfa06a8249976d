"""One string names where events go, as a command line takes it: ``-``, a file, or a URL."""

from __future__ import annotations

from stdd_fast.delivery.base import Sink
from stdd_fast.delivery.formats import EventFormat
from stdd_fast.delivery.jsonl import JsonlSink
from stdd_fast.delivery.webhook import WebhookSink
from stdd_fast.errors import ConfigError


def open_sink(target: str, format: str | EventFormat = "stdd", **webhook_options) -> Sink:
    """The sink for ``target``: ``"-"`` (JSON lines on stdout), an ``http(s)://`` URL (a
    :class:`~stdd_fast.delivery.webhook.WebhookSink`, ``webhook_options`` are its
    :class:`~stdd_fast.delivery.webhook.WebhookConfig` fields) or a file path (JSON lines appended)."""
    form = format if isinstance(format, EventFormat) else EventFormat(format)
    if target.startswith(("http://", "https://")):
        return WebhookSink(target, format=form, **webhook_options)
    if webhook_options:
        raise ConfigError(f"{sorted(webhook_options)} apply to a webhook (an http(s):// target), not {target!r}")
    return JsonlSink(None if target == "-" else target, format=form)
