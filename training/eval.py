"""``python -m stdd_fast.training.eval``: zero-shot evaluation with the official protocol.

Example (UCF101, 3 splits, xprompt classifier built from the model's text tower)::

    python -m stdd_fast.training.eval --weights swa_2_22.safetensors \\
        --csv zs_label_db/ucf101_split{1,2,3}/test.csv --prefix /data/ucf101/videos \\
        --classes zs_label_db/ucf101-index2cls.json --xprompt label_db/classes_xprompt_ucf101.yml \\
        --views 3 --output eval_ucf101

Under ``torchrun --nproc-per-node N -m stdd_fast.training.eval ...`` the videos are sharded and
the result is the single-process one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from stdd_fast.errors import StddError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stdd_fast.training.eval",
        description="Zero-shot evaluation of an STDD model on official split lists (top-1/top-5, per class, "
        "mean ± std over splits, JSON report, confusion-matrix PNG).",
    )
    p.add_argument("--csv", nargs="+", required=True, help="split list(s): rows 'relative/path,label'")
    p.add_argument("--prefix", default="", help="directory the CSV paths are relative to")
    p.add_argument("--classes", nargs="+", default=None, help="index->class JSON: one for all splits, or one per split")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--classifier", help="a saved classifier artifact (stdd build-classifier)")
    src.add_argument("--xprompt", help="an official classes_xprompt_*.yml (prompt-level classifier)")
    p.add_argument("--weights", help="checkpoint (any format stdd_fast.load_model reads)")
    p.add_argument("--arch", help="architecture name (checked against --weights; alone: random init, smoke runs)")
    p.add_argument("--seed", type=int, default=0, help="init seed when no --weights is given")
    p.add_argument("--views", type=int, default=3, help="temporal views per video (official: 3)")
    p.add_argument("--frames", type=int, default=8, help="frames per view (official: 8)")
    p.add_argument("--sampling-rate", type=int, default=16)
    p.add_argument("--target-fps", type=float, default=30.0)
    p.add_argument("--sampling", default="official", help="'official' or 'uniform'")
    p.add_argument("--shuffle", default="none", help="STCA eval schedule: none | seeded | official")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: CUDA if available)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--impl", default="auto", help="reference | fused | triton | auto")
    p.add_argument("--batch-clips", type=int, default=None, help="clips per forward (default: --views)")
    p.add_argument("--decode-workers", type=int, default=None)
    p.add_argument("--decode-backend", default=None, help="decoder backend (default: the engine's own default)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--output", default="eval_out", help="directory for report.json and the PNGs")
    p.add_argument("--save-logits", action="store_true", help="also write logits_<split>.pt")
    p.add_argument("--no-plot", action="store_true", help="skip the confusion-matrix PNGs")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--trust-pickle", action="store_true", help="allow pickles that need arbitrary code")
    return p


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the parsed arguments say; returns the report."""
    from stdd_fast.config import STCAConfig
    from stdd_fast.errors import ConfigError
    from stdd_fast.training import dist
    from stdd_fast.training.evaluate import evaluate_splits

    if args.weights is None and args.arch is None:
        raise ConfigError("pass --weights CKPT (or --arch NAME for a random-init smoke run)")
    if args.classes is None and args.classifier is None:
        raise ConfigError("pass --classes index2cls.json (or --classifier ART)")
    extra = {} if args.decode_backend is None else {"decode_backend": args.decode_backend}
    env = dist.init_distributed(args.device)
    try:
        stca = STCAConfig(shuffle=args.shuffle)
        if args.weights is not None:
            from stdd_fast.checkpoints import load_model

            model = load_model(
                args.weights, arch=args.arch, stca=stca, device=env.device, trust_pickle=args.trust_pickle
            )
        else:
            from stdd_fast.model import create_model

            model = create_model(args.arch, stca=stca, device=env.device, seed=args.seed)
        return evaluate_splits(
            model,
            args.csv,
            args.classes or [None],
            prefix=args.prefix,
            classifier=args.classifier,
            xprompt=args.xprompt,
            output_dir=args.output,
            env=env,
            top_k=args.top_k,
            progress=not args.no_progress,
            save_logits=args.save_logits,
            plot=not args.no_plot,
            dtype=args.dtype,
            impl=args.impl,
            num_views=args.views,
            num_frames=args.frames,
            sampling_rate=args.sampling_rate,
            target_fps=args.target_fps,
            sampling=args.sampling,
            decode_workers=args.decode_workers,
            batch_clips=args.batch_clips if args.batch_clips is not None else args.views,
            **extra,
        )
    finally:
        dist.shutdown(env)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # one process speaks for the run under torchrun
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run(args)
    except StddError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
