"""``stdd classify``: rank action classes for video files, folders and lists, printing each as it completes."""

from __future__ import annotations

import argparse
import json
import sys

from stdd_fast.cli import options
from stdd_fast.cli.inputs import expand_inputs
from stdd_fast.cli.runner import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK


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
    c.add_argument("--output", "-o", metavar="FILE", help="also write every result to results.jsonl or results.csv")
    c.add_argument("--json", action="store_true", help="print JSON lines instead of the table")
    c.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    options.add_debug(c)
    c.set_defaults(func=run)


def _print_table(r) -> None:
    print(r.source)
    width = max(len(label) for label in r.labels)
    for rank, (label, value, p) in enumerate(zip(r.labels, r.scores, r.probabilities, strict=True), 1):
        print(f"  {rank:>2}  {label:<{width}}  {value:9.3f}  {100 * p:5.1f} %")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from stdd_fast.cli.results_file import ResultsFile, check_output
    from stdd_fast.engine import Engine

    if args.output:
        check_output(args.output)  # before the model loads
    videos = expand_inputs(args.videos, unique=False)  # a file named twice is classified twice, as asked
    chosen = options.settings_of(args)
    chosen.classes.require()
    engine = Engine(
        args.weights, chosen.classes, predictor=chosen.predictor, sampling=chosen.sampling, decode=chosen.decode
    )
    out = ResultsFile(args.output, engine.classes) if args.output else None  # an unwritable file: exit 2, first
    options.report_backend(engine.predictor)
    failed = done = 0
    try:
        for r in engine.classify_iter(videos, top_k=args.top_k, progress=False if args.no_progress else None):
            done += 1
            if out is not None:
                out.write(r)
            if args.json:
                print(json.dumps(r.to_dict()), flush=True)
            elif r.ok:
                _print_table(r)
            if not r.ok:
                failed += 1
                print(f"stdd: error: {r.error}", file=sys.stderr, flush=True)
            elif r.decode_note and args.decode_backend == "dali":  # DALI was asked for: say why it did not decode
                print(f"stdd: note: {r.source}: decoded with PyAV: {r.decode_note}", file=sys.stderr)
    except KeyboardInterrupt:
        where = f"; {args.output} holds them" if out is not None else ""
        print(f"stdd: interrupted after {done} of {len(videos)} videos{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if out is not None:
            out.close()
    if failed:
        print(f"stdd: {failed} of {len(videos)} videos failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
