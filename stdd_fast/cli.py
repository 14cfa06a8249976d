"""The ``stdd`` command: classify videos or live streams, build a classifier artifact, describe the environment.

Exit codes:

* 0: success;
* 1: some videos could not be classified, or a stream ended with an error (the rest is still printed);
* 2: usage or configuration error (arguments, class list, classifier artifact, device);
* 3: the checkpoint could not be loaded;
* 4: a requested optional backend is not installed (e.g. ``--impl triton`` without Triton);
* 70: an internal error (a bug; ``--debug`` prints the traceback);
* 130: interrupted.

Errors are one line on stderr, ``stdd: error: ...``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

EXIT_OK = 0
EXIT_VIDEO_FAILED = 1
EXIT_USAGE = 2
EXIT_CHECKPOINT = 3
EXIT_BACKEND = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

# (name, module to import, distribution for the version, what it enables, how to install it)
OPTIONAL_BACKENDS = (
    ("triton", "triton", "triton", "Triton kernels (--impl triton)", "pip install 'stdd-fast[triton]'"),
    ("dali", "nvidia.dali", None, "DALI GPU decoding", "pip install 'stdd-fast[dali]'"),
    ("onnx", "onnx", "onnx", "ONNX export", "pip install 'stdd-fast[export]'"),
    ("onnxruntime", "onnxruntime", "onnxruntime", "ONNX parity checks", "pip install 'stdd-fast[export]'"),
    ("tensorrt", "tensorrt", "tensorrt", "TensorRT engines", "pip install 'stdd-fast[trt]' (NVIDIA GPUs only)"),
    ("pynvml", "pynvml", "nvidia-ml-py", "GPU telemetry", "pip install 'stdd-fast[gpu]'"),
)


class _UsageError(Exception):
    """An argparse error, reported as one line by :func:`main`."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the usage and exit
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output (JSON lines)")
    common.add_argument("--debug", action="store_true", help="print tracebacks on errors")
    return common


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, metavar="CKPT", help="checkpoint file (OpenAI/open_clip/STDD)")
    p.add_argument("--arch", default=None, help="architecture name (default: detected from the weights)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--trust-pickle", action="store_true", help="allow pickles that run code (only for files you trust)")


def _class_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", metavar='"a,b,c"', help="comma-separated class names")
    p.add_argument(
        "--classes-file", metavar="F", help="class names: index->class JSON, classes_label YAML, or one per line"
    )
    p.add_argument("--xprompt", metavar="YAML", help="official classes_xprompt_*.yml (prompt-level classifier)")


def _engine_options(p: argparse.ArgumentParser) -> None:
    from stdd_fast.engine import DTYPES
    from stdd_fast.ops import IMPLS

    p.add_argument("--classifier", metavar="ART", help="a classifier artifact from `stdd build-classifier`")
    p.add_argument("--top-k", type=int, default=5, help="classes to print per video or window (default 5)")
    p.add_argument("--frames", type=int, default=8, help="frames per view or window (default 8)")
    p.add_argument("--sampling-rate", type=int, default=16, help="frame stride at 30 fps (default 16)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--impl", choices=IMPLS, default="auto", help="STCA implementation (default auto)")
    p.add_argument("--batch-clips", type=int, default=None, help="clips per forward (default: memory budget)")


def build_parser() -> argparse.ArgumentParser:
    from stdd_fast.stream import BACKPRESSURE
    from stdd_fast.video.decode import DECODE_CHOICES
    from stdd_fast.video.sampling import SAMPLING_MODES

    common = _common()
    parser = _Parser(
        prog="stdd",
        description="STDD zero-shot action recognition. Exit codes: 0 ok, 1 some videos failed, 2 usage or "
        "configuration error, 3 checkpoint error, 4 backend unavailable, 70 internal error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("classify", parents=[common], help="rank action classes for video files")
    c.add_argument("videos", nargs="+", metavar="VIDEO")
    _model_options(c)
    _class_options(c)
    _engine_options(c)
    c.add_argument("--views", type=int, default=3, help="temporal views per video (default 3)")
    c.add_argument("--sampling", choices=SAMPLING_MODES, default="official", help="frame sampling protocol")
    c.add_argument(
        "--decode-backend",
        choices=DECODE_CHOICES,
        default="auto",
        help="video decoder: auto (DALI/NVDEC on a CUDA device when installed, else PyAV), pyav, dali",
    )
    c.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    c.set_defaults(func=_classify)

    s = sub.add_parser("stream", parents=[common], help="classify live streams window by window")
    s.add_argument("sources", nargs="+", metavar="SOURCE", help="file, URL (rtsp://, http://...) or device")
    _model_options(s)
    _class_options(s)
    _engine_options(s)
    s.add_argument("--window", default=None, help="window span: frames (113) or seconds (3.7s); default: the model's")
    s.add_argument("--stride", default="16", help="step between windows: frames (16) or seconds (0.5s); default 16")
    s.add_argument("--fps", type=float, default=None, help="source frame rate (default: from the source)")
    s.add_argument("--on-backpressure", choices=BACKPRESSURE, default="block", help="slow consumer policy")
    s.add_argument("--max-retries", type=int, default=3, help="reconnects in a row without a new frame (default 3)")
    s.add_argument("--stall-timeout", type=float, default=10.0, help="seconds without a frame = failure (default 10)")
    s.add_argument("--realtime", action="store_true", help="pace sources by their timestamps (files play live)")
    s.add_argument("--format", dest="source_format", default=None, help="PyAV input format (e.g. v4l2)")
    s.set_defaults(func=_stream)

    b = sub.add_parser("build-classifier", parents=[common], help="encode class prompts into an artifact")
    _model_options(b)
    _class_options(b)
    b.add_argument("--askg", metavar="YAML", help="official classes_ASKG_*.yml (rendered to prompt clauses)")
    b.add_argument("--reduce", choices=("auto", "mean", "none"), default="auto", help="template averaging")
    b.add_argument("--match", choices=("position", "key"), default="position", help="pair names with YAML entries")
    b.add_argument("-o", "--output", required=True, metavar="ART", help="where to write the .safetensors artifact")
    b.set_defaults(func=_build_classifier)

    i = sub.add_parser("info", parents=[common], help="versions, devices and optional backends")
    i.set_defaults(func=_info)
    return parser


def _class_names(args: argparse.Namespace) -> list[str] | None:
    from stdd_fast.errors import ConfigError
    from stdd_fast.prompts import read_class_names

    if args.classes is not None and args.classes_file is not None:
        raise ConfigError("pass --classes or --classes-file, not both")
    if args.classes is not None:
        names = [n.strip() for n in args.classes.split(",") if n.strip()]
        if not names:
            raise ConfigError(f"--classes {args.classes!r} holds no class names; e.g. --classes 'run,jump,swim'")
        return names
    if args.classes_file is not None:
        return read_class_names(args.classes_file)
    return None


def _engine(args: argparse.Namespace, **options: object) -> object:
    """The Engine the command line describes (classes from --classes/--classes-file/--xprompt/--classifier)."""
    from stdd_fast.engine import Engine
    from stdd_fast.errors import ConfigError

    names = _class_names(args)
    if args.classifier is not None and (names is not None or args.xprompt is not None):
        raise ConfigError("--classifier already holds the classes: drop --classes/--classes-file/--xprompt")
    if args.classifier is None and names is None and args.xprompt is None:
        raise ConfigError("no classes: pass --classes 'a,b,c', --classes-file F, --xprompt YAML or --classifier ART")
    return Engine(
        args.weights,
        classes=names,
        classifier=args.classifier,
        xprompt=args.xprompt,
        device=args.device,
        dtype=args.dtype,
        impl=args.impl,
        arch=args.arch,
        num_frames=args.frames,
        sampling_rate=args.sampling_rate,
        batch_clips=args.batch_clips,
        trust_pickle=args.trust_pickle,
        **options,
    )


def _classify(args: argparse.Namespace) -> int:
    engine = _engine(args, num_views=args.views, sampling=args.sampling, decode_backend=args.decode_backend)
    results = engine.classify(args.videos, top_k=args.top_k, progress=False if args.no_progress else None)
    failed = [r for r in results if not r.ok]
    for r in results:
        if args.json:
            print(json.dumps(r.to_dict()))
        elif r.ok:
            print(r.source)
            width = max(len(label) for label in r.labels)
            for rank, (label, value) in enumerate(zip(r.labels, r.scores, strict=True), 1):
                print(f"  {rank:>2}  {label:<{width}}  {value:9.3f}")
    if args.decode_backend == "dali":  # DALI was asked for: say which files it did not decode, and why
        for r in results:
            if r.ok and r.decode_backend != "dali" and r.decode_note:
                print(f"stdd: note: {r.source}: decoded with PyAV: {r.decode_note}", file=sys.stderr)
    for r in failed:
        _error_line(r.error)
    if failed:
        print(f"stdd: {len(failed)} of {len(results)} videos failed", file=sys.stderr)
        return EXIT_VIDEO_FAILED
    return EXIT_OK


def _span(text: str | None) -> int | str | None:
    """A --window/--stride value: digits are frames (an int), anything else goes to the parser as text."""
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def _stream(args: argparse.Namespace) -> int:
    engine = _engine(args, num_views=1)
    run = engine.stream_many(
        args.sources,
        window=_span(args.window),
        stride=_span(args.stride),
        top_k=args.top_k,
        on_backpressure=args.on_backpressure,
        max_retries=args.max_retries,
        stall_timeout=args.stall_timeout,
        fps=args.fps,
        realtime=args.realtime,
        source_format=args.source_format,
    )
    several = len(args.sources) > 1
    failed = 0
    for w in run:
        if not w.ok:
            failed += 1
            if args.json:
                print(json.dumps(w.to_dict()), flush=True)
            _error_line(w.error)
            continue
        if args.json:
            print(json.dumps(w.to_dict()), flush=True)
            continue
        ranked = ", ".join(f"{label} {value:.3f}" for label, value in zip(w.labels, w.scores, strict=True))
        prefix = f"{w.source} " if several else ""
        dropped = f", {w.dropped} dropped before" if w.dropped else ""
        print(
            f"{prefix}[{w.start_time:9.3f}s - {w.end_time:9.3f}s] {ranked}  ({w.latency * 1e3:.0f} ms{dropped})",
            flush=True,
        )
    if failed:
        print(f"stdd: {failed} of {len(args.sources)} streams ended with an error", file=sys.stderr)
        return EXIT_VIDEO_FAILED
    return EXIT_OK


def _build_classifier(args: argparse.Namespace) -> int:
    from stdd_fast.checkpoints import load_model
    from stdd_fast.classifier import build_classifier
    from stdd_fast.engine import resolve_device
    from stdd_fast.errors import ConfigError

    names = _class_names(args)
    if args.xprompt is not None and args.askg is not None:
        raise ConfigError("pass --xprompt or --askg, not both")
    if names is None and args.xprompt is None and args.askg is None:
        raise ConfigError("no classes: pass --classes 'a,b,c', --classes-file F, --xprompt YAML or --askg YAML")
    model = load_model(args.weights, arch=args.arch, device=resolve_device(args.device), trust_pickle=args.trust_pickle)
    clf = build_classifier(
        model, names, xprompt=args.xprompt, askg=args.askg, match=args.match, reduce=args.reduce, progress=False
    )
    out = clf.save(Path(args.output))
    summary = {
        "output": str(out),
        "classes": clf.num_classes,
        "shape": list(clf.weights.shape),
        "source": clf.source,
        "arch": clf.arch,
        "text_tower": clf.text_tower,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        shape = "x".join(str(n) for n in clf.weights.shape)
        print(f"wrote {out}: {clf.num_classes} classes, weights [{shape}], {clf.source}, text tower {clf.text_tower}")
    return EXIT_OK


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _probe_backend(module: str, dist: str | None) -> dict:
    """Import ``module`` here (never at stdd_fast import time) and say why it failed if it does."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except Exception as e:  # a backend can fail with ImportError, OSError (missing .so), RuntimeError...
        first_line = str(e).splitlines()[0] if str(e) else ""
        return {"available": False, "reason": f"{type(e).__name__}: {first_line}"}
    version = getattr(mod, "__version__", None) or (_version(dist) if dist else None)
    return {"available": True, "version": str(version or "unknown")}


def _info(args: argparse.Namespace) -> int:
    import platform

    import torch

    import stdd_fast

    report: dict = {
        "stdd_fast": stdd_fast.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            name: _version(dist)
            for name, dist in (
                ("torch", "torch"),
                ("open_clip", "open_clip_torch"),
                ("av", "av"),
                ("numpy", "numpy"),
                ("safetensors", "safetensors"),
            )
        },
        "devices": {
            "cpu_threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available(),
            "cuda_runtime": torch.version.cuda,
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        },
        "backends": {},
    }
    for name, module, dist, use, install in OPTIONAL_BACKENDS:
        entry = _probe_backend(module, dist)
        entry["for"] = use
        if not entry["available"]:
            entry["install"] = install
        report["backends"][name] = entry
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    print(f"stdd_fast {report['stdd_fast']}  (python {report['python']}, {report['platform']})")
    for name, version in report["packages"].items():
        print(f"  {name:<12} {version or 'not installed'}")
    dev = report["devices"]
    cuda = ", ".join(dev["cuda_devices"]) if dev["cuda_available"] else "not available"
    print(f"devices: cpu ({dev['cpu_threads']} threads); cuda: {cuda}")
    print("optional backends:")
    for name, entry in report["backends"].items():
        state = f"yes ({entry['version']})" if entry["available"] else f"no: {entry['reason']}; {entry['install']}"
        print(f"  {name:<12} {state}  [{entry['for']}]")
    return EXIT_OK


def _error_line(error: BaseException) -> None:
    print(f"stdd: error: {error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stdd`` console script; returns the exit code (see the module docstring)."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return args.func(args)
    except SystemExit as e:  # --help
        return int(e.code or 0) if isinstance(e.code, int | None) else EXIT_USAGE
    except KeyboardInterrupt:
        print("stdd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as e:
        from stdd_fast.errors import BackendUnavailableError, CheckpointError, StddError

        if debug:
            traceback.print_exc()
        if isinstance(e, _UsageError):
            print(f"stdd: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, CheckpointError):
            _error_line(e)
            return EXIT_CHECKPOINT
        if isinstance(e, BackendUnavailableError):
            _error_line(e)
            return EXIT_BACKEND
        if isinstance(e, StddError):
            _error_line(e)
            return EXIT_USAGE
        print(f"stdd: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
