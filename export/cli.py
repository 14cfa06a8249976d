"""``stdd-export``: ONNX export, TensorRT engine build and Triton repository, one command each.

    stdd-export --onnx --weights CKPT --classifier ART -o model.onnx [--fp16] [--uint8-input]
    stdd-export --trt --onnx-file model.onnx -o model.plan [--precision fp16] [--max-batch 32]
    stdd-export --trt --weights CKPT --classifier ART -o model.plan     (writes model.onnx beside it)
    stdd-export --triton-repo DIR --onnx-file model.onnx | --plan model.plan | --weights ... --classifier ...
    stdd-export --triton-repo DIR --serving --weights CKPT --classifier ART [--onnx-file model.onnx]

``--serving`` also writes model ``stdd`` (video files in, ranked actions out; Triton's Python
backend, :mod:`stdd_fast.serve.repository`), the checkpoint and classifier copied in; the ONNX /
TensorRT model is then ``stdd_frames`` beside it.

Errors print one line (``stdd-export: error: ...``) with the exit codes every stdd-fast command uses
(:mod:`stdd_fast.cli.runner`: 1 an export that did not verify, 2 usage, 3 checkpoint, 4 backend);
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path

from stdd_fast.choices import SHUFFLE_MODES
from stdd_fast.cli import options
from stdd_fast.cli.runner import Parser, UsageError
from stdd_fast.cli.runner import run as run_command

log = logging.getLogger("stdd_fast.export")


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="stdd-export",
        description="Export STDD (model + classifier baked in) to ONNX, build TensorRT engines, write Triton repos.",
    )
    act = p.add_argument_group("what to do (one or more)")
    act.add_argument("--onnx", action="store_true", help="export an ONNX graph from --weights/--classifier")
    act.add_argument("--trt", action="store_true", help="build a TensorRT plan (from --onnx-file, or exporting first)")
    act.add_argument("--triton-repo", metavar="DIR", help="write a Triton Inference Server model repository")

    options.add_weights(p, required=False, what="checkpoint to export")
    src = p.add_argument_group("inputs")
    src.add_argument("--classifier", metavar="ART", help="classifier artifact (.safetensors, stdd build-classifier)")
    src.add_argument("--onnx-file", metavar="F", help="an ONNX file written by stdd-export --onnx")
    src.add_argument("--plan", metavar="F", help="a TensorRT plan written by stdd-export --trt (for --triton-repo)")
    p.add_argument("-o", "--output", metavar="PATH", help="output file: model.onnx for --onnx, model.plan for --trt")

    ox = p.add_argument_group("ONNX export")
    ox.add_argument("--fp16", action="store_true", help="fp16 graph (LayerNorm statistics and scoring stay fp32)")
    ox.add_argument("--uint8-input", action="store_true", help="input uint8 RGB [B,T,S,S,3], normalised in the graph")
    ox.add_argument(
        "--shuffle", choices=[m for m in SHUFFLE_MODES if m != "official"], default="none", help="STCA eval shuffle"
    )
    ox.add_argument("--seed", type=int, default=0, help="seed of --shuffle seeded (default 0)")
    ox.add_argument("--frames", type=int, default=8, help="frames per clip T, static in the graph (default 8)")
    ox.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    ox.add_argument("--impl", choices=("reference", "fused"), default="reference", help="STCA path to trace")
    ox.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity run (graph checks stay)")
    ox.add_argument("--parity-clips", type=int, default=2, help="random clips in the parity run (default 2)")

    tx = p.add_argument_group("TensorRT")
    tx.add_argument(
        "--precision",
        choices=("fp32", "tf32", "fp16", "bf16", "int8", "fp8"),
        help="TensorRT precision (default: the graph's own types)",
    )
    tx.add_argument("--min-batch", type=int, default=1, help="optimisation profile min batch (default 1)")
    tx.add_argument("--opt-batch", type=int, default=8, help="optimisation profile opt batch (default 8)")
    tx.add_argument("--max-batch", type=int, help="profile max batch / Triton max_batch_size (default 32)")
    tx.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace limit in GiB (default 4)")
    tx.add_argument("--timing-cache", metavar="FILE", help="timing cache file, read and updated")
    tx.add_argument("--optimization-level", type=int, default=3, help="builder optimisation level 0..5 (default 3)")
    tx.add_argument(
        "--hardware-compatibility", choices=("none", "ampere_plus"), default="none", help="plan portability"
    )
    tx.add_argument("--device", default="auto", help="CUDA device to build on: auto, cuda or cuda:N (default auto)")

    tr = p.add_argument_group("Triton repository")
    tr.add_argument("--model-name", default="stdd", help="model folder name (default stdd)")
    tr.add_argument("--model-version", type=int, default=1, help="version folder (default 1)")
    tr.add_argument("--instance-kind", choices=("auto", "gpu", "cpu"), default="auto", help="Triton instance kind")
    tr.add_argument("--instance-count", type=int, default=1, help="model instances (default 1)")
    tr.add_argument("--preferred-batch", type=int, nargs="*", default=[], help="dynamic batching preferred sizes")
    tr.add_argument("--max-queue-delay-us", type=int, default=100, help="dynamic batching queue delay (default 100)")
    tr.add_argument(
        "--serving",
        action="store_true",
        help="also write model <model-name> taking video files (stdd serve's; from --weights and --classifier); "
        "the ONNX/plan model is then <model-name>_frames",
    )
    tr.add_argument("--serving-max-batch", type=int, default=8, help="videos per execution of that model (default 8)")
    tr.add_argument(
        "--site-dir",
        action="append",
        metavar="DIR",
        help="site-packages with stdd-fast where the server runs (repeatable; default: this environment's)",
    )

    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and written paths")
    options.add_debug(p)
    return p


def _check_args(a: argparse.Namespace) -> None:
    def error(message: str) -> None:
        raise UsageError(f"{message} (see `stdd-export --help`)")

    if not (a.onnx or a.trt or a.triton_repo):
        error("choose at least one of --onnx, --trt, --triton-repo")
    if a.triton_repo:  # before an export that may take minutes: the repository's numbers Triton would reject
        low = {"--instance-count": 1, "--max-queue-delay-us": 0, "--model-version": 1, "--serving-max-batch": 1}
        values = [a.instance_count, a.max_queue_delay_us, a.model_version, a.serving_max_batch]
        bad = [(flag, v, low[flag]) for flag, v in zip(low, values, strict=True) if v < low[flag]]
        bad += [("--preferred-batch", v, 1) for v in a.preferred_batch if v < 1]
        bad += [("--max-batch", a.max_batch, 1)] if a.max_batch is not None and a.max_batch < 1 else []
        if bad:
            flag, value, floor = bad[0]
            error(f"{flag} {value}: must be >= {floor}")
    if a.serving and not a.triton_repo:
        error("--serving adds a model to --triton-repo DIR: pass --triton-repo too")
    if a.serving and not (a.weights and a.classifier):
        error("--serving needs --weights CKPT and --classifier ART (the video model loads them)")
    if a.onnx and a.onnx_file:
        error("--onnx exports from --weights/--classifier; --onnx-file names an existing export: pass one of them")
    if a.plan and (a.onnx or a.trt or not a.triton_repo):
        error("--plan is an input of --triton-repo only")
    if a.plan and a.onnx_file:
        error("pass --plan or --onnx-file, not both")
    if _needs_export(a) and not (a.weights and a.classifier):
        error("exporting needs --weights CKPT and --classifier ART (or pass an existing --onnx-file)")
    if (a.onnx or a.trt) and not a.output:
        error("-o/--output is required with --onnx and --trt (model.onnx / model.plan)")
    if a.trt and Path(a.output).suffix == ".onnx":
        error("--trt writes a TensorRT plan: name it -o model.plan (the ONNX file is written beside it)")
    if a.output and Path(a.output).is_dir():
        error(f"-o {a.output} is a folder: name the output file (model.onnx / model.plan)")


def _needs_export(a: argparse.Namespace) -> bool:
    """Whether an ONNX graph is exported from --weights (--serving alone writes only the video model)."""
    return a.onnx or (a.trt and not a.onnx_file) or (a.triton_repo and not (a.onnx_file or a.plan or a.serving))


def _write_serving(a: argparse.Namespace) -> Path:
    from stdd_fast import Classifier
    from stdd_fast.predict.config import RESOLVED_WHERE_BUILT
    from stdd_fast.serve.model import ServingSettings
    from stdd_fast.serve.repository import write_serving_model
    from stdd_fast.video.config import SamplingConfig

    predictor = dataclasses.replace(RESOLVED_WHERE_BUILT, arch=a.arch, trust_pickle=a.trust_pickle)
    settings = ServingSettings(a.weights, predictor=predictor, sampling=SamplingConfig(num_frames=a.frames))
    return write_serving_model(
        a.triton_repo,
        settings,
        Classifier.load(a.classifier),
        name=a.model_name,
        max_batch_size=a.serving_max_batch,
        max_queue_delay_us=a.max_queue_delay_us,
        instance_kind=a.instance_kind,
        instance_count=a.instance_count,
        copy_weights=True,
        site_dirs=a.site_dir,
    )


def _export(a: argparse.Namespace, path: Path) -> Path:
    import torch

    from stdd_fast import Classifier, load_model
    from stdd_fast.export.onnx_export import export_and_verify

    classifier = Classifier.load(a.classifier)
    model = load_model(a.weights, arch=a.arch, trust_pickle=a.trust_pickle)  # the STCA config it records
    model.set_stca(model.stca.replace(shuffle=a.shuffle, seed=a.seed))
    result = export_and_verify(
        model,
        classifier,
        path,
        torch.float16 if a.fp16 else torch.float32,
        num_frames=a.frames,
        uint8_input=a.uint8_input,
        opset=a.opset,
        impl=a.impl,
        verify=not a.no_verify,
        parity_clips=a.parity_clips,
    )
    return result.path


def _size(path: Path) -> str:
    data = path.with_name(path.name + ".data")
    n = path.stat().st_size + (data.stat().st_size if data.is_file() else 0)
    return f"{n / 1e6:.1f} MB"


def run(a: argparse.Namespace) -> int:
    """Do what the parsed arguments say; raise StddError on failure."""
    _check_args(a)
    if a.trt:
        # fail fast, before a long export, where the engine cannot be built anyway
        from stdd_fast.deps import require
        from stdd_fast.devices import resolve_device
        from stdd_fast.export.tensorrt_build import TensorRTBuildConfig, build_engine, gpu_info

        require("tensorrt")
        a.device = resolve_device(a.device)
        gpu_info(a.device)
        trt_config = TensorRTBuildConfig(
            precision=a.precision,
            min_batch=a.min_batch,
            opt_batch=a.opt_batch,
            max_batch=a.max_batch if a.max_batch is not None else 32,
            workspace_gib=a.workspace_gib,
            timing_cache=a.timing_cache,
            optimization_level=a.optimization_level,
            hardware_compatibility=a.hardware_compatibility,
        )
    with tempfile.TemporaryDirectory(prefix="stdd-export-") as tmp:
        onnx_file = Path(a.onnx_file) if a.onnx_file else None
        if onnx_file is None and _needs_export(a):
            if a.onnx and not a.trt:
                target = Path(a.output)
            elif a.trt:
                target = Path(a.output).with_suffix(".onnx")
            else:
                target = Path(tmp) / "model.onnx"
            onnx_file = _export(a, target)
            if target.parent != Path(tmp):
                print(f"wrote {onnx_file} ({_size(onnx_file)})")
        model_file = Path(a.plan) if a.plan else onnx_file
        if a.trt:
            model_file = build_engine(onnx_file, Path(a.output), trt_config, device=a.device)
            print(f"wrote {model_file} ({_size(model_file)}) and {model_file.name}.json")
        if a.triton_repo and model_file is not None:
            from stdd_fast.serve.repository import frames_model_name
            from stdd_fast.serve.triton_repo import write_triton_repo

            model_dir = write_triton_repo(
                a.triton_repo,
                model_file,
                name=frames_model_name(a.model_name) if a.serving else a.model_name,
                version=a.model_version,
                max_batch_size=a.max_batch,
                preferred_batch_sizes=tuple(a.preferred_batch),
                max_queue_delay_us=a.max_queue_delay_us,
                instance_kind=a.instance_kind,
                instance_count=a.instance_count,
            )
            print(f"wrote Triton model {model_dir} (config.pbtxt, labels.txt, {a.model_version}/)")
        if a.serving:
            model_dir = _write_serving(a)
            print(f"wrote Triton model {model_dir} (video files in, actions out: config.pbtxt, 1/model.py, weights/)")
    return 0


def _run_logged(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("stdd-export: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    try:
        return run(args)
    finally:
        log.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``stdd-export``; returns the exit code (the table of :mod:`stdd_fast.cli.runner`)."""
    return run_command("stdd-export", _parser, _run_logged, argv)


if __name__ == "__main__":
    sys.exit(main())
