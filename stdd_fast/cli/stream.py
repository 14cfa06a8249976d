"""``stdd stream``: classify live streams (files, URLs, devices) window by window.

``--watch-classifier`` swaps the vocabulary without a restart: when the ``--classifier`` file
changes on disk, it is loaded, checked and swapped in between windows
(:class:`~stdd_fast.classifier_watch.ClassifierWatcher`).
"""

from __future__ import annotations

import argparse
import json
import sys

from stdd_fast.choices import BACKPRESSURE
from stdd_fast.cli import options
from stdd_fast.cli.inputs import missing_files
from stdd_fast.cli.options import detected_text
from stdd_fast.cli.runner import EXIT_FAILED, EXIT_OK
from stdd_fast.cli.timeline import add_segmenting, gate_options, segment_config
from stdd_fast.errors import ConfigError


def add_parser(sub) -> None:
    s = sub.add_parser(
        "stream",
        help="classify live streams window by window",
        description="Classify streams window by window; every stream ends with a line saying what it produced.",
    )
    s.add_argument("sources", nargs="+", metavar="SOURCE", help="file, URL (rtsp://, http://...) or device")
    options.add_weights(s)
    options.add_classes(s)
    options.add_predictor(s)
    options.add_sampling(s, views=False)
    options.add_decode(s)
    w = s.add_argument_group("windows")
    w.add_argument("--top-k", type=int, default=5, help="classes to report per window (default 5)")
    options.add_windows(w)
    w.add_argument("--fps", type=float, default=None, help="source frame rate (default: from the source)")
    w.add_argument("--on-backpressure", choices=BACKPRESSURE, default="block", help="slow consumer policy")
    w.add_argument("--max-retries", type=int, default=3, help="reconnects in a row without a new frame (default 3)")
    w.add_argument("--stall-timeout", type=float, default=10.0, help="seconds without a frame = failure (default 10)")
    w.add_argument("--realtime", action="store_true", help="pace sources by their timestamps (files play live)")
    w.add_argument("--format", dest="source_format", default=None, help="PyAV input format (e.g. v4l2)")
    c = s.add_argument_group("vocabulary swap")
    c.add_argument(
        "--watch-classifier",
        action="store_true",
        help="reload the --classifier file when it changes on disk (replace it atomically: write, then rename); "
        "a file that does not load or fit the model is reported and the current classifier stays",
    )
    c.add_argument(
        "--watch-interval",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="seconds between checks of the file (default 1)",
    )
    s.add_argument("--json", action="store_true", help="print JSON lines")
    e = s.add_argument_group("events")
    e.add_argument(
        "--events",
        action="store_true",
        help="deliver events (an action opened; an action closed, with its segment) instead of printing windows",
    )
    e.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="TARGET",
        help="where events go (repeatable): - (stdout, the default), a .jsonl file, or an http(s):// webhook "
        "(signed with $STDD_WEBHOOK_SECRET, retried, spooled to disk while it is down)",
    )
    e.add_argument(
        "--event-format", choices=("stdd", "vss"), default="stdd", help="our schema, or NVIDIA VSS incidents"
    )
    e.add_argument("--spool-dir", metavar="DIR", help="webhook spool (default: the user cache, one folder per URL)")
    add_segmenting(s)
    options.add_debug(s)
    s.set_defaults(func=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def run(args: argparse.Namespace) -> int:
    from stdd_fast.classifier_watch import ClassifierWatcher, file_signature

    if args.watch_classifier and args.classifier is None:
        raise ConfigError("--watch-classifier reloads the --classifier file: pass --classifier ART")
    config = _stream_config(args)  # a bad --window/--stride fails before the model is built
    before = file_signature(args.classifier) if args.watch_classifier else None
    chosen = options.settings_of(args, sampling={"num_views": 1})  # a window is one view
    chosen.classes.require(args.weights)
    # no source exists: said before the model loads (one missing among several ends its own stream at once)
    missing = missing_files(args.sources) if args.source_format is None else []  # --format: device or filter names
    if missing and len(missing) == len(args.sources):
        raise ConfigError(f"no such file: {', '.join(missing)}; nothing to stream")
    from stdd_fast.engine import Engine  # torch: imported once the command line and the sources are known good

    engine = Engine(
        args.weights, chosen.classes, predictor=chosen.predictor, sampling=chosen.sampling, decode=chosen.decode
    )
    options.report_backend(engine.predictor)
    watcher = None
    if args.watch_classifier:
        # a predictor that cannot swap (an export with its classifier baked in) says so now, not at the first change
        engine.set_classifier(args.classifier)
        watcher = ClassifierWatcher(engine, args.classifier, args.watch_interval, loaded=before).start()
    try:
        return _print_events(args, engine, config) if args.events else _print_windows(args, engine, config)
    finally:
        if watcher is not None:
            watcher.stop()


def _stream_config(args: argparse.Namespace):
    from stdd_fast.stream.config import StreamConfig

    return StreamConfig.from_options(
        args.window,
        args.stride,
        top_k=args.top_k,
        on_backpressure=args.on_backpressure,
        max_retries=args.max_retries,
        stall_timeout=args.stall_timeout,
        fps=args.fps,
        realtime=args.realtime,
        source_format=args.source_format,
        **gate_options(args),
    )


def _print_events(args: argparse.Namespace, engine, config) -> int:
    """Each event to every sink as it happens (never waiting on one); what each delivered, on stderr."""
    from stdd_fast.delivery import open_sink

    spool = {"spool_dir": args.spool_dir} if args.spool_dir else {}
    sinks = []
    try:
        for target in args.sink or ["-"]:
            sinks.append(open_sink(target, args.event_format, **(spool if "://" in target else {})))
        for event in engine.events(list(args.sources), config=config, segments=segment_config(args)):
            for sink in sinks:
                sink.send(event)
    finally:
        for target, sink in zip(args.sink or ["-"], sinks, strict=False):
            print(f"stdd: events to {target}: {sink.close(timeout=10.0).summary()}", file=sys.stderr)
    return EXIT_OK


def _print_windows(args: argparse.Namespace, engine, config) -> int:
    run = engine.stream_many(args.sources, config=config)
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
        detected = "" if w.detected is None else f"  detected: {detected_text(w.detected)}"
        print(
            f"{prefix}[{w.start_time:9.3f}s - {w.end_time:9.3f}s] {ranked}{detected}  "
            f"({w.latency * 1e3:.0f} ms{dropped})",
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
