"""The command line's option groups, one per config object, so a flag means the same thing everywhere.

* :func:`add_weights`: ``--weights`` and how it loads (``--arch``, ``--trust-pickle``: predictor fields);
* :func:`add_classes`: the :class:`~stdd_fast.predict.ClassSource` flags;
* :func:`add_predictor`: the :class:`~stdd_fast.predict.PredictorConfig` flags;
* :func:`add_sampling`: the :class:`~stdd_fast.video.config.SamplingConfig` flags;
* :func:`add_decode`: the :class:`~stdd_fast.video.config.DecodeConfig` flags.

Every flag they add is registered in :data:`FIELDS` (its ``dest`` -> the section and field it sets), and
:func:`settings_of` builds the config objects from parsed arguments through that one table: a flag a
command accepts reaches its config or is refused. Imports no torch: ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from stdd_fast.choices import (
    BACKENDS,
    COMPILE_MODES,
    DECODE_CHOICES,
    DTYPE_NAMES,
    GEMMS,
    IMPLS,
    QUANTIZE,
    SAMPLING_MODES,
)
from stdd_fast.config import list_models
from stdd_fast.errors import ConfigError

# argparse dest -> (config section, field); the classes flags are read together by class_source
FIELDS: dict[str, tuple[str, str]] = {}
CLASS_FLAGS = ("classes", "classes_file", "classifier", "xprompt", "askg")
_CONVERT: dict[str, Any] = {
    "cuda_graphs": {"auto": "auto", "on": True, "off": False}.__getitem__,
    "compile": lambda v: {"off": False, "on": True}.get(v, v),
}


def _add(group, *flags: str, field: tuple[str, str], **kwargs) -> None:
    action = group.add_argument(*flags, **kwargs)
    FIELDS[action.dest] = field


def add_weights(p: argparse.ArgumentParser, required: bool = True, what: str = "checkpoint") -> None:
    """--weights, --arch, --trust-pickle."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--weights",
        required=required,
        metavar="CKPT",
        help=f"{what}: OpenAI/open_clip CLIP, official STDD (.pyth/.pth) or stdd-fast safetensors, or a pretrained "
        "name (ViT-B-16/openai, hf-hub:ORG/REPO: from the Hugging Face cache, fetched once)"
        + ("" if required else " (default: seeded random weights)"),
    )
    _add(
        g,
        "--arch",
        field=("predictor", "arch"),
        default=None,
        metavar="NAME",
        help=f"architecture, checked against the weights (default: detected); built in: {', '.join(list_models())}",
    )
    _add(
        g,
        "--trust-pickle",
        field=("predictor", "trust_pickle"),
        action="store_true",
        help="allow checkpoints that run code when loaded (pickles, TorchScript code): only for files you trust",
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


def add_device(p: argparse.ArgumentParser, dtype: bool = True, group=None) -> None:
    """--device (and --dtype): where the model runs, in which precision (PredictorConfig fields)."""
    g = group or p.add_argument_group("device")
    f = "predictor"
    _add(
        g,
        "--device",
        field=(f, "device"),
        default="auto",
        metavar="DEV",
        help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)",
    )
    if dtype:
        _add(
            g,
            "--dtype",
            field=(f, "dtype"),
            default="auto",
            choices=("auto", *DTYPE_NAMES),
            help="model dtype; auto: bf16 on a GPU, float32 on the CPU (default auto); fp8 (opt-in, not exact): bf16 "
            "weights with the STCA blocks' linear layers as fp8 GEMMs (Ada/Hopper GPUs; the torch backend)",
        )


def add_predictor(p: argparse.ArgumentParser, backend: bool = True) -> None:
    """The PredictorConfig flags: what runs the model, where, in which precision."""
    g = p.add_argument_group("predictor")
    f = "predictor"
    if backend:
        _add(
            g,
            "--backend",
            field=(f, "backend"),
            choices=BACKENDS,
            default="auto",
            help="auto (default: on the CPU the faster exact path, measured once per machine; on a GPU torch), "
            "torch, onnxruntime / tensorrt (with a stdd-export .onnx / .plan as --weights)",
        )
    add_device(p, group=g)
    _add(
        g,
        "--impl",
        field=(f, "impl"),
        choices=IMPLS,
        default="auto",
        help="STCA implementation; auto: triton on CUDA, the fused rewrite on the CPU (default auto)",
    )
    if backend:
        _add(
            g,
            "--quantize",
            field=(f, "quantize"),
            choices=QUANTIZE,
            default=None,
            help="opt-in int8 MatMul weights on the ONNX Runtime CPU path (not exact; see the benchmark's int8 row)",
        )
    _add(
        g,
        "--batch-clips",
        field=(f, "batch_clips"),
        type=int,
        default=None,
        help="clips per forward (default: by --activation-budget-mb)",
    )
    _add(
        g,
        "--activation-budget-mb",
        field=(f, "activation_budget_mb"),
        type=float,
        default=1024.0,
        help="activations one forward may hold, MiB: sizes the default --batch-clips (default 1024)",
    )
    _add(
        g,
        "--compile",
        field=(f, "compile"),
        choices=("off", "on", *COMPILE_MODES),
        default="off",
        help="torch.compile the encoder (on = mode default); torch backend",
    )
    _add(
        g,
        "--cuda-graphs",
        field=(f, "cuda_graphs"),
        choices=("auto", "on", "off"),
        default="auto",
        help="replay the encoder from CUDA graphs (auto: on CUDA with fixed shapes and schedule)",
    )
    _add(
        g,
        "--gemm",
        field=(f, "gemm"),
        choices=("auto", *GEMMS),
        default="auto",
        help="what the triton path's linear layers run (auto: $STDD_GEMM, else cuBLAS)",
    )


def add_sampling(p: argparse.ArgumentParser, views: bool = True) -> None:
    """The SamplingConfig flags: which frames a video (or a stream window) contributes."""
    g = p.add_argument_group("sampling")
    f = "sampling"
    _add(g, "--frames", field=(f, "num_frames"), type=int, default=8, help="frames per view or window, T (default 8)")
    _add(
        g,
        "--sampling-rate",
        field=(f, "sampling_rate"),
        type=int,
        default=16,
        help="frame stride at --target-fps (default 16)",
    )
    _add(
        g,
        "--target-fps",
        field=(f, "target_fps"),
        type=float,
        default=30.0,
        help="the rate --sampling-rate counts at (default 30)",
    )
    if views:
        _add(
            g,
            "--views",
            field=(f, "num_views"),
            type=int,
            default=3,
            help="temporal views per video (default 3, the released protocol)",
        )
        _add(
            g,
            "--sampling",
            field=(f, "mode"),
            choices=SAMPLING_MODES,
            default="official",
            help="frame sampling protocol",
        )


def add_decode(p: argparse.ArgumentParser, choices: tuple[str, ...] = DECODE_CHOICES) -> None:
    """The DecodeConfig flags: which decoder, how many threads, how much memory one video may take."""
    g = p.add_argument_group("decoding")
    f = "decode"
    _add(
        g,
        "--decode-backend",
        field=(f, "backend"),
        choices=choices,
        default="auto",
        help="video decoder: auto (DALI/NVDEC on a CUDA device when installed, else PyAV), pyav, dali",
    )
    _add(
        g,
        "--decode-workers",
        field=(f, "workers"),
        type=int,
        default=None,
        help="videos decoded ahead (default: min(4, cores))",
    )
    _add(
        g,
        "--decode-threads",
        field=(f, "threads"),
        type=int,
        default=None,
        help="FFmpeg threads per video (default: FFmpeg's)",
    )
    _add(
        g,
        "--frame-budget-mb",
        "--decode-memory-mb",
        field=(f, "frame_budget_mb"),
        type=float,
        default=2048.0,
        help="the most memory decoding one video may take, MiB (default 2048); bigger videos fail before decoding",
    )


def add_windows(g) -> None:
    """--window / --stride: how a stream, a timeline or calibration cuts video into windows. The text goes to
    ``Engine.stream`` / ``timeline`` / ``calibrate`` as it is: their span parser reads "16" as frames, "0.5s" as
    seconds, and names a bad value."""
    g.add_argument("--window", default=None, help="window span: frames (113) or seconds (3.7s); default: the model's")
    g.add_argument("--stride", default="16", help="step between windows: frames (16) or seconds (0.5s); default 16")


def add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")


CLASS_FILE_SUFFIXES = (".json", ".yml", ".yaml", ".txt", ".csv")  # what --classes-file reads (and lists)


def class_names(args: argparse.Namespace) -> list[str] | None:
    """The names --classes / --classes-file give (None when neither is given).

    A ``--classes`` value that names a file is refused (it would be one class named after the path); one
    class is allowed, with a warning: its probability is 100 % for every video.
    """
    from stdd_fast.prompts import read_class_names

    if args.classes is not None and args.classes_file is not None:
        raise ConfigError("pass --classes or --classes-file, not both")
    if args.classes is not None:
        names = [n.strip() for n in args.classes.split(",") if n.strip()]
        if not names:
            raise ConfigError(f"--classes {args.classes!r} holds no class names; e.g. --classes 'run,jump,swim'")
        name = names[0]
        if len(names) == 1 and (name.lower().endswith(CLASS_FILE_SUFFIXES) or ("/" in name and Path(name).exists())):
            raise ConfigError(
                f"--classes {name!r} names a file, not classes: pass it as --classes-file {name} "
                "(--classes takes the names themselves, comma-separated: --classes 'run,jump,swim')"
            )
    elif args.classes_file is not None:
        names = read_class_names(args.classes_file)
    else:
        return None
    if len(names) == 1:
        warnings.warn(
            f"one class ({names[0]!r}): its probability is 100 % for every video; give two or more classes to rank "
            "them (its score still compares videos)",
            UserWarning,
            stacklevel=2,
        )
    return names


def class_source(args: argparse.Namespace):
    """The :class:`~stdd_fast.predict.ClassSource` the class flags name (checked once, there)."""
    from stdd_fast.predict.config import ClassSource

    return ClassSource(class_names(args), getattr(args, "classifier", None), args.xprompt, args.askg)


def settings_of(args: argparse.Namespace, **fixed: dict[str, Any]):
    """The config objects the parsed flags name (:class:`~stdd_fast.settings.Settings`): every registered flag
    the command has sets its field; ``fixed`` pins fields a command decides itself (``sampling={"num_views": 1}``).
    """
    from stdd_fast.settings import SECTIONS, Settings

    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for dest, value in vars(args).items():
        if dest in FIELDS:
            section, field = FIELDS[dest]
            values[section][field] = _CONVERT.get(dest, lambda v: v)(value)
    for section, pinned in fixed.items():
        values[section].update(pinned)
    made = {s: kind(**values[s]) for s, kind in SECTIONS.items() if s != "classes"}
    has_classes = all(hasattr(args, flag) for flag in ("classes", "classes_file", "xprompt", "askg"))
    made["classes"] = class_source(args) if has_classes else SECTIONS["classes"]()
    return Settings(**made)


def detected_text(detected) -> str:
    """A result's detections in one line: ``forklift reversing 0.998, person climbing 0.991`` or ``none``."""
    return ", ".join(f"{d.label} {d.confidence:.3f}" for d in detected) or "none"


def report_backend(predictor) -> None:
    """One line on stderr: which backend runs and why, and what setting it up cost (a graph built or cached)."""
    choice = predictor.backend_choice
    line = f"stdd: backend: {choice.reason}"
    if predictor.setup_note:
        line += f"; {predictor.setup_note}"
    if choice.seconds:
        line += f"; measuring the choice took {choice.seconds:.1f} s (once on this machine)"
    print(line, file=sys.stderr, flush=True)
