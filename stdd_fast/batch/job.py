"""A corpus job on Ray Data: the dataset of results (:func:`corpus_dataset`) and the whole job, written
to a Parquet folder with resume and exactly-once rows (:func:`classify_corpus`).

    paths --(CPU tasks: DecodeVideos)--> clips in Ray's object store --(actors: ClassifyVideos)--> rows

Ray Data streams: decoding and inference run at once, bounded by its backpressure. Without an
address a local Ray starts on this machine (and stops at the end); with ``ray_address="auto"`` or
``"ray://..."`` the job joins that cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stdd_fast.batch.config import BatchConfig, absolute
from stdd_fast.batch.output import OutputFolder, Scan
from stdd_fast.batch.progress import Progress
from stdd_fast.batch.reaper import Reaper
from stdd_fast.batch.rows import result_schema
from stdd_fast.batch.stages import ClassifyVideos, DecodeVideos, PredictorPlan, ProbeFacts, probe_predictor
from stdd_fast.deps import require
from stdd_fast.errors import ConfigError

VIDEOS_PER_TASK = 4  # paths per decoding task: small blocks keep results flowing and retries cheap
CONNECT_S = 5.0  # seconds a --ray-address has to accept a connection and answer
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # and an empty SETTINGS


@dataclass(frozen=True)
class CorpusSummary:
    """What a :func:`classify_corpus` call did. ``failures``: (path, error type, message) of the videos that
    failed; ``skipped``: videos a resumed job already had; ``unreadable``: files of DIR it had to skip;
    ``foreign``: files of DIR it did not write, found after the run ("FILE: why"; the documented read of DIR
    would read them with the results: move them out)."""

    output: Path
    total: int
    succeeded: int
    failures: tuple[tuple[str, str, str], ...]
    skipped: int
    seconds: float
    unreadable: tuple[str, ...] = ()
    foreign: tuple[str, ...] = ()

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def videos_per_s(self) -> float:
        """Videos classified (or failed) by this call per second of its run, Ray's start-up included."""
        return (self.total - self.skipped) / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        skipped = f", {self.skipped} already done" if self.skipped else ""
        return (
            f"{self.total} videos: {self.succeeded} ok, {self.failed} failed{skipped}; "
            f"{self.videos_per_s:.2f} videos/s; results in {self.output}"
        )


# What Ray prints that a user of stdd batch cannot act on, turned off where Ray reads it: the colour codes of the
# worker-log prefix (the terminal filter would show them as escapes; unless set already), and the warning that a new
# local cluster has token authentication on (Ray's default, which is kept). The C++ core worker's error that Ray
# Data's actor arguments sit in the object store (ray-project/ray#53727) stays: the only switch, RAY_BACKEND_LOG_LEVEL,
# hides every error of every Ray process and prints a line of its own in each.
_QUIET_RAY = {"RAY_COLOR_PREFIX": "0"}
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _quiet_ray() -> None:
    for name, value in _QUIET_RAY.items():
        os.environ.setdefault(name, value)
    logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)


def _start_local(ray) -> Reaper:
    """A local Ray, and the :class:`~stdd_fast.batch.reaper.Reaper` that kills it if this process dies first."""
    _quiet_ray()
    reaper = Reaper()
    try:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    except BaseException:
        reaper.stop()
        raise
    reaper.started()
    return reaper


def check_address(address: str) -> None:
    """ConfigError, in seconds, when no Ray cluster answers at ``address`` (``ray.init`` would wait minutes).

    ``HOST:PORT`` and ``ray://HOST:PORT`` must accept a connection and answer it as a gRPC server does
    (Ray's GCS and Ray Client are gRPC); ``auto`` is Ray's to find (it fails at once when there is none).
    """
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: give auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_S) as sock:
            sock.settimeout(CONNECT_S)
            sock.sendall(_HTTP2_PREFACE)
            head = sock.recv(9)  # a gRPC server opens with a SETTINGS frame (type 4)
    except OSError as e:
        why = f"no answer within {CONNECT_S:g} s" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
        raise ConfigError(
            f"--ray-address {address}: no Ray cluster there ({why}); start one (ray start --head) or check the "
            "address, or leave --ray-address out to run a local Ray"
        ) from None
    if len(head) < 4 or head[3] != 4:
        raise ConfigError(
            f"--ray-address {address}: what listens there is not a Ray cluster (it does not speak gRPC); check the "
            "address (the head node's GCS port, 6379 by default, or ray://HOST:10001 for Ray Client)"
        )


@contextmanager
def ray_session(address: str | None = None) -> Iterator[bool]:
    """Ray for this process: the one already initialised, else a local Ray (``address`` None) or the cluster
    at ``address``; shut down at the end only when started here (a local one dies with this process however it
    ends). Yields whether it runs on this machine only."""
    ray = require("ray")
    require("pyarrow")
    if ray.is_initialized():
        yield address is None
        return
    reaper = None
    if address is None:
        reaper = _start_local(ray)
    else:
        check_address(address)
        _quiet_ray()
        try:
            ray.init(address=address, logging_level="WARNING")
        except ConnectionError as e:
            raise ConfigError(f"--ray-address {address}: {' '.join(str(e).split())}") from None
    try:
        yield address is None
    finally:
        ray.shutdown()
        if reaper is not None:
            reaper.stop()


def _plan(config: BatchConfig, wait_for_resources: bool) -> tuple[PredictorPlan, dict]:
    """The actors' device, dtype and Ray resources, checked against the cluster's (ConfigError when they do
    not fit, unless ``wait_for_resources``: an autoscaling cluster may grow)."""
    ray = require("ray")
    cluster = ray.cluster_resources()
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    asked = config.gpus_per_worker
    device = config.predictor.device
    if device == "auto":  # the workers' device: CUDA where the cluster (or the request) has GPUs
        device = "cuda" if (asked > 0 if asked is not None else gpus > 0) else "cpu"
    cuda = device.startswith("cuda")
    if cuda and gpus == 0:
        raise ConfigError(f"device={device!r}, but the Ray cluster has no GPU: use device 'cpu' (--device cpu)")
    dtype = config.predictor.dtype if config.predictor.dtype != "auto" else ("bfloat16" if cuda else "float32")
    worker_gpus = asked if asked is not None else (1.0 if cuda else 0.0)
    spare = (cpus - config.decode_cpus) / config.workers  # what is left per actor beside one decoding task
    worker_cpus = config.cpus_per_worker or (1.0 if cuda or wait_for_resources else max(min(1.0, spare), 0.0))
    if not cuda and config.cpus_per_worker is None and config.workers > max(cpus, 1.0):
        raise ConfigError(
            f"--workers {config.workers}: more inference actors than the {cpus:g} CPUs of the Ray cluster (each actor "
            f"is a process holding a predictor): use at most {max(int(cpus), 1)}, or size them with --cpus-per-worker"
        )
    need_cpus = config.workers * worker_cpus + config.decode_cpus
    if worker_cpus <= 0 or need_cpus > cpus or config.workers * worker_gpus > gpus:
        message = (
            f"{config.workers} workers x ({worker_cpus:g} CPUs, {worker_gpus:g} GPUs) + one decoding task of "
            f"{config.decode_cpus:g} CPUs do not fit the Ray cluster ({cpus:g} CPUs, {gpus:g} GPUs): lower "
            "--workers, --cpus-per-worker, --gpus-per-worker or --decode-cpus"
        )
        if not wait_for_resources:  # Ray Data would wait forever for resources no node adds
            raise ConfigError(message)
        warnings.warn(message + " (waiting for the cluster to grow)", stacklevel=3)
    resources = {"num_cpus": worker_cpus, "num_gpus": worker_gpus}
    return PredictorPlan(config, dataclasses.replace(config.predictor, device=device, dtype=dtype)), resources


def _probe(plan: PredictorPlan, resources: dict) -> ProbeFacts:
    """Build the predictor once on a worker like the actors'; its typed error (bad checkpoint...) raised here."""
    ray = require("ray")
    task = ray.remote(max_retries=0, **resources)(probe_predictor)
    try:
        return ray.get(task.remote(plan))
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        raise (cause if isinstance(cause, Exception) else e) from None


def corpus_dataset(inputs: Sequence[str | Path], config: BatchConfig, *, wait_for_resources: bool = False):
    """A Ray ``Dataset`` with one result row per video of ``inputs`` (the schema of :mod:`stdd_fast.batch.rows`).

    Lazy, like every Ray dataset: chain your own stages, then consume or write it. Builds the
    predictor once on a worker first (to check it and size the batches); starts a local Ray when
    none is initialised. Workers the cluster cannot hold now are a ConfigError, unless
    ``wait_for_resources`` (an autoscaling cluster).
    """
    ray = require("ray")
    if not ray.is_initialized():
        _start_local(ray)  # for the life of this process (its reaper ends with it)
    paths = [absolute(p) for p in inputs]
    if not paths:
        raise ConfigError("no videos to classify: pass files, folders, globs or list files")
    plan, resources = _plan(config, wait_for_resources)
    facts = _probe(plan, resources)
    views = config.sampling.num_views
    shape = (views, config.sampling.num_frames, facts.embed_dim) if config.embeddings else None
    threads = None if plan.predictor.device.startswith("cuda") else max(1, math.floor(resources["num_cpus"]))
    blocks = max(1, math.ceil(len(paths) / VIDEOS_PER_TASK))
    with warnings.catch_warnings():
        # Ray 2.60 flags max_retries / max_restarts / max_task_retries as deprecated "ray_remote_args" but
        # names no replacement; they are set explicitly: Ray's own defaults retry a crashing worker forever.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        data = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
        data = data.map(
            DecodeVideos(config, facts.image_size), num_cpus=config.decode_cpus, max_retries=config.max_retries
        )
        return data.map_batches(
            ClassifyVideos,
            fn_constructor_args=(facts.plan, result_schema(shape), threads),
            batch_size=max(1, facts.batch_clips // views),
            compute=ray.data.ActorPoolStrategy(size=config.workers),
            batch_format="numpy",
            max_restarts=config.max_retries,
            max_task_retries=config.max_retries,
            **resources,
        )


def classify_corpus(
    inputs: Sequence[str | Path],
    output: str | Path,
    config: BatchConfig | str | Path,
    *,
    resume: bool = False,
    ray_address: str | None = None,
    progress: bool | None = None,
    **options,
) -> CorpusSummary:
    """Classify every video of ``inputs`` on Ray Data into the Parquet folder ``output``; returns the summary.

    config: a :class:`BatchConfig`, or the weights with its fields as keywords (``classes=[...]``,
    ``top_k=``, ``workers=``...). A video that fails gets its row with the typed error and never
    stops the job. ``resume``: ``output`` holds an earlier run of this job: its videos with a
    successful row are skipped, the failed and missing ones run again. At the end ``output`` holds
    every video once (:mod:`stdd_fast.batch.output`). ``progress``: True shows done / failed /
    videos per second (a bar on a terminal, lines elsewhere); None only on a terminal.
    """
    if not isinstance(config, BatchConfig):
        config = BatchConfig(config, **options)
    elif options:
        raise ConfigError("pass a BatchConfig or the weights with keywords, not both")
    paths = list(dict.fromkeys(absolute(p) for p in inputs))
    if not paths:
        raise ConfigError("no videos to classify: pass files, folders, globs or list files")
    folder = OutputFolder(output)
    settings = config.result_settings()
    folder.prepare(settings, resume)  # before Ray starts: a folder that cannot be used fails at once
    before = folder.scan() if resume else Scan()
    todo = [p for p in paths if p not in before.succeeded]
    start = time.perf_counter()
    if todo:
        with ray_session(ray_address) as local:
            data = corpus_dataset(todo, config, wait_for_resources=not local)
            folder.record(settings)  # the predictor was built: from here on DIR holds this job
            data.context.enable_progress_bars = False  # ours counts what is written, failures included
            run = folder.new_run()
            with Progress(run, len(todo), progress):
                data.write_parquet(str(run))
    seconds = time.perf_counter() - start
    after = folder.consolidate()
    return CorpusSummary(
        output=folder.path,
        total=len(paths),
        succeeded=sum(1 for p in paths if after.kept.get(p, (False,))[0]),
        failures=_failures(after, paths),
        skipped=len(paths) - len(todo),
        seconds=seconds,
        unreadable=tuple(dict.fromkeys(before.unreadable + after.unreadable)),
        foreign=tuple(dict.fromkeys(after.foreign + folder.foreign())),  # planted while the job ran
    )


def _failures(scan: Scan, paths: list[str]) -> tuple[tuple[str, str, str], ...]:
    """(path, error type, message) of the inputs whose kept row is a failure, or that have no row at all."""
    pq = require("pyarrow.parquet")
    wanted = {p for p in paths if not scan.kept.get(p, (False,))[0]}
    found: dict[str, tuple[str, str, str]] = {}
    for file in scan.files:
        t = pq.ParquetFile(file).read(columns=["path", "error_type", "error"]).to_pylist()
        found.update((r["path"], (r["path"], r["error_type"], r["error"])) for r in t if r["path"] in wanted)
    missing = ("OutputError", "no row was written for it; run again with --resume")
    return tuple(found.get(p, (p, *missing)) for p in paths if p in wanted)
