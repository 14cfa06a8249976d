"""Live-stream inference: sliding windows over frame streams, several streams per batched model call.

Use it through :meth:`stdd_fast.Engine.stream` / :meth:`~stdd_fast.Engine.stream_many`. Modules:
``config`` (spans and :class:`StreamConfig`), ``windows`` (pure windowing: layout, cutting,
eviction), ``sources`` (opening, reading and reconnecting sources), ``hub`` (the shared queue and
the consumer that scores windows through a predictor).
"""

from stdd_fast.stream.config import Span, StreamConfig, parse_span
from stdd_fast.stream.hub import StreamStats, WindowStream
from stdd_fast.stream.sources import Source
from stdd_fast.stream.windows import WindowLayout, window_layout

__all__ = [
    "Source",
    "Span",
    "StreamConfig",
    "StreamStats",
    "WindowLayout",
    "WindowStream",
    "parse_span",
    "window_layout",
]
