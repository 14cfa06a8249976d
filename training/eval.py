"""``python -m stdd_fast.training.eval``: zero-shot evaluation with the official protocol.

Example (UCF101, 3 splits, xprompt classifier built from the model's text tower)::

    python -m stdd_fast.training.eval --weights swa_2_22.safetensors \\
        --csv zs_label_db/ucf101_split{1,2,3}/test.csv --prefix /data/ucf101/videos \\
        --classes-file zs_label_db/ucf101-index2cls.json --xprompt label_db/classes_xprompt_ucf101.yml \\
        --views 3 --output eval_ucf101

Timelines of untrimmed videos against temporal annotations (mAP at tIoU 0.3..0.7, event P/R/F1)::

    python -m stdd_fast.training.eval --weights swa_2_22.safetensors --timeline thumos14_test.csv \\
        --prefix /data/thumos14/videos --output eval_timeline

Under ``torchrun --nproc-per-node N -m stdd_fast.training.eval ...`` the videos are sharded and
the result is the single-process one.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

from stdd_fast.choices import SHUFFLE_MODES
from stdd_fast.cli import options
from stdd_fast.cli.runner import Parser
from stdd_fast.cli.runner import run as run_command
from stdd_fast.cli.timeline import add_segmenting, gate_options, segment_config
from stdd_fast.settings import Settings
from stdd_fast.training.temporal_eval import TIOU_THRESHOLDS


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="stdd-eval",
        description="Zero-shot evaluation of an STDD model on official split lists (top-1/top-5, per class, "
        "mean ± std over splits, JSON report, confusion-matrix PNG).",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--csv", nargs="+", help="split list(s): rows 'relative/path,label'")
    what.add_argument(
        "--timeline",
        metavar="ANNOTATIONS",
        help="temporal localisation instead: timelines of the annotated videos against ActivityNet JSON, a "
        "video_id,start,end,label CSV or a folder of THUMOS14 <Class>_<subset>.txt files (mAP, event P/R/F1)",
    )
    p.add_argument("--prefix", default="", help="directory the CSV paths (or the annotated video ids) are relative to")
    options.add_weights(p, required=False)
    p.add_argument("--seed", type=int, default=0, help="init seed when no --weights is given (with --arch)")
    g = p.add_argument_group("classes")
    g.add_argument(
        "--classes-file", nargs="+", default=None, metavar="FILE", help="index->class JSON, one for all or per split"
    )
    src = g.add_mutually_exclusive_group()
    src.add_argument("--classifier", metavar="ART", help="a saved classifier artifact (stdd build-classifier)")
    src.add_argument("--xprompt", metavar="YAML", help="an official classes_xprompt_*.yml (prompt-level classifier)")
    src.add_argument("--askg", metavar="YAML", help="an official classes_ASKG_*.yml (triples rendered to clauses)")
    options.add_predictor(p, backend=False)
    options.add_sampling(p)
    options.add_decode(p)
    s = p.add_argument_group("protocol")
    s.add_argument("--shuffle", choices=SHUFFLE_MODES, default="none", help="STCA eval schedule (default none)")
    t = p.add_argument_group("timeline (with --timeline; classes default to the annotation labels)")
    t.add_argument("--subset", default=None, help="only the videos of this subset (e.g. validation, test)")
    t.add_argument(
        "--tiou",
        type=float,
        nargs="+",
        default=list(TIOU_THRESHOLDS),
        help="mAP tIoU thresholds (default 0.3 0.4 0.5 0.6 0.7)",
    )
    t.add_argument("--event-tiou", type=float, default=0.5, help="tIoU of an event hit for P/R/F1 (default 0.5)")
    options.add_windows(t)
    add_segmenting(p)
    o = p.add_argument_group("output")
    o.add_argument("--top-k", type=int, default=5, help="k of the top-k accuracy (default 5)")
    o.add_argument("--output", default="eval_out", help="directory for report.json and the PNGs")
    o.add_argument("--save-logits", action="store_true", help="also write logits_<split>.pt")
    o.add_argument("--no-plot", action="store_true", help="skip the confusion-matrix PNGs")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    options.add_debug(p)
    return p


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the parsed arguments say; returns the report."""
    from stdd_fast.errors import ConfigError
    from stdd_fast.training import dist
    from stdd_fast.training.evaluate import evaluate_splits

    if args.weights is None and args.arch is None:
        raise ConfigError("pass --weights CKPT (or --arch NAME for a random-init smoke run)")
    if args.timeline is None and args.classes_file is None and args.classifier is None:
        raise ConfigError("pass --classes-file index2cls.json (or --classifier ART)")
    if args.batch_clips is None:  # one video's views a forward, as the released evaluation
        args.batch_clips = args.views
    chosen = options.settings_of(args)
    env = dist.init_distributed(None if args.device == "auto" else args.device)
    try:
        if args.weights is not None:
            from stdd_fast.factory import load_model

            model = load_model(args.weights, arch=args.arch, device=env.device, trust_pickle=args.trust_pickle)
            model.set_stca(model.stca.replace(shuffle=args.shuffle))  # the recorded config, with this schedule
        else:
            from stdd_fast.config import STCAConfig
            from stdd_fast.factory import create_model

            model = create_model(args.arch, stca=STCAConfig(shuffle=args.shuffle), device=env.device, seed=args.seed)
        if args.timeline is not None:
            return _timeline(args, model, chosen, env)
        return evaluate_splits(
            model,
            args.csv,
            args.classes_file or [None],
            prefix=args.prefix,
            classifier=args.classifier,
            xprompt=args.xprompt,
            askg=args.askg,
            output_dir=args.output,
            env=env,
            top_k=args.top_k,
            progress=not args.no_progress,
            save_logits=args.save_logits,
            plot=not args.no_plot,
            predictor=dataclasses.replace(chosen.predictor, device=str(env.device), arch=None, trust_pickle=False),
            sampling=chosen.sampling,
            decode=chosen.decode,
        )
    finally:
        dist.shutdown(env)


def _timeline(args: argparse.Namespace, model, chosen: Settings, env) -> dict:
    """``--timeline``: the annotated videos' timelines scored against the annotations (one process)."""
    import torch

    from stdd_fast.classifier import build_classifier
    from stdd_fast.engine import Engine
    from stdd_fast.errors import ConfigError
    from stdd_fast.prompts import read_class_names
    from stdd_fast.training.evaluate import load_split_classifier
    from stdd_fast.training.temporal_eval import evaluate_timelines, read_annotations

    if env.world_size > 1:
        raise ConfigError("--timeline runs in one process; start it without torchrun")
    annotations = read_annotations(args.timeline, subset=args.subset)
    classes_file = args.classes_file[0] if args.classes_file else None
    if args.classifier is not None:
        clf = load_split_classifier(model, classes_file, args.classifier)
    else:  # the class list's names or the annotation labels; background prompts decide when a class is on
        names = read_class_names(classes_file) if classes_file else annotations.labels
        with torch.no_grad():
            clf = build_classifier(model, names, xprompt=args.xprompt, askg=args.askg, background=True)
    predictor = dataclasses.replace(chosen.predictor, device=str(env.device), arch=None, trust_pickle=False)
    sampling = dataclasses.replace(chosen.sampling, num_views=1)  # a window is one view
    engine = Engine(model, classifier=clf, predictor=predictor, sampling=sampling, decode=chosen.decode)
    return evaluate_timelines(
        engine, annotations, args.prefix, args.tiou, args.event_tiou, args.output, window=args.window,
        stride=args.stride, progress=False if args.no_progress else None, segments=segment_config(args),
        **gate_options(args),
    )  # fmt: skip


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _evaluate(args: argparse.Namespace) -> int:
    # one process speaks for the run under torchrun; only stdd_fast's own progress at INFO: the libraries' INFO
    # (onnxscript and onnx_ir log hundreds of lines per encoder-graph export) is nothing a user can act on
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("stdd_fast").setLevel(level)
    report = run(args)
    if args.timeline is not None:
        from stdd_fast.training.temporal_eval import format_table

        print(format_table(report))
        print(f"{report['evaluated']}/{report['videos']} videos evaluated, {report['skipped']} skipped")
        print(f"report: {report.get('report_json')}")
        return 0
    if os.environ.get("RANK", "0") == "0":
        k = f"top{args.top_k}"
        for s in report["splits"]:
            print(
                f"{s['name']} ({s['csv']}): top-1 {_fmt(s['top1'])}%  {k} {_fmt(s[k])}%  "
                f"mean class {_fmt(s['mean_class_accuracy'])}%  ({s['evaluated']}/{s['videos']} videos, "
                f"{s['skipped']} skipped)"
            )
        m, sd = report["mean"], report["std"]
        print(
            f"mean ± std over {len(report['splits'])} split(s): top-1 {_fmt(m['top1'])} ± {_fmt(sd['top1'])}%  "
            f"{k} {_fmt(m[k])} ± {_fmt(sd[k])}%"
        )
        if "report_json" in report:
            print(f"report: {report['report_json']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stdd-eval``; exit codes as every stdd-fast command (:mod:`stdd_fast.cli.runner`)."""
    return run_command("stdd-eval", build_parser, _evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
