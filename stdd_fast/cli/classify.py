"""``stdd classify``: rank action classes for video files, folders and lists, printing each as it completes."""

from __future__ import annotations

import argparse
import json
import sys

from stdd_fast.cli import options
from stdd_fast.cli.inputs import expand_inputs, missing_files
from stdd_fast.cli.runner import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from stdd_fast.errors import ConfigError
from stdd_fast.terminal import print_above, progress_bar


def add_parser(sub) -> None:
    c = sub.add_parser(
        "classify",
        help="rank action classes for videos (files, folders, globs, list files)",
        description="Rank action classes for videos. Results print as each video completes, in input order.",
    )
    c.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, folders (searched), globs, .txt/.csv lists")
    options.add_weights(c)
    options.add_classes(c)
    options.add_predictor(c)
    options.add_sampling(c)
    options.add_decode(c)
    c.add_argument("--top-k", type=int, default=5, help="classes to report per video (default 5)")
    c.add_argument(
        "--detected-only",
        action="store_true",
        help="print only the classes each video shows (needs a calibrated classifier or background prompts)",
    )
    o = c.add_argument_group("results file")
    o.add_argument("--output", "-o", metavar="FILE", help="also write every result to results.jsonl or results.csv")
    o.add_argument(
        "--resume",
        action="store_true",
        help="--output already holds results: skip the videos it holds a result for, append the others",
    )
    o.add_argument("--overwrite", action="store_true", help="--output already holds results: start it over")
    c.add_argument("--json", action="store_true", help="print JSON lines instead of the table")
    c.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    options.add_debug(c)
    c.set_defaults(func=run)


def _table(r) -> str:
    width = max(len(label) for label in r.labels)
    rows = [
        f"  {rank:>2}  {label:<{width}}  {value:9.3f}  {100 * p:5.1f} %"
        for rank, (label, value, p) in enumerate(zip(r.labels, r.scores, r.probabilities, strict=True), 1)
    ]
    decided = [] if r.detected is None else [f"  detected: {options.detected_text(r.detected)}"]
    return "\n".join([r.source, *rows, *decided])


def _shown(r, args: argparse.Namespace) -> str:
    """What the terminal shows of a successful result: the table, JSON, or (--detected-only) its detections."""
    if args.detected_only:
        brief = {"video": r.source, "detected": [d.to_dict() for d in r.detected]}
        return json.dumps(brief) if args.json else f"{r.source}: {options.detected_text(r.detected)}"
    return json.dumps(r.to_dict()) if args.json else _table(r)


def _todo(args: argparse.Namespace, videos: list[str]) -> list[str]:
    """The videos to run: all, or (``--resume``) those --output holds no successful result for. Checked before the
    model loads: the output file, and inputs that do not exist."""
    from stdd_fast.cli.results_file import check_output, video_key

    if (args.resume or args.overwrite) and not args.output:
        raise ConfigError("--resume and --overwrite are about the --output file: pass --output FILE")
    done = check_output(args.output, args.resume, args.overwrite) if args.output else set()
    todo = [v for v in videos if video_key(v) not in done]
    if done:
        print(
            f"stdd: --resume: {len(videos) - len(todo)} of {len(videos)} videos are done in {args.output}",
            file=sys.stderr,
        )
    missing = missing_files(todo)
    shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
    if missing and len(missing) == len(todo):
        raise ConfigError(f"no such file: {shown}; nothing to classify (check the paths)")
    if missing:  # said now, not after the model has loaded; their results carry the error
        print(f"stdd: warning: {len(missing)} of {len(todo)} videos do not exist: {shown}", file=sys.stderr)
    return todo


def run(args: argparse.Namespace) -> int:
    videos = _todo(args, expand_inputs(args.videos, unique=False))  # a file named twice is classified twice
    if not videos:
        print(f"stdd: nothing to do: {args.output} holds a result for every video", file=sys.stderr)
        return EXIT_OK
    chosen = options.settings_of(args)
    chosen.classes.require(args.weights)
    from stdd_fast.cli.results_file import ResultsFile
    from stdd_fast.engine import Engine  # torch: imported once the command line and the inputs are known good

    engine = Engine(
        args.weights, chosen.classes, predictor=chosen.predictor, sampling=chosen.sampling, decode=chosen.decode
    )
    if args.detected_only and engine.predictor.decider is None:
        raise ConfigError(
            "--detected-only: this classifier makes no decisions; calibrate it on ordinary footage (stdd calibrate) "
            "or build it with background prompts (stdd build-classifier --background)"
        )
    # an unwritable file: exit 2, before any video; --resume appends (a file of other classes is refused)
    decides = engine.predictor.decider is not None
    out = ResultsFile(args.output, engine.classes, append=args.resume, decides=decides) if args.output else None
    options.report_backend(engine.predictor)
    failed = done = 0
    bar = progress_bar(len(videos), False if args.no_progress else None, "classifying", "video")
    try:
        for r in engine.classify_iter(videos, top_k=args.top_k, progress=False):
            done += 1
            if out is not None:
                out.write(r)
            if r.ok or (args.json and not args.detected_only):
                print_above(bar, _shown(r, args))
            if not r.ok:
                failed += 1
                print_above(bar, f"stdd: error: {r.error}", sys.stderr)
            elif r.decode_note and args.decode_backend == "dali":  # DALI was asked for: say why it did not decode
                print_above(bar, f"stdd: note: {r.source}: decoded with PyAV: {r.decode_note}", sys.stderr)
            bar.update(1)  # after the result is written and printed: the count is what the file holds
    except KeyboardInterrupt:
        bar.close()
        where = f"; {args.output} holds them (rerun with --resume to finish)" if out is not None else ""
        print(f"stdd: interrupted after {done} of {len(videos)} videos{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        bar.close()
        if out is not None:
            out.close()
    if failed:
        print(f"stdd: {failed} of {len(videos)} videos failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
