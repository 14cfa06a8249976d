"""``stdd-train --recipe R [key=value ...]`` (``python -m stdd_fast.training.train``): fine-tune STDD.

The recipe file (JSON or YAML, see :class:`~stdd_fast.training.recipe.Recipe`) sets any fields;
``key=value`` overrides follow it (``stca.key=value`` for STCA settings). Scale out with
``torchrun --nproc-per-node N -m stdd_fast.training.train ...`` (NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from stdd_fast.cli import options
from stdd_fast.cli.runner import Parser
from stdd_fast.cli.runner import run as run_command


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="stdd-train", description="Fine-tune STDD with the released recipe (overrides as key=value).")
    p.add_argument("--recipe", help="recipe file (JSON or YAML); default: the released recipe")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides, e.g. base_lr=1e-5 stca.mask_rate=0.5")
    p.add_argument("--resume", help="training checkpoint to resume from, or 'auto' (latest in output_dir)")
    p.add_argument("--print-recipe", action="store_true", help="print the resolved recipe as JSON and exit")
    p.add_argument(
        "--overwrite", action="store_true", help="start over in an output_dir that holds a run (its checkpoints go)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    options.add_debug(p)
    return p


def _train(args: argparse.Namespace) -> int:
    # one process speaks for the run under torchrun
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from stdd_fast.training.recipe import Recipe

    recipe = (Recipe.load(args.recipe) if args.recipe else Recipe()).with_overrides(args.overrides)
    if args.print_recipe:
        import json

        print(json.dumps(recipe.to_dict(), indent=2))
        return 0
    from stdd_fast.training.trainer import finetune

    result = finetune(recipe, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") == "0":
        last = result.history[-1] if result.history else {}
        print(f"run directory: {result.output_dir}")
        if result.last_checkpoint is not None:
            print(f"last checkpoint: {result.last_checkpoint}")
        if result.average is not None:
            print(f"weight average: {result.average}")
        if last:
            print(f"final epoch {last['epoch']}: loss {last['loss']:.4f}, train acc {100 * last['train_acc']:.1f}%")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stdd-train``; exit codes as every stdd-fast command (:mod:`stdd_fast.cli.runner`)."""
    return run_command("stdd-train", build_parser, _train, argv)


if __name__ == "__main__":
    sys.exit(main())
