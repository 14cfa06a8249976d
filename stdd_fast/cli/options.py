"""Argument groups every command shares, so a flag means the same thing (and lists its choices) everywhere.

Imports no torch: ``--help`` of any command answers at once.
"""

from __future__ import annotations

import argparse

from stdd_fast.choices import BACKENDS, DECODE_CHOICES, DTYPE_NAMES, IMPLS, SAMPLING_MODES
from stdd_fast.config import list_models
from stdd_fast.errors import ConfigError


def add_weights(p: argparse.ArgumentParser, required: bool = True, what: str = "checkpoint") -> None:
    """--weights, --arch, --trust-pickle."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--weights",
        required=required,
        metavar="CKPT",
        help=f"{what}: OpenAI/open_clip CLIP, official STDD (.pyth/.pth) or stdd-fast safetensors"
        + ("" if required else " (default: seeded random weights)"),
    )
    g.add_argument(
        "--arch",
        default=None,
        metavar="NAME",
        help=f"architecture, checked against the weights (default: detected); built in: {', '.join(list_models())}",
    )
    g.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow checkpoints that run code when loaded (pickles, TorchScript code): only for files you trust",
    )


def add_device(p: argparse.ArgumentParser, dtype: bool = True) -> None:
    """--device auto|cpu|cuda|cuda:N and --dtype (auto: bf16 on a GPU, fp32 on the CPU)."""
    g = p.add_argument_group("device")
    g.add_argument(
        "--device", default="auto", metavar="DEV", help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)"
    )
    if dtype:
        g.add_argument(
            "--dtype",
            default="auto",
            choices=("auto", *DTYPE_NAMES),
            help="model dtype; auto: bf16 on a GPU, float32 on the CPU (default auto); fp8 (opt-in, not exact): bf16 "
            "weights with the STCA blocks' linear layers as fp8 GEMMs (Ada/Hopper GPUs; the torch backend)",
        )


def add_impl(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--impl",
        choices=IMPLS,
        default="auto",
        help="STCA implementation; auto: triton on CUDA, the fused rewrite on the CPU (default auto)",
    )


def add_classes(p: argparse.ArgumentParser, artifact: bool = True) -> None:
    """Where the classes come from: --classes, --classes-file, --xprompt, --askg (and --classifier)."""
    g = p.add_argument_group("classes (one of)")
    g.add_argument("--classes", metavar='"a,b,c"', help="class names, comma-separated (8 STDD templates each)")
    g.add_argument(
        "--classes-file",
        metavar="FILE",
        help="class names from an index->class JSON, a classes_label_*.yml, or a text file (one per line, # comments)",
    )
    g.add_argument("--xprompt", metavar="YAML", help="a classes_xprompt_*.yml: the ASKG prompt-level classifier")
    g.add_argument("--askg", metavar="YAML", help="a classes_ASKG_*.yml, its triples rendered to prompt clauses")
    if artifact:
        g.add_argument("--classifier", metavar="ART", help="a classifier artifact from `stdd build-classifier`")


def class_names(args: argparse.Namespace) -> list[str] | None:
    """The names --classes / --classes-file give (None when neither is given)."""
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


def class_source(args: argparse.Namespace, required: bool = True) -> dict:
    """The classifier keywords of build_predictor / Engine (classes, classifier, xprompt, askg), checked."""
    names = class_names(args)
    artifact = getattr(args, "classifier", None)
    if args.xprompt is not None and args.askg is not None:
        raise ConfigError("pass --xprompt or --askg, not both")
    if artifact is not None and (names is not None or args.xprompt is not None or args.askg is not None):
        raise ConfigError("--classifier already holds the classes: drop --classes/--classes-file/--xprompt/--askg")
    if required and artifact is None and names is None and args.xprompt is None and args.askg is None:
        raise ConfigError(
            "no classes: pass --classes 'a,b,c', --classes-file F, --xprompt YAML, --askg YAML or --classifier ART"
        )
    return {"classes": names, "classifier": artifact, "xprompt": args.xprompt, "askg": args.askg}


def add_engine(p: argparse.ArgumentParser) -> None:
    """What an Engine needs beyond the model and the classes: backend, frames, batching, decoding."""
    g = p.add_argument_group("engine")
    g.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default: on the CPU the fused encoder in ONNX Runtime, the fastest exact path; else torch), "
        "torch, onnxruntime / tensorrt (with a stdd-export .onnx / .plan as --weights)",
    )
    g.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="opt-in int8 MatMul weights on the ONNX Runtime CPU path (not exact; see the benchmark's int8 row)",
    )
    g.add_argument("--top-k", type=int, default=5, help="classes to report per video or window (default 5)")
    g.add_argument("--frames", type=int, default=8, help="frames per view or window, T (default 8)")
    g.add_argument("--sampling-rate", type=int, default=16, help="frame stride at --target-fps (default 16)")
    g.add_argument("--batch-clips", type=int, default=None, help="clips per forward (default: by memory budget)")
    g.add_argument(
        "--decode-backend",
        choices=DECODE_CHOICES,
        default="auto",
        help="video decoder: auto (DALI/NVDEC on a CUDA device when installed, else PyAV), pyav, dali",
    )
    g.add_argument(
        "--decode-memory-mb",
        type=float,
        default=2048.0,
        help="most decoded RGB frames one video may hold, MiB (default 2048); bigger videos fail before decoding",
    )


def add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--views", type=int, default=3, help="temporal views per video (default 3, the released protocol)")
    p.add_argument("--sampling", choices=SAMPLING_MODES, default="official", help="frame sampling protocol")


def add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")


def report_backend(predictor) -> None:
    """One line on stderr: which backend runs and why, and what setting it up cost (a graph built or cached)."""
    import sys

    line = f"stdd: backend: {getattr(predictor, 'backend_choice', predictor.backend)}"
    cache = getattr(predictor, "cache", None)
    if cache is not None:
        how = f"built in {cache.seconds:.1f} s ({cache.note})" if cache.built else "from the cache"
        line += f"; encoder graph {how}: {cache.path}"
    if getattr(predictor, "choice_seconds", None) is not None:
        line += f"; measuring the choice took {predictor.choice_seconds:.1f} s (once on this machine)"
    print(line, file=sys.stderr, flush=True)


def engine_options(args: argparse.Namespace, **extra: object) -> dict:
    """Engine keywords from the shared options (device and dtype resolved; the classes checked)."""
    from stdd_fast.devices import default_dtype, resolve_device
    from stdd_fast.video.loader import DecodeConfig

    device = resolve_device(args.device)
    dtype = default_dtype(device) if args.dtype == "auto" else args.dtype
    decode = DecodeConfig(args.decode_backend, memory_budget_mb=args.decode_memory_mb)
    return {
        **class_source(args),
        "device": device,
        "dtype": dtype,
        "impl": args.impl,
        "arch": args.arch,
        "num_frames": args.frames,
        "sampling_rate": args.sampling_rate,
        "batch_clips": args.batch_clips,
        "trust_pickle": args.trust_pickle,
        "backend": args.backend,
        "quantize": args.quantize,
        "decode": decode,
        **extra,
    }
