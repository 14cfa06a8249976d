"""Video input benchmarks: decode throughput per backend, and where the time of classify goes.

Two functions for ``python -m stdd_fast.bench --video`` (they measure and return dicts; they never
assert): :func:`decode_throughput` (frames/s and clips/s of one decode backend on a list of files)
and :func:`stage_breakdown` (an Engine's per-stage seconds on the same files, with the decode
backend that ran each file named).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from stdd_fast.checks import check_int
from stdd_fast.errors import StddError
from stdd_fast.video.config import SamplingConfig, check_backend
from stdd_fast.video.decoding import read_clips
from stdd_fast.video.pyav import probe


def decode_throughput(
    paths: Sequence[str | Path],
    backend: str = "pyav",
    sampling: SamplingConfig | None = None,
    device: str | torch.device = "cpu",
    size: int | None = None,
    batch: int = 8,
    repeats: int = 1,
) -> dict:
    """Decode the sampled views of every file ``repeats`` times with one backend; throughput.

    backend: "pyav" (one video at a time in this thread) or "dali" (``batch`` videos per pipeline
    run on ``device``: its CPU decoder, or NVDEC on a CUDA device). sampling: the views to decode
    (None: the released 3 x 8 protocol). size: None times decoding only
    (uint8 frames); an int adds the model transforms (for DALI inside the pipeline, for PyAV the
    torch transforms on ``device``). Files the backend cannot decode are skipped and listed with
    the reason. Returns {backend, device, videos, skipped, clips, frames, seconds, probe_seconds,
    frames_per_s, clips_per_s, videos_per_s}: a clip is one view of T frames; ``seconds`` excludes
    probing (the packet index) and file reading, reported as ``probe_seconds``.
    """
    check_backend(backend)
    sampling = SamplingConfig() if sampling is None else sampling
    check_int("repeats", repeats)
    dev = torch.device(device)
    skipped: dict[str, str] = {}
    decoded, seconds, probe_seconds = 0, 0.0, 0.0
    if backend == "pyav":
        from stdd_fast.video.transforms import preprocess

        for _ in range(repeats):
            for path in paths:
                start = time.perf_counter()
                try:
                    frames = read_clips(path, sampling, "pyav").frames  # [V, T, H, W, 3]
                    if size is not None:
                        preprocess(frames, size, device=dev)
                except StddError as e:
                    skipped[str(path)] = str(e)
                    continue
                _sync(dev)
                seconds += time.perf_counter() - start
                decoded += 1
    else:
        from stdd_fast.video import dali

        decoder = dali.DaliDecoder(dev, size=size, batch_size=batch)
        jobs = []
        start = time.perf_counter()
        for path in paths:
            try:
                info = probe(path)
                problem = dali.codec_problem(info, dev)
                if problem is not None:
                    skipped[str(path)] = problem
                    continue
                jobs.append(dali.DaliJob.from_file(path, sampling.indices(info), info))
            except StddError as e:
                skipped[str(path)] = str(e)
        probe_seconds = time.perf_counter() - start
        if jobs:
            dali.timed_run(decoder, jobs[:batch])  # warm-up: builds the pipeline and the decoders
        for _ in range(repeats):
            outputs, run_seconds = dali.timed_run(decoder, jobs)
            seconds += run_seconds
            for job, out in zip(jobs, outputs, strict=True):
                if isinstance(out, StddError):
                    skipped[job.source] = str(out)
                else:
                    decoded += 1
    clips = decoded * sampling.num_views
    frames = clips * sampling.num_frames
    rate = (lambda n: n / seconds) if seconds > 0 else (lambda n: 0.0)
    return {
        "backend": backend,
        "device": str(dev),
        "videos": decoded,
        "skipped": skipped,
        "clips": clips,
        "frames": frames,
        "seconds": seconds,
        "probe_seconds": probe_seconds,
        "frames_per_s": rate(frames),
        "clips_per_s": rate(clips),
        "videos_per_s": rate(decoded),
    }


def stage_breakdown(engine: object, paths: Sequence[str | Path]) -> dict:
    """Classify ``paths`` with ``engine`` (a :class:`stdd_fast.Engine`); seconds per stage and backends.

    Returns {decode_backend: the engine's setting, backends: {name: videos}, notes: {source: why
    PyAV decoded it}, videos, failed, wall_seconds, videos_per_s, clips_per_s, stages: {decode,
    preprocess, encode, score: summed seconds}, shares: {stage: fraction of the summed seconds}}.
    Decoding overlaps the model (worker threads), so the stage sums can exceed the wall time; on the
    GPU DALI path the transforms run inside the decode pipeline and count as decode.
    """
    start = time.perf_counter()
    results = engine.classify(list(paths), progress=False)
    _sync(engine.device)
    wall = time.perf_counter() - start
    ok = [r for r in results if r.ok]
    stages = {name: sum(getattr(r.timings, name) for r in ok) for name in ("decode", "preprocess", "encode", "score")}
    total = sum(stages.values())
    views = engine.sampling.num_views
    return {
        "decode_backend": engine.decode_backend,
        "backends": dict(Counter(r.decode_backend for r in ok)),
        "notes": {r.source: r.decode_note for r in results if r.decode_note},
        "videos": len(ok),
        "failed": {r.source: str(r.error) for r in results if not r.ok},
        "wall_seconds": wall,
        "videos_per_s": len(ok) / wall if wall > 0 else 0.0,
        "clips_per_s": len(ok) * views / wall if wall > 0 else 0.0,
        "stages": stages,
        "shares": {name: (value / total if total > 0 else 0.0) for name, value in stages.items()},
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
