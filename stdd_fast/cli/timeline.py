"""``stdd timeline``: which action when in untrimmed videos, as segments, subtitles, a PNG and an annotated MP4."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stdd_fast.cli import options
from stdd_fast.cli.inputs import expand_inputs
from stdd_fast.cli.runner import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from stdd_fast.errors import ConfigError

FORMATS = ("jsonl", "csv", "vtt", "srt", "png", "mp4", "windows")
DEFAULT_FORMATS = "jsonl,vtt,srt,png"


def add_segmenting(p: argparse.ArgumentParser) -> None:
    """The segmenter's options (SegmentConfig) and the motion gate, shared by timeline and stream --events."""
    g = p.add_argument_group("segments")
    g.add_argument("--min-duration", type=float, default=1.0, help="seconds: shorter segments are dropped (default 1)")
    g.add_argument(
        "--merge-gap", type=float, default=2.0, help="seconds: shorter gaps do not end a segment (default 2)"
    )
    g.add_argument("--on-level", type=float, default=None, help="confidence that opens a segment (default: detected)")
    g.add_argument("--off-level", type=float, default=None, help="confidence below which it closes (default: detected)")
    g.add_argument("--smooth", type=int, default=1, help="windows in a running majority vote (default 1: none)")
    g.add_argument("--cooldown", type=float, default=0.0, help="seconds before a closed class may open again")
    g.add_argument(
        "--motion-gate",
        default=None,
        metavar="LEVEL",
        help="skip windows that barely differ from the last scored one: a level (default 0.04) or 'off'",
    )


def segment_config(args: argparse.Namespace):
    from stdd_fast.timeline.segments import SegmentConfig

    return SegmentConfig(args.on_level, args.off_level, args.smooth, args.min_duration, args.merge_gap, args.cooldown)


def gate_options(args: argparse.Namespace) -> dict:
    """``{"motion_gate": level | None}`` for the stream options (nothing: the default level)."""
    if args.motion_gate is None:
        return {}
    if args.motion_gate == "off":
        return {"motion_gate": None}
    try:
        return {"motion_gate": float(args.motion_gate)}
    except ValueError:
        raise ConfigError(f"--motion-gate {args.motion_gate!r}: a level such as 0.04, or 'off'") from None


def add_parser(sub) -> None:
    t = sub.add_parser(
        "timeline",
        help="which action when: segments of untrimmed videos, subtitles, a PNG timeline",
        description="Cut each video into windows as a stream would, decide each window with the classifier's "
        "thresholds (stdd calibrate) or background prompts, and join the decisions into segments: label, start, end, "
        "confidence. Writes segments (JSONL/CSV), WebVTT/SRT subtitles, a PNG timeline and, on request, the video "
        "with its labels drawn on.",
    )
    t.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, folders (searched), globs, .txt/.csv lists")
    options.add_weights(t)
    options.add_classes(t)
    options.add_predictor(t)
    options.add_sampling(t, views=False)
    options.add_decode(t)
    options.add_windows(t.add_argument_group("windows"))
    add_segmenting(t)
    o = t.add_argument_group("output")
    o.add_argument("-o", "--output-dir", metavar="DIR", help="write each video's files here: <stem>.<format>")
    o.add_argument("--formats", default=DEFAULT_FORMATS, help=f"of {','.join(FORMATS)} (default {DEFAULT_FORMATS})")
    o.add_argument("--overwrite", action="store_true", help="replace files an earlier run wrote")
    o.add_argument("--json", action="store_true", help="print segments as JSON lines instead of the table")
    o.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    options.add_debug(t)
    t.set_defaults(func=run)


def _targets(args: argparse.Namespace, videos: list[str]) -> dict[str, dict[str, Path]]:
    """Per video, the file each asked format goes to (checked before any work)."""
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ConfigError(f"--formats {unknown}: choose from {', '.join(FORMATS)}")
    if args.output_dir is None:
        return {v: {} for v in videos}
    folder = Path(args.output_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output-dir {folder} is a file; name a folder")
    suffix = {"jsonl": ".segments.jsonl", "csv": ".segments.csv", "vtt": ".vtt", "srt": ".srt", "png": ".png",
              "mp4": ".annotated.mp4", "windows": ".windows.jsonl"}  # fmt: skip
    targets = {v: {f: folder / f"{Path(v).stem}{suffix[f]}" for f in formats} for v in videos}
    used = [str(p) for paths in targets.values() for p in paths.values() if p.exists()]
    if used and not args.overwrite:
        raise ConfigError(f"{used[0]} exists ({len(used)} such): pass --overwrite to replace, or another --output-dir")
    folder.mkdir(parents=True, exist_ok=True)
    return targets


def _write(timeline, paths: dict[str, Path], on_levels) -> list[Path]:
    from stdd_fast.timeline import outputs

    writers = {
        "jsonl": lambda p: outputs.write_segments(p, timeline.segments),
        "csv": lambda p: outputs.write_segments(p, timeline.segments),
        "vtt": lambda p: outputs.write_vtt(p, timeline.segments),
        "srt": lambda p: outputs.write_srt(p, timeline.segments),
        "png": lambda p: outputs.plot(p, timeline, on_levels),
        "mp4": lambda p: outputs.annotate(timeline.source, p, timeline.segments),
        "windows": lambda p: outputs.write_windows(p, timeline),
    }
    return [writers[fmt](path) for fmt, path in paths.items()]


def _printer(as_json: bool):
    """Print each segment as it closes (a long file shows them as they come; Ctrl-C keeps what was shown)."""
    from stdd_fast.timeline.outputs import duration_text

    def show(event) -> None:
        if event.kind != "close":
            return
        if as_json:
            fields = ("source", "label", "start_time", "end_time", "start_frame", "end_frame", "peak_confidence",
                      "mean_confidence", "windows")  # fmt: skip
            print(json.dumps({k: getattr(event, k) for k in fields}), flush=True)
            return
        span = f"{duration_text(event.start_time)} - {duration_text(event.end_time)}"
        print(f"  {span}  {event.label}  peak {event.peak_confidence:.3f} mean {event.mean_confidence:.3f} "
              f"({event.windows} windows)", flush=True)  # fmt: skip

    return show


def run(args: argparse.Namespace) -> int:
    from stdd_fast.engine import Engine

    videos = expand_inputs(args.videos)
    targets = _targets(args, videos)
    config, gate = segment_config(args), gate_options(args)
    chosen = options.settings_of(args, sampling={"num_views": 1})  # a window is one view
    engine = Engine(
        args.weights, chosen.classes.require(), predictor=chosen.predictor, sampling=chosen.sampling,
        decode=chosen.decode,
    )  # fmt: skip
    options.report_backend(engine.predictor)
    decider = engine.predictor.decider
    keep = any(f in ("png", "windows") for paths in targets.values() for f in paths)
    failed, show = 0, _printer(args.json)
    for video in videos:
        if not args.json:
            print(f"{video}:", flush=True)
        timeline = engine.timeline(video, args.window, args.stride, segments=config, keep_windows=keep, on_event=show,
                                   progress=False if args.no_progress else None, **gate)  # fmt: skip
        if not timeline.ok:
            failed += 1
            print(f"stdd: error: {timeline.error}", file=sys.stderr, flush=True)
        written = _write(timeline, targets[video], decider.on_levels() if decider else None)
        rate = timeline.duration_s / timeline.seconds if timeline.seconds else 0.0
        print(
            f"stdd timeline: {video}: {timeline.windows} windows ({timeline.skipped} skipped by the motion gate), "
            f"{timeline.flickers} flickers dropped, {rate:.1f} s of video per second"
            + (f"; wrote {', '.join(map(str, written))}" if written else ""),
            file=sys.stderr,
            flush=True,
        )
        if timeline.interrupted:
            print(f"stdd: interrupted in {video}; the segments closed by then are written", file=sys.stderr)
            return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_OK
