"""``stdd calibrate``: per-class thresholds from ordinary footage, written into the classifier artifact."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stdd_fast.cli import options
from stdd_fast.cli.inputs import expand_inputs, labelled_inputs
from stdd_fast.cli.runner import EXIT_OK
from stdd_fast.errors import ConfigError


def add_parser(sub) -> None:
    c = sub.add_parser(
        "calibrate",
        help="set per-class thresholds from footage of ordinary activity (no labels needed)",
        description="Score footage that shows ordinary activity window by window, as a stream would, and set each "
        "class's threshold so that such footage exceeds it at the false-alarm rate asked; write the classifier with "
        "its thresholds (what `detected` and its confidences read). With --positives a class can aim at a recall or "
        "the best F1 on labelled clips instead.",
    )
    options.add_weights(c)
    options.add_classes(c)
    options.add_predictor(c)
    options.add_sampling(c, views=False)
    options.add_decode(c)
    g = c.add_argument_group("calibration")
    g.add_argument(
        "--background",
        nargs="+",
        required=True,
        metavar="INPUT",
        help="ordinary footage: video files, folders (searched), globs, .txt/.csv lists",
    )
    g.add_argument(
        "--false-alarms",
        default="1/h",
        metavar="RATE",
        help="false alarms allowed per class: 1/h (per hour of footage), 2/min, 1/1000w (per 1,000 windows)",
    )
    g.add_argument(
        "--positives",
        action="append",
        default=[],
        metavar="CLASS=INPUT",
        help="labelled clips of a class (repeatable): 'forklift reversing=clips/forklift/*.mp4'",
    )
    g.add_argument(
        "--aim", choices=("false-alarms", "recall", "f1"), default="false-alarms", help="what sets a threshold"
    )
    g.add_argument("--recall", type=float, default=0.9, help="--aim recall: the share of positive windows to detect")
    options.add_windows(g)
    c.add_argument("-o", "--output", required=True, metavar="ART", help="the calibrated classifier to write")
    c.add_argument("--plot", metavar="PNG", help="also draw each class's score distribution and threshold")
    c.add_argument("--json", action="store_true", help="print a JSON summary")
    options.add_debug(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stdd_fast.calibrate import calibrate
    from stdd_fast.engine import Engine

    output = Path(args.output)
    if output.is_dir():
        raise ConfigError(f"-o {output} is a folder; name the artifact file, e.g. {output / 'calibrated.safetensors'}")
    background = expand_inputs(args.background)
    positives = labelled_inputs(args.positives, "--positives")
    chosen = options.settings_of(args, sampling={"num_views": 1})  # a window is one view
    engine = Engine(
        args.weights, chosen.classes.require(), predictor=chosen.predictor, sampling=chosen.sampling,
        decode=chosen.decode,
    )  # fmt: skip
    options.report_backend(engine.predictor)
    report = calibrate(
        engine,
        background,
        false_alarms=args.false_alarms,
        positives=positives,
        aim=args.aim.replace("-", "_"),
        recall=args.recall,
        window=args.window,
        stride=args.stride,
    )
    for source, error in report.failed.items():
        print(f"stdd calibrate: skipped {source}: {error}", file=sys.stderr)
    out = report.classifier.save(output)
    plot = report.plot(args.plot) if args.plot else None
    if args.json:
        summary = {
            "output": str(out),
            "windows": int(report.scores.shape[0]),
            "footage_s": report.footage_s,
            "failed": report.failed,
            "windows_per_s": report.windows_per_s,
            "classes": [vars(c) | {"false_alarm_bound": c.false_alarm_bound()} for c in report.classes],
        }
        print(json.dumps(summary))
    else:
        print(report.table())
        print(f"stdd calibrate: {report.summary()}; wrote {out}" + (f" and {plot}" if plot else ""))
    return EXIT_OK
