"""``stdd stream``: classify live streams (files, URLs, devices) window by window."""

from __future__ import annotations

import argparse
import json
import sys

from stdd_fast.choices import BACKPRESSURE
from stdd_fast.cli import options
from stdd_fast.cli.runner import EXIT_FAILED, EXIT_OK


def add_parser(sub) -> None:
    s = sub.add_parser(
        "stream",
        help="classify live streams window by window",
        description="Classify streams window by window; every stream ends with a line saying what it produced.",
    )
    s.add_argument("sources", nargs="+", metavar="SOURCE", help="file, URL (rtsp://, http://...) or device")
    options.add_weights(s)
    options.add_classes(s)
    options.add_device(s)
    options.add_impl(s)
    options.add_engine(s)
    w = s.add_argument_group("windows")
    w.add_argument("--window", default=None, help="window span: frames (113) or seconds (3.7s); default: the model's")
    w.add_argument("--stride", default="16", help="step between windows: frames (16) or seconds (0.5s); default 16")
    w.add_argument("--fps", type=float, default=None, help="source frame rate (default: from the source)")
    w.add_argument("--on-backpressure", choices=BACKPRESSURE, default="block", help="slow consumer policy")
    w.add_argument("--max-retries", type=int, default=3, help="reconnects in a row without a new frame (default 3)")
    w.add_argument("--stall-timeout", type=float, default=10.0, help="seconds without a frame = failure (default 10)")
    w.add_argument("--realtime", action="store_true", help="pace sources by their timestamps (files play live)")
    w.add_argument("--format", dest="source_format", default=None, help="PyAV input format (e.g. v4l2)")
    s.add_argument("--json", action="store_true", help="print JSON lines")
    options.add_debug(s)
    s.set_defaults(func=run)


def _span(text: str | None) -> int | str | None:
    """A --window/--stride value: digits are frames (an int), anything else goes to the parser as text."""
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def run(args: argparse.Namespace) -> int:
    from stdd_fast.engine import Engine

    engine = Engine(args.weights, **options.engine_options(args, num_views=1))
    run = engine.stream_many(
        args.sources,
        window=_span(args.window),
        stride=_span(args.stride),
        top_k=args.top_k,
        on_backpressure=args.on_backpressure,
        max_retries=args.max_retries,
        stall_timeout=args.stall_timeout,
        fps=args.fps,
        realtime=args.realtime,
        source_format=args.source_format,
    )
    several = len(args.sources) > 1
    failed = 0
    for w in run:
        if args.json:
            print(json.dumps(w.to_dict()), flush=True)
        if not w.ok:
            failed += 1
            print(f"stdd: error: {w.error}", file=sys.stderr, flush=True)
            continue
        if args.json:
            continue
        ranked = ", ".join(f"{label} {value:.3f}" for label, value in zip(w.labels, w.scores, strict=True))
        prefix = f"{w.source} " if several else ""
        dropped = f", {w.dropped} dropped before" if w.dropped else ""
        print(
            f"{prefix}[{w.start_time:9.3f}s - {w.end_time:9.3f}s] {ranked}  ({w.latency * 1e3:.0f} ms{dropped})",
            flush=True,
        )
    for name, st in run.stats.streams.items():  # every stream says how it ended
        counts = ("dropped", "out_of_order", "reconnects")
        extra = "".join(f", {st[k]} {k.replace('_', ' ')}" for k in counts if st[k])
        ended = f"{st['windows']} windows from {st['frames']} frames{extra} ({st['ended']})"
        print(f"stdd: {name}: {ended}", file=sys.stderr)
    if failed:
        print(f"stdd: {failed} of {len(args.sources)} streams ended with an error", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
