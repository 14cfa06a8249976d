"""``stdd batch``: classify a whole video corpus on Ray Data into a Parquet folder, resumable, one row per video."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator

from stdd_fast.batch.config import BATCH_DECODE_CHOICES
from stdd_fast.cli import options
from stdd_fast.cli.inputs import expand_inputs
from stdd_fast.cli.runner import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

SHOWN_FAILURES = 20  # errors printed at the end; the table holds every one


def add_parser(sub) -> None:
    c = sub.add_parser(
        "batch",
        help="classify a video corpus on Ray Data into a Parquet table (local Ray or a cluster)",
        description="Classify every video of the inputs on Ray Data: CPU tasks decode, actors holding one "
        "predictor each score, and each video gets one row (its top-k, or its error) in the Parquet folder "
        "--output. Without --ray-address a local Ray starts on this machine.",
    )
    c.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders (searched), globs, .txt/.csv lists")
    c.add_argument("--output", "-o", required=True, metavar="DIR", help="the Parquet folder of results (one row each)")
    c.add_argument(
        "--resume", action="store_true", help="DIR holds this job: skip its successful videos, rerun the rest"
    )
    c.add_argument("--prefix", metavar="DIR", help="folder of the relative paths in list files (default: the list's)")
    c.add_argument("--embeddings", action="store_true", help="also store each video's frame embeddings [V, T, D]")
    options.add_weights(c)
    options.add_classes(c)
    options.add_predictor(c)
    options.add_sampling(c)
    options.add_decode(c, choices=BATCH_DECODE_CHOICES)
    c.add_argument("--top-k", type=int, default=5, help="classes to store per video (default 5)")
    g = c.add_argument_group("Ray")
    g.add_argument("--ray-address", metavar="ADDR", help="join a Ray cluster: auto, HOST:PORT or ray://HOST:PORT")
    g.add_argument("--workers", type=int, default=1, help="inference actors, one predictor each (default 1)")
    g.add_argument(
        "--gpus-per-worker", type=float, default=None, help="GPUs per actor (default: 1 on CUDA, 0 on the CPU)"
    )
    g.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs per actor (default 1; less when this machine is short)",
    )
    g.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs per decoding task (default 1)")
    g.add_argument(
        "--max-retries", type=int, default=3, help="retries of a task or actor whose process died (default 3)"
    )
    c.add_argument("--no-progress", action="store_true", help="show no progress while the job runs")
    options.add_debug(c)
    c.set_defaults(func=run)


def _quiet_ray_logs() -> None:
    """Ray Data's per-run INFO lines and its "progress bars disabled" note; this command prints its own progress."""
    from stdd_fast.deps import require

    require("ray")
    import ray.data  # noqa: F401  (configures Ray Data's loggers: set their levels after it)

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
    from stdd_fast.batch import BatchConfig, classify_corpus

    chosen = options.settings_of(args)
    config = BatchConfig(
        args.weights,
        chosen.classes,  # an exported graph has its classes baked in
        predictor=chosen.predictor,
        sampling=chosen.sampling,
        decode=chosen.decode,
        top_k=args.top_k,
        embeddings=args.embeddings,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        decode_cpus=args.decode_cpus,
        max_retries=args.max_retries,
    )
    videos = expand_inputs(args.inputs, prefix=args.prefix)
    _quiet_ray_logs()
    summary = None
    with _interrupts() as interrupted, contextlib.suppress(KeyboardInterrupt):  # said below, as exit 130
        summary = classify_corpus(
            videos, args.output, config, resume=args.resume, ray_address=args.ray_address, progress=not args.no_progress
        )
    if summary is None or interrupted.is_set():
        print(_written(args.output, videos), file=sys.stderr)
        return EXIT_INTERRUPTED
    for note in summary.unreadable:
        print(f"stdd batch: note: skipped an unreadable results file (left by a killed run): {note}", file=sys.stderr)
    for note in summary.foreign:
        print(f"stdd batch: error: a file stdd batch did not write: {note}; move it out of the folder", file=sys.stderr)
    for _, _, message in summary.failures[:SHOWN_FAILURES]:
        print(f"stdd: error: {message}", file=sys.stderr)
    if summary.failed > SHOWN_FAILURES:
        more = summary.failed - SHOWN_FAILURES
        print(f"stdd batch: and {more} more failed videos: see error_type / error in {summary.output}", file=sys.stderr)
    print(f"stdd batch: {summary.line()}", flush=True)
    return EXIT_FAILED if summary.failures or summary.foreign else EXIT_OK


@contextlib.contextmanager
def _interrupts() -> Iterator[threading.Event]:
    """Ctrl-C while the job runs, remembered: Ray defers SIGINT inside its own calls, and the KeyboardInterrupt
    it raises later can be lost in its shutdown; the job then still ends as interrupted (exit 130)."""
    seen = threading.Event()

    def interrupt(signum, frame) -> None:
        seen.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def _written(output: str, videos: list[str]) -> str:
    """What an interrupted job leaves: the videos with a row in ``output``, and how to finish."""
    from stdd_fast.batch.config import absolute
    from stdd_fast.batch.output import OutputFolder

    folder = OutputFolder(output)
    kept = folder.scan().kept if folder.path.is_dir() else {}
    wanted = list(dict.fromkeys(absolute(v) for v in videos))
    rows = [kept[p] for p in wanted if p in kept]
    failed = sum(1 for ok, _, _ in rows if not ok)
    return (
        f"stdd batch: interrupted; {len(rows)} of {len(wanted)} videos have their row in {folder.path} ({failed} "
        "failed): run the same command with --resume to complete the job"
    )
