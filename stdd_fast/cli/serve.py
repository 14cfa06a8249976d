"""``stdd serve``: STDD behind a real Triton Inference Server, video files in, ranked actions out.

Writes the model repository (:mod:`stdd_fast.serve.repository`: model ``stdd``, and
``stdd_frames`` from ``--frames-model``) to ``--repository`` or a temporary folder, runs
``tritonserver`` on it (:mod:`stdd_fast.serve.server`), prints the endpoints once it is ready and
forwards SIGINT / SIGTERM for a graceful stop. When the server cannot start (a port taken, no
binary, a model that failed to load) it exits non-zero with one line saying why. Clients cannot load,
replace or unload models unless the operator passes ``--allow-model-control``
(:mod:`stdd_fast.serve.server`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from stdd_fast.cli import options
from stdd_fast.cli.runner import EXIT_INTERRUPTED, EXIT_OK
from stdd_fast.errors import ConfigError
from stdd_fast.serve.server import ADMIN_HEADER

ADMIN_KEY_ENV = "STDD_SERVE_ADMIN_KEY"


def add_parser(sub) -> None:
    s = sub.add_parser(
        "serve",
        help="serve STDD with Triton Inference Server (video bytes in, actions out)",
        description="Serve STDD with NVIDIA Triton Inference Server: model 'stdd' takes encoded video files (VIDEO, "
        "BYTES [n,1]; optional TOP_K) and returns LABELS and SCORES. Runs tritonserver from --tritonserver, PATH, "
        "or the nvidia-pytriton wheel; Ctrl-C or SIGTERM stops it.",
    )
    options.add_weights(s, what="checkpoint (torch), or an exported .onnx / .plan with --backend onnxruntime/tensorrt")
    options.add_classes(s)
    options.add_predictor(s)
    options.add_sampling(s)
    options.add_decode(s)
    m = s.add_argument_group("requests")
    m.add_argument("--max-video-mb", type=float, default=256.0, help="largest video file a request may send, MiB")
    m.add_argument(
        "--min-frames",
        type=int,
        default=None,
        help="videos with fewer frames get an error (default: one clip, --frames; 1 accepts any video)",
    )
    m.add_argument("--frames-model", metavar="F", help="also serve an stdd-export .onnx / .plan as model stdd_frames")
    t = s.add_argument_group("server")
    t.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    t.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default 8000)")
    t.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    t.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    t.add_argument("--instances", type=int, default=1, help="model instances (processes), per GPU on a GPU")
    t.add_argument("--max-batch", type=int, default=8, help="videos Triton batches into one execution (default 8)")
    t.add_argument("--max-queue-delay-us", type=int, default=2000, help="longest wait to fill a batch (default 2000)")
    t.add_argument("--repository", metavar="DIR", help="write the model repository here (default: a temporary one)")
    t.add_argument("--tritonserver", metavar="PATH", help="tritonserver binary (default: PATH, else nvidia-pytriton's)")
    t.add_argument(
        "--allow-model-control",
        action="store_true",
        help=f"let clients load and unload models through Triton's model-repository API, with the header "
        f"'{ADMIN_HEADER}: <key>' where the key is ${ADMIN_KEY_ENV} (at least 16 characters); off by default: a "
        "load request can carry Python the server would import",
    )
    t.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for readiness (default 300)")
    t.add_argument(
        "--exit-timeout",
        type=int,
        default=10,
        help="seconds a stop waits for requests in flight and open client connections (default 10)",
    )
    options.add_debug(s)
    s.set_defaults(func=run)


_EXPORTED = {".onnx": "onnxruntime", ".plan": "tensorrt"}


def _baked_classes(weights: str) -> tuple[str, ...]:
    """The class names an exported file scores (read from its metadata: nothing is loaded)."""
    if Path(weights).suffix == ".plan":
        from stdd_fast.graphs.plan import read_sidecar, sidecar_spec

        return tuple(sidecar_spec(read_sidecar(weights)).classes)
    from stdd_fast.graphs.spec import read_onnx_spec

    return tuple(read_onnx_spec(weights).classes)


def _classifier(args: argparse.Namespace, chosen, exported: bool):
    """The classifier the repository carries: loaded, built once with the model's text tower, or None (baked in)."""
    from stdd_fast.factory import load_model
    from stdd_fast.predict.build import check_baked_classes, load_classifier

    source = chosen.classes
    if exported:  # its classes are baked in: --classes may only repeat them, --classifier is checked against them
        if source.prompts is not None:
            raise ConfigError(f"{args.weights}: its classes and prompts are baked in; drop --xprompt / --askg")
        check_baked_classes(args.weights, _baked_classes(args.weights), source.classes)
        return load_classifier(dataclasses.replace(source, classes=None), None)
    source.require()
    if source.classifier is not None:
        return load_classifier(source, None)
    p = chosen.predictor
    return load_classifier(source, load_model(args.weights, arch=p.arch, trust_pickle=p.trust_pickle))


def _write_repository(args: argparse.Namespace, repository: Path, backends: list[str]) -> list[str]:
    """The serving layout in ``repository``; the models to load (stdd_frames only where its backend exists)."""
    from stdd_fast.devices import resolve_device
    from stdd_fast.serve.model import ServingSettings
    from stdd_fast.serve.repository import SERVING_MODEL, frames_model_name, write_serving_model

    chosen = options.settings_of(args)
    device = resolve_device(chosen.predictor.device)
    cores = os.cpu_count() or 1
    exported = _EXPORTED.get(Path(args.weights).suffix)  # the backend an exported graph runs in
    settings = ServingSettings(
        weights=args.weights,
        predictor=dataclasses.replace(chosen.predictor, device="auto"),  # each Triton instance runs on its own
        sampling=chosen.sampling,
        decode=chosen.decode,
        max_video_mb=args.max_video_mb,
        min_frames=args.min_frames,
        cpu_threads=max(1, cores // args.instances) if device.type == "cpu" and args.instances > 1 else None,
    )
    write_serving_model(
        repository,
        settings,
        _classifier(args, chosen, exported is not None),
        max_batch_size=args.max_batch,
        max_queue_delay_us=args.max_queue_delay_us,
        instance_kind=device.type if device.type == "cpu" else "gpu",
        instance_count=args.instances,
        gpus=() if device.index is None else (device.index,),
    )
    models = [SERVING_MODEL]
    if args.frames_model:
        from stdd_fast.serve.triton_repo import write_triton_repo

        name = frames_model_name(SERVING_MODEL)
        needed = _EXPORTED.get(Path(args.frames_model).suffix, "tensorrt")
        kind = "cpu" if device.type == "cpu" else "gpu"
        if needed in backends:
            write_triton_repo(repository, args.frames_model, name=name, instance_kind=kind)
            models.append(name)
        else:  # the server loads every model of its repository: one it cannot load stays out
            print(
                f"stdd serve: note: {name} is not served: it needs Triton's {needed} backend and this tritonserver "
                f"has {', '.join(backends) or 'none'} (NVIDIA's tritonserver container has it: --tritonserver)",
                file=sys.stderr,
            )
    return models


def _print_ready(server, metadata: dict) -> None:
    e = server.endpoints
    version = metadata.get("version", "?")
    models = ", ".join(server.models)
    print(f"stdd serve: Triton Inference Server {version} ready (pid {server.process.pid}); models: {models}")
    print(f"  HTTP     {e.http_url}  (POST /v2/models/stdd/infer)")
    print(f"  gRPC     {e.grpc_url}")
    print(f"  metrics  {e.metrics_url}")
    print(f"  repository {server.repository}")
    if server.model_control:
        print(f"  model control: on (clients with the header '{ADMIN_HEADER}: ${ADMIN_KEY_ENV}')")
    else:
        print("  model control: off (clients cannot load, replace or unload models)")
    print("stdd serve: Ctrl-C or SIGTERM stops the server", flush=True)


def _serve(server, ready_timeout: float) -> int:
    """Run until a signal (forwarded to the server) stops it; ServerError if it stops by itself."""
    from stdd_fast.serve.server import ServerError

    received: list[int] = []

    def forward(signum, frame) -> None:
        received.append(signum)
        server.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        try:
            metadata = server.wait_ready(ready_timeout, cancelled=lambda: bool(received))
        except ServerError:
            if received:
                print("stdd serve: stopped before the server was ready", file=sys.stderr)
                return EXIT_INTERRUPTED
            raise
        _print_ready(server, metadata)
        while server.process.poll() is None:
            time.sleep(0.2)
        if not received:
            raise ServerError(f"tritonserver stopped by itself (code {server.process.returncode}): {server.failure()}")
        code = server.stop()
        last = server.log_messages()[-1:]  # e.g. "Exit timeout expired": clients kept connections open
        why = f": {last[0]}" if code and last else ""
        print(
            f"stdd serve: stopped ({signal.Signals(received[0]).name}; tritonserver exit code {code}{why})", flush=True
        )
        return EXIT_OK
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(args: argparse.Namespace) -> int:
    from stdd_fast.serve.server import Endpoints, ServerError, TritonServer, check_numpy_support, find_tritonserver

    endpoints = Endpoints(args.host, args.http_port, args.grpc_port, args.metrics_port)
    for flag, value in (
        ("--instances", args.instances),
        ("--max-batch", args.max_batch),
        ("--exit-timeout", args.exit_timeout),
    ):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be >= 1")
    options.settings_of(args)  # conflicting class flags and bad values fail before anything starts
    admin_key = None
    if args.allow_model_control:
        admin_key = os.environ.get(ADMIN_KEY_ENV)
        if not admin_key:
            raise ConfigError(
                f"--allow-model-control needs the key clients must send, in ${ADMIN_KEY_ENV} (at least 16 characters; "
                f"e.g. export {ADMIN_KEY_ENV}=$(python -c 'import secrets; print(secrets.token_hex(16))'))"
            )
    endpoints.check_free()  # a taken port or a missing binary fail before the model loads
    binary = find_tritonserver(args.tritonserver)
    check_numpy_support(binary)  # a server known to fail every request here is refused before the model loads
    workdir = Path(tempfile.mkdtemp(prefix="stdd-serve-"))
    keep = False
    try:
        repository = Path(args.repository) if args.repository else workdir / "repository"
        models = _write_repository(args, repository, binary.backends())
        server = TritonServer(
            binary, repository, endpoints, models, workdir / "server", args.exit_timeout, admin_key=admin_key
        )
        return _serve(server, args.ready_timeout)
    except ServerError:
        keep = True  # the message names the server's log in it
        raise
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
