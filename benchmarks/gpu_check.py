"""One prepared GPU run (benchmarks/gpu_check.sh): the GPU tests (every GPU path vs the fp32 reference), then timings.

Sections run in priority order inside a time budget; each is isolated (an error is recorded and the
run goes on) and results are written to ``<out>/gpu_check.json`` after every section, so whatever
ran comes back even if the command is cut off. The correctness sections run the ``gpu``-marked
tests (``pytest -m gpu``) and record each test's outcome and its measured errors; the timing
sections time predictors (:class:`stdd_fast.predict.torch_backend.TorchPredictor`). ``--smoke`` runs the
same code on the CPU with the tiny architecture (Triton's interpreter) to check the script itself:
there the GPU tests are collected and skipped, and the sections that need CUDA are listed as skipped.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from gpu_video import nvdec_section, video_section

from stdd_fast import create_model, ops
from stdd_fast.bench.environment import environment
from stdd_fast.bench.paths import COMPILE_MODES, BenchPath, build_predictor, parse_path, unavailable_reason
from stdd_fast.bench.peak import matrix_peak_tflops
from stdd_fast.bench.telemetry import NvmlSampler
from stdd_fast.bench.timing import Timing, synchronize, time_fn
from stdd_fast.config import ArchConfig
from stdd_fast.devices import DTYPES
from stdd_fast.flops import block_macs, encoder_macs
from stdd_fast.head import score
from stdd_fast.model import STDDModel
from stdd_fast.numerics import max_rel_err
from stdd_fast.stca import pieces
from stdd_fast.stca.reference import stca_block_reference

FRAMES = 8
TESTS = Path(__file__).resolve().parents[1] / "tests"
KERNEL_TESTS = (
    "test_layer_norm.py",
    "test_sparse_attention.py",
    "test_scatter_residual.py",
    "test_score.py",
    "test_linear.py",
)
ENCODER_TESTS = ("test_triton_encoder.py",)
# what the first GPU run after them must check (also in "kernels" / "checks", which take minutes of compiling)
NEW_KERNEL_TESTS = ("test_linear.py", "test_sparse_attention.py", "test_fp8.py", "test_triton_encoder.py")
NEW_KERNEL_SELECT = "linear or tf32x3 or gemm or default_predictor"
OUTCOMES = ("passed", "failed", "skipped")
MEASURED = re.compile(r"^\[measured\] (.+): (\S+)$", re.MULTILINE)

# ViT-L/14's vision tower at one layer: 16x16 patches (1 + 128 sparse rows), width 1024, 16 heads
L14_ONE_BLOCK = ArchConfig(
    "L14-one-block", embed_dim=768, image_size=224, patch_size=14, vision_width=1024, vision_layers=1,
    vision_heads=16, text_width=64, text_heads=1, text_layers=1,
)  # fmt: skip
# --smoke: the same 16x16 grid at width 64 (Triton's interpreter, fp32)
L14_GRID_SMALL = ArchConfig(
    "L14-grid-small", embed_dim=32, image_size=64, patch_size=4, vision_width=64, vision_layers=1, vision_heads=4,
    text_width=32, text_heads=2, text_layers=1,
)  # fmt: skip


@dataclass(frozen=True)
class Scale:
    """The shapes of a run: ViT-B/16 on a GPU, the tiny architecture under ``--smoke``."""

    arch: str
    batch: int  # the large batch of the timing sections
    warmup: int  # untimed calls before each timing
    iters: int  # timed calls (at least; the head takes twice as many)
    head: tuple[int, int]  # the head timing's classes K and prompts N
    l14: ArchConfig
    l14_dtype: str
    l14_frames: int  # frames the L/14 sparse-attention timing takes


GPU_SCALE = Scale("ViT-B-16", 32, 3, 10, (400, 224), L14_ONE_BLOCK, "bf16", 256)
# Triton's interpreter takes seconds per kernel launch (35 s for the K=400, N=224 head): few calls, small head
SMOKE_SCALE = Scale("test-tiny", 2, 1, 2, (16, 8), L14_GRID_SMALL, "fp32", 8)


class Run:
    def __init__(self, out: Path, budget_s: float, device: torch.device, scale: Scale, quick: bool) -> None:
        self.out, self.budget, self.device, self.scale, self.quick = out, budget_s, device, scale, quick
        self.start = time.perf_counter()
        self.results: dict = {"env": environment(device), "tests": [], "timings": [], "skipped": [], "errors": []}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1))

    def skip(self, what: str, why: str) -> None:
        self.results["skipped"].append(f"{what}: {why}")
        print(f"[skip] {what}: {why}", flush=True)

    def section(self, name: str, fn: Callable[[Run], None], needs_s: float = 0.0) -> None:
        if self.left() < needs_s:
            self.skip(name, f"needs ~{needs_s:.0f} s, {self.left():.0f} s left")
            return
        t0 = time.perf_counter()
        print(f"[section] {name} ({self.left():.0f} s left)", flush=True)
        try:
            fn(self)
        except Exception as e:  # record and continue: one broken section must not hide the others
            self.results["errors"].append({"section": name, "error": repr(e), "trace": traceback.format_exc()[-3000:]})
            print(f"[error] {name}: {e!r}", flush=True)
        print(f"[done] {name} in {time.perf_counter() - t0:.1f} s", flush=True)
        self.save()


def realistic_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """open_clip init plus non-trivial LayerNorm affines and biases (zeros would hide bias bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1 and "logit" not in name:
                noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
                p.add_(0.1 * noise)
    return model


# -- correctness: the gpu-marked tests ------------------------------------------------------------------------


def junit_records(junit: Path) -> list[dict]:
    """One record per test case of a JUnit XML report: outcome, seconds, message and its ``[measured]`` figures."""
    records = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (found.get("message") or found.text or "")[:2000]
                break
        out = case.findtext("system-out") or ""
        records.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "seconds": round(float(case.get("time", 0.0)), 2),
                "measured": {name: float(value) for name, value in MEASURED.findall(out)},
                **({"message": message} if message else {}),
            }
        )
    return records


def gpu_tests(
    run: Run,
    name: str,
    files: tuple[str, ...],
    select: str | None = None,
    quick_select: str | None = None,
    marker: str | None = "gpu",
) -> None:
    """``pytest -m gpu`` on ``files`` (``-k select``; with ``--quick-checks`` also ``quick_select``); records each test.

    ``marker``: the ``-m`` expression (None: every test of ``files``, e.g. test_dali.py's, skipped by their own
    conditions rather than marked).

    The JUnit report (with each test's captured output) is kept as ``<out>/pytest_<name>.xml``.
    """
    if run.quick and quick_select:
        select = f"({select}) and {quick_select}" if select else quick_select
    junit = run.out / f"pytest_{name}.xml"
    junit.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "pytest", *(["-m", marker] if marker else []), "-p", "no:cacheprovider", "-v",
        f"--junitxml={junit}",
        "-o", "junit_logging=system-out", *(["-k", select] if select else []), *(str(TESTS / f) for f in files),
    ]  # fmt: skip
    # not from the repository root: there ./stdd_fast would shadow the installed package and its subpackages
    done = subprocess.run(command, cwd=run.out, timeout=max(1.0, run.left()), check=False)
    if junit.is_file():
        records = junit_records(junit)
        run.results["tests"] += records
        outcomes = [record["outcome"] for record in records]
        print(f"  recorded {len(records)} tests: " + ", ".join(f"{outcomes.count(o)} {o}" for o in OUTCOMES))
    # exit status 1: some tests failed (recorded); anything else (collection errors, nothing selected) or no
    # report: the run itself failed
    if done.returncode not in (0, 1) or not junit.is_file():
        raise RuntimeError(f"pytest exited with {done.returncode} (is pytest installed?): {' '.join(command)}")


# -- timings ----------------------------------------------------------------------------------------------------


def cast_block(block: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    return block if dtype == torch.float32 else copy.deepcopy(block).to(dtype)


def sparse_inputs(block, x32: torch.Tensor, dtype: torch.dtype) -> tuple:
    """The sparse path's inputs for ``block`` on ``x32`` [clips * FRAMES, L, D], cast to ``dtype``."""
    dev = x32.device
    vis = block.visible_tokens(x32.shape[0] // FRAMES, FRAMES, dev)
    src = block.index.source_maps(FRAMES, dev)
    with torch.no_grad():
        return pieces.sparse_attention_inputs(cast_block(block, dtype), x32.to(dtype), vis, src)


def sparse_kernel(
    qkv, x, mean, rstd, visible, source_maps, proj: pieces.SparseProjection, num_heads: int, fp32_dot: str = "ieee"
):
    """The Triton sparse-attention launcher with the piece's arguments (the kernel the frame size takes)."""
    from stdd_fast import kernels

    blocked = not kernels.fits_one_tile(visible.shape[2])
    plain = (qkv, x, mean, rstd, visible, source_maps, proj.const, proj.gain_sum, proj.head, num_heads)
    return kernels.sparse_attention(*plain, blocked=blocked, fp32_dot=fp32_dot)


def time_sparse(run: Run, what: str, args: tuple, dtype_name: str, paths: dict) -> None:
    """Time each of ``paths`` (name -> sparse-attention function, the first the baseline) on ``args``."""
    reference_s = None
    for name, fn in paths.items():
        with torch.no_grad():
            timing = time_fn(
                lambda fn=fn: fn(*args), run.device, warmup=run.scale.warmup, iters=run.scale.iters, min_seconds=0.3
            )
        reference_s = reference_s or timing.median
        row = {
            "what": what,
            "path": name,
            "dtype": dtype_name,
            "frames": args[1].shape[0],
            "median_ms": round(timing.median * 1e3, 4),
            "speedup_vs_reference": round(reference_s / timing.median, 3),
        }
        run.results["timings"].append(row)
        run.save()
        print(f"  {what} {name:>8} {dtype_name} {row['frames']} frames: {row['median_ms']:8.3f} ms", flush=True)


def l14_timing(run: Run) -> None:
    """The sparse attention at ViT-L/14 shapes (16x16 grid: 1 + V = 129 rows, the blocked kernel) against the
    PyTorch sparse path (what the triton path ran before the blocked kernel)."""
    from stdd_fast import triton_ops

    arch, dtype_name = run.scale.l14, run.scale.l14_dtype
    block = realistic_(create_model(arch, seed=8)).to(run.device).blocks[0]
    gen = torch.Generator(run.device).manual_seed(5)
    x = torch.randn(run.scale.l14_frames, arch.tokens_per_frame, arch.vision_width, device=run.device, generator=gen)
    args = sparse_inputs(block, x, DTYPES[dtype_name])
    paths = {"pytorch": pieces.sparse_attention, "triton": triton_ops.sparse_attention}
    time_sparse(run, "sparse_attention L/14", args, dtype_name, paths)


def fp32_paths(run: Run) -> None:
    """fp32 on the GPU: the sparse-attention kernel (exact ``ieee`` dots, and ``tf32x3``) against the PyTorch sparse
    path, each one's error against the PyTorch piece, then the encoder.

    The triton impl runs fp32 sparse attention in PyTorch on a GPU (the kernel's exact fp32
    ``tl.dot`` runs on FMA units and spills); this measures that choice against the kernel with
    three-TF32 dots (fp32-accurate on tensor cores), then the encoder's paths.
    """
    batch = max(1, run.scale.batch // 4)
    model = realistic_(create_model(run.scale.arch, seed=9)).to(run.device)
    block = model.blocks[len(model.blocks) // 2]
    x32 = torch.randn(FRAMES * batch, model.arch.tokens_per_frame, model.arch.vision_width, device=run.device)
    args = sparse_inputs(block, x32, torch.float32)
    paths = {
        "pytorch": pieces.sparse_attention,
        "kernel": sparse_kernel,
        "kernel:tf32x3": partial(sparse_kernel, fp32_dot="tf32x3"),
    }
    with torch.no_grad():
        exact = pieces.sparse_attention(*args)
        errors = {name: max_rel_err(fn(*args), exact) for name, fn in paths.items()}
    run.results["fp32_sparse_attention_max_rel_err"] = errors
    print(f"  fp32 sparse attention max rel err vs the PyTorch piece: {errors}", flush=True)
    time_sparse(run, "sparse_attention", args, "fp32", paths)
    del model, x32, args, exact
    time_encoder(run, "fp32", batch, EAGER)
    if run.device.type == "cuda":  # the triton path with the tf32x3 kernel in place of the PyTorch sparse path
        from stdd_fast import triton_ops

        previous = triton_ops.use_fp32_sparse_attention("tf32x3")
        try:
            time_encoder(run, "fp32", batch, ("reference", "triton"), variant="+sparse:tf32x3")
        finally:
            triton_ops.use_fp32_sparse_attention(previous)


def percent_of_peak(run: Run, dtype_name: str, tflops: float) -> float | None:
    """``tflops`` as a percentage of the matrix peak the ``peak`` section measured (None: not measured)."""
    peak = run.results.get("matrix_peak_tflops", {}).get(dtype_name)
    return round(100 * tflops / peak, 1) if peak else None


def time_predictor(run: Run, path: BenchPath, model: STDDModel, clip: torch.Tensor) -> tuple[Timing, float, dict]:
    """``path``'s predictor (``bench.paths.build_predictor``) timed on ``clip``: (timing, first call s, telemetry).

    The first call compiles, tunes the kernels' launches or captures the CUDA graph.
    """
    start = time.perf_counter()
    predictor = build_predictor(path, model, clip)  # compiled paths: a copy, warmed eagerly
    predictor(clip)
    synchronize(run.device)
    first_call_s = time.perf_counter() - start
    with NvmlSampler() as sampler:
        timing = time_fn(
            lambda: predictor(clip), run.device, warmup=run.scale.warmup, iters=run.scale.iters, min_seconds=0.5
        )
    return timing, first_call_s, sampler.telemetry.summary()


def time_encoder(run: Run, dtype_name: str, batch: int | None, paths: tuple[str, ...], variant: str = "") -> None:
    """Each path's predictor timed on one clip batch (``batch`` None: the scale's large batch).

    ``variant`` is appended to each row's path name (e.g. ``"+gemm:triton"``: what else the run changed).
    """
    dev = run.device
    dtype = DTYPES[dtype_name]
    batch = batch or run.scale.batch
    model = realistic_(create_model(run.scale.arch, seed=5)).to(dev, dtype)
    size = model.arch.image_size
    clip = torch.randn(batch, FRAMES, 3, size, size, device=dev, dtype=dtype)
    macs = {impl: encoder_macs(model.arch, model.stca, impl) for impl in ("reference", "fused")}
    reference_s = None
    for name in paths:
        what = f"encoder {dtype_name} B={batch} {name}{variant}"
        path = parse_path(name)
        why = unavailable_reason(path, dev, dtype)
        if why is None and path.mode in COMPILE_MODES and run.left() < (150 if path.mode == "autotune" else 60):
            why = "time budget"
        if why is not None:
            run.skip(what, why)
            continue
        try:
            timing, first_call_s, telemetry = time_predictor(run, path, model, clip)
        except Exception as e:
            run.results["errors"].append({"section": what, "error": repr(e)})
            print(f"  [error] {name}: {e!r}", flush=True)
            continue
        seconds = timing.median
        reference_s = seconds if name == "reference" else reference_s
        own = macs[path.flops_impl]
        row = {
            "what": "encoder",
            "path": name + variant,
            "dtype": dtype_name,
            "batch": batch,
            "frames": FRAMES,
            "median_ms": round(seconds * 1e3, 3),
            "p90_ms": round(timing.percentile(90) * 1e3, 3),
            "clips_per_s": round(batch / seconds, 2),
            "tflops_nominal": round(2 * macs["reference"] * batch * FRAMES / seconds / 1e12, 1),
            "tflops_executed": round(2 * own * batch * FRAMES / seconds / 1e12, 1),
            "speedup_vs_reference": round(reference_s / seconds, 3) if reference_s else None,
            "first_call_s": round(first_call_s, 1),
            "percent_of_peak": percent_of_peak(run, dtype_name, 2 * own * batch * FRAMES / seconds / 1e12),
            "telemetry": telemetry,
        }
        run.results["timings"].append(row)
        run.save()  # a run cut off mid-section keeps the paths already timed
        print(
            f"  {row['path']:>20} {dtype_name} B={batch}: {row['median_ms']:9.2f} ms  "
            f"{row['clips_per_s']:9.1f} clips/s  "
            f"{row['tflops_executed']:6.1f} TFLOP/s ({row['percent_of_peak']} % of peak)  "
            f"x{row['speedup_vs_reference']}",
            flush=True,
        )
    del model, clip
    torch.cuda.empty_cache() if dev.type == "cuda" else None


def gemm_timing(run: Run) -> None:
    """The triton impl's encoder in bf16 on each GEMM (``triton_ops.use_gemm``): cuBLAS through the PyTorch piece,
    then the Triton GEMM with the bias and activation in its epilogue; the large batch, then B=1 eager and as a
    CUDA graph. Rows name the GEMM (``triton+gemm:cublas``); the GEMM chosen before is restored."""
    from stdd_fast import triton_ops

    previous = triton_ops.use_gemm("cublas")
    try:
        for batch, paths in ((LARGE, ("triton",)), (1, ("triton", "graph:triton"))):
            for gemm in triton_ops.GEMMS:
                triton_ops.use_gemm(gemm)
                time_encoder(run, "bf16", batch, paths, variant=f"+gemm:{gemm}")
    finally:
        triton_ops.use_gemm(previous)


def time_block(run: Run, dtype_name: str) -> None:
    """One STCA block at the large batch, every implementation (and the compiled reference where time allows)."""
    dev, batch = run.device, run.scale.batch
    dtype = DTYPES[dtype_name]
    model = realistic_(create_model(run.scale.arch, seed=6)).to(dev, dtype)
    block = model.blocks[len(model.blocks) // 2]
    x = torch.randn(batch * FRAMES, model.arch.tokens_per_frame, model.arch.vision_width, device=dev, dtype=dtype)
    vis = block.visible_tokens(batch, FRAMES, dev)
    src = block.index.source_maps(FRAMES, dev)

    def call(impl):
        def run_block():
            block.impl = impl  # on every call: the variants share the block
            return ops.stca_block(block, x, vis, src)

        return run_block

    variants = {"reference": call("reference"), "fused": call("fused"), "triton": call("triton")}
    if run.left() > 120:
        compiled = torch.compile(stca_block_reference)
        variants["compile:reference"] = lambda: compiled(block, x, vis, src)
    reference_s = None
    for name, fn in variants.items():
        with torch.no_grad():
            timing = time_fn(fn, dev, warmup=run.scale.warmup, iters=run.scale.iters, min_seconds=0.3)
        reference_s = timing.median if name == "reference" else reference_s
        macs = block_macs(model.arch, model.stca, "reference" if name.endswith("reference") else "fused")
        row = {
            "what": "stca_block",
            "path": name,
            "dtype": dtype_name,
            "batch": batch,
            "frames": FRAMES,
            "median_ms": round(timing.median * 1e3, 4),
            "tflops_executed": round(2 * macs * batch * FRAMES / timing.median / 1e12, 1),
            "speedup_vs_reference": round(reference_s / timing.median, 3),
        }
        run.results["timings"].append(row)
        run.save()  # a run cut off mid-section keeps the paths already timed
        print(f"  block {name:>18} {dtype_name} B={batch}: {row['median_ms']:8.3f} ms  x{row['speedup_vs_reference']}")


def time_head(run: Run) -> None:
    """The scoring head's PyTorch piece against its Triton kernel at the large batch."""
    from stdd_fast import triton_ops

    dev, batch, (classes, prompts) = run.device, run.scale.batch, run.scale.head
    f = F.normalize(torch.randn(batch, FRAMES, 512, device=dev), dim=-1)
    w = F.normalize(torch.randn(classes, prompts, 512, device=dev), dim=-1)
    reps = dict(warmup=run.scale.warmup, iters=2 * run.scale.iters)
    ref = time_fn(lambda: score(f, w, 4.6), dev, **reps)
    tri = time_fn(lambda: triton_ops.score(f, w, 4.6), dev, **reps)
    for name, t in (("reference", ref), ("triton", tri)):
        run.results["timings"].append(
            {
                "what": "head",
                "path": name,
                "batch": batch,
                "frames": FRAMES,
                "classes": classes,
                "prompts": prompts,
                "median_ms": round(t.median * 1e3, 4),
                "speedup_vs_reference": round(ref.median / t.median, 3),
            }
        )
        print(f"  head {name:>10} B={batch} K={classes} N={prompts}: {t.median * 1e3:.3f} ms")


# each fp8 row's speed-up is against its bf16 path; the compiled pair (inductor fuses fp8's activation quantisation)
# runs when the budget allows
FP8_PATHS = ("triton", "fused", "fp8:triton", "fp8:fused", "compile:triton", "fp8:compile:triton")


def fp8_encoder(run: Run) -> None:
    """dtype="fp8" against bf16 on the encoder at the large batch: each path timed on one bf16 clip batch, and each
    one's error against the fp32 reference on the same input and the same weights, with outlier channels planted
    (:func:`stdd_fast.bench.weights.add_outlier_channels_`: 6 channels at 40x, the function unchanged): min cosine
    of the frame embeddings (also with the batch-mean direction removed: random weights give every clip a large
    shared direction) and top-1 agreement under a random prompt-level classifier of the head's K and N."""
    from stdd_fast.bench.weights import add_outlier_channels_
    from stdd_fast.numerics import min_cosine

    dev, batch, (classes, prompts) = run.device, run.scale.batch, run.scale.head
    model32 = realistic_(create_model(run.scale.arch, seed=7)).to(dev)
    outliers = add_outlier_channels_(model32, channels=6, factor=40.0, seed=7)
    size = model32.arch.image_size
    gen = torch.Generator(dev).manual_seed(7)
    clip32 = torch.randn(batch, FRAMES, 3, size, size, device=dev, generator=gen)
    weights = F.normalize(torch.randn(classes, prompts, model32.arch.embed_dim, device=dev, generator=gen), dim=-1)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # an exact fp32 reference
    try:
        with torch.no_grad():
            reference = model32.set_impl("reference").encode_video(clip32)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    ref_top1 = score(reference, weights, model32.logit_scale).argmax(-1)
    shared = reference.mean((0, 1), keepdim=True)
    run.results["fp8"] = {"outlier_channels": outliers, "classes": classes, "prompts": prompts,
                          "reference_distinct_top1": len(set(ref_top1.tolist()))}  # fmt: skip
    model = copy.deepcopy(model32).to(torch.bfloat16)  # the fp8 paths copy it (bf16 weights, fp8 linears)
    del model32
    clip = clip32.to(torch.bfloat16)
    macs = encoder_macs(model.arch, model.stca, "fused")
    medians: dict[str, float] = {}
    for name in FP8_PATHS:
        what = f"encoder fp8 section B={batch} {name}"
        path = parse_path(name)
        why = unavailable_reason(path, dev, torch.bfloat16)
        if why is None and dev.type != "cuda" and path.impl == "triton":
            why = "Triton's interpreter (--smoke) computes bf16 wrongly, at a minute per call"
        if why is None and path.mode in COMPILE_MODES and run.left() < 120:
            why = "time budget"
        if why is not None:
            run.skip(what, why)
            continue
        try:
            start = time.perf_counter()
            predictor = build_predictor(path, model, clip)
            with torch.no_grad():
                emb = predictor(clip)[1]
            synchronize(dev)
            first_call_s = time.perf_counter() - start
            with NvmlSampler() as sampler:
                timing = time_fn(
                    lambda fn=predictor: fn(clip), dev, warmup=run.scale.warmup, iters=run.scale.iters, min_seconds=0.5
                )
        except Exception as e:
            run.results["errors"].append({"section": what, "error": repr(e)})
            print(f"  [error] {name}: {e!r}", flush=True)
            continue
        seconds = medians[name] = timing.median
        bf16_s = medians.get(name.removeprefix("fp8:"))
        top1 = score(emb, weights, model.logit_scale.float()).argmax(-1)
        row = {
            "what": "encoder",
            "path": name,
            "dtype": path.dtype or "bf16",
            "batch": batch,
            "frames": FRAMES,
            "median_ms": round(seconds * 1e3, 3),
            "p90_ms": round(timing.percentile(90) * 1e3, 3),
            "clips_per_s": round(batch / seconds, 2),
            "tflops_executed": round(2 * macs * batch * FRAMES / seconds / 1e12, 1),
            "speedup_vs_bf16": round(bf16_s / seconds, 3) if bf16_s and path.dtype else None,
            "first_call_s": round(first_call_s, 1),
            "telemetry": sampler.telemetry.summary(),
            "max_rel_err": max_rel_err(emb, reference),
            "cos_min": min_cosine(emb, reference),
            "cos_min_centred": min_cosine(emb - shared, reference - shared),
            "top1_agreement": (top1 == ref_top1).float().mean().item(),
        }
        run.results["timings"].append(row)
        run.save()
        print(
            f"  {name:>12} B={batch}: {row['median_ms']:9.2f} ms  {row['clips_per_s']:9.1f} clips/s  "
            f"x{row['speedup_vs_bf16']} vs bf16  cos min {row['cos_min']:.5f} (centred {row['cos_min_centred']:.5f})  "
            f"top-1 {row['top1_agreement']:.3f}",
            flush=True,
        )
        predictor = None  # its model copy goes before the next path's
    del model, clip32, reference
    torch.cuda.empty_cache() if dev.type == "cuda" else None


def measure_peaks(run: Run) -> None:
    run.results["matrix_peak_tflops"] = {
        d: round(matrix_peak_tflops(run.device, DTYPES[d]), 1) for d in ("bf16", "fp16")
    }
    print("  measured matrix peak TFLOP/s:", run.results["matrix_peak_tflops"], flush=True)


def profile_encoder(run: Run, paths: tuple[str, ...]) -> None:
    """Top GPU kernels of one bf16 encoder forward per path at the large batch (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    dev, batch = run.device, run.scale.batch
    model = realistic_(create_model(run.scale.arch, seed=9)).to(dev, torch.bfloat16)
    size = model.arch.image_size
    clip = torch.randn(batch, FRAMES, 3, size, size, device=dev, dtype=torch.bfloat16)
    run.results.setdefault("profiles", {})
    for path in paths:
        model.set_impl(path)
        with torch.no_grad():
            model.encode_video(clip)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                model.encode_video(clip)
                torch.cuda.synchronize()
        rows = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:15]
        table = [{"kernel": e.key[:90], "ms": round(e.device_time_total / 1e3, 3), "calls": e.count} for e in rows]
        total = sum(e.device_time_total for e in prof.key_averages()) / 1e3
        run.results["profiles"][f"encoder bf16 B={batch} {path}"] = {"gpu_ms_total": round(total, 2), "top": table}
        print(f"  profile {path}: {total:.2f} ms of GPU kernels")
        for row in table[:10]:
            print(f"    {row['ms']:8.3f} ms  x{row['calls']:4d}  {row['kernel']}")


# -- what the kernels did in this process -----------------------------------------------------------------------


def launch_tuning_record() -> dict:
    """The launch shapes the kernels' tuners chose per problem shape, with each candidate's time."""
    if "stdd_fast.kernels" not in sys.modules:
        return {}
    tuned = ("sparse_attention", "scatter_residual", "linear")
    kernels = [importlib.import_module(f"stdd_fast.kernels.{name}") for name in tuned]
    record = {}
    for tuner in (kernel.TUNER for kernel in kernels):
        record[tuner.name] = [
            {"key": str(key), "chosen": tuner.chosen[key], "ms": [[c, round(ms, 4)] for c, ms in timings]}
            for key, timings in tuner.timings.items()
        ]
    return record


def compiled_kernels_record() -> list[dict]:
    """Each Triton kernel this run compiled, as the GPU loaded it (compare ``benchmarks/kernel_resources.py``)."""
    records = []
    for name in ("layer_norm", "sparse_attention", "scatter_residual", "score", "linear"):
        module = sys.modules.get(f"stdd_fast.kernels.{name}")
        jitted = [fn for fn in vars(module).values() if hasattr(fn, "device_caches")] if module else []
        for fn in jitted:
            for caches in list(fn.device_caches.values()):
                for kernel in caches[0].values():  # the per-device kernel cache: specialisation -> CompiledKernel
                    md = kernel.metadata
                    records.append(
                        {
                            "kernel": md.name,
                            "num_warps": md.num_warps,
                            "shared_bytes": md.shared,
                            "registers": getattr(kernel, "n_regs", None),  # set once the binary is loaded
                            "spills": getattr(kernel, "n_spills", None),
                            "constants": {
                                fn.arg_names[k[0]] if isinstance(k, tuple) else str(k): str(v)
                                for k, v in getattr(kernel.src, "constants", {}).items()
                            },
                        }
                    )
    return records


# -- the plan ---------------------------------------------------------------------------------------------------

EAGER = ("reference", "fused", "triton")
GRAPHS = ("graph:reference", "graph:triton")
COMPILED = ("reference", "compile:reference", "compile:fused", "compile:triton")
AUTOTUNE = ("reference", "compile:triton", "autotune:triton")
LARGE = None  # time_encoder's batch: the scale's large batch (32 on a GPU)
QUICK = "none-eval"  # --quick-checks: the encoder checks in the default STCA mode only

# (key, title, section function of the Run, seconds it needs), in the default order: the first get the budget
PLAN: tuple[tuple[str, str, Callable[[Run], None], float], ...] = (
    ("peak", "matrix peak", measure_peaks, 0),
    (
        "new-kernels",
        "the Triton GEMM, tf32x3 sparse attention, fp8 GEMMs, default CUDA graphs (pytest -m gpu)",
        partial(gpu_tests, name="new-kernels", files=NEW_KERNEL_TESTS, select=NEW_KERNEL_SELECT),
        0,
    ),
    ("kernels", "kernels vs their pieces (pytest -m gpu)", partial(gpu_tests, name="kernels", files=KERNEL_TESTS), 0),
    (
        "checks",
        "encoder paths vs fp32 reference (pytest -m gpu)",
        partial(gpu_tests, name="checks", files=ENCODER_TESTS, select="encoder_in_each_dtype", quick_select=QUICK),
        0,
    ),
    (
        "gradients",
        "gradients (pytest -m gpu)",
        partial(gpu_tests, name="gradients", files=ENCODER_TESTS, select="gradients"),
        60,
    ),
    ("eager-bf16", "encoder bf16 B=32", partial(time_encoder, dtype_name="bf16", batch=LARGE, paths=EAGER), 30),
    ("gemm-bf16", "encoder bf16 B=32 and B=1: cuBLAS vs the Triton GEMM", gemm_timing, 90),
    ("block-bf16", "STCA block bf16 B=32", partial(time_block, dtype_name="bf16"), 30),
    ("head", "head K=400 N=224", time_head, 10),
    ("fp8", "encoder fp8 vs bf16 B=32 (outlier channels; errors vs fp32)", fp8_encoder, 45),
    ("eager-fp16", "encoder fp16 B=32", partial(time_encoder, dtype_name="fp16", batch=LARGE, paths=EAGER), 30),
    ("b1-bf16", "encoder bf16 B=1", partial(time_encoder, dtype_name="bf16", batch=1, paths=EAGER + GRAPHS), 20),
    ("b1-fp16", "encoder fp16 B=1", partial(time_encoder, dtype_name="fp16", batch=1, paths=EAGER + GRAPHS), 20),
    (
        "compiled-bf16",
        "encoder bf16 B=32 compiled",
        partial(time_encoder, dtype_name="bf16", batch=LARGE, paths=COMPILED),
        100,
    ),
    (
        "compile-graphs",
        "torch.compile and CUDA graphs (pytest -m gpu)",
        partial(
            gpu_tests,
            name="compile-graphs",
            files=ENCODER_TESTS,
            select="compiled_triton_encoder_on_gpu or cuda_graph_replay",
        ),
        90,
    ),
    (
        "compiled-fp16",
        "encoder fp16 B=32 compiled",
        partial(time_encoder, dtype_name="fp16", batch=LARGE, paths=COMPILED[:2]),
        100,
    ),
    ("profile", "profile bf16 B=32", partial(profile_encoder, paths=("fused", "triton")), 15),
    ("l14", "sparse attention at L/14 shapes", l14_timing, 45),
    ("fp32", "fp32 sparse attention and encoder", fp32_paths, 40),
    ("video", "Engine.classify end to end on recorded clips (PyAV)", partial(video_section, prepare=realistic_), 60),
    ("nvdec", "NVDEC probe; DALI tests and timings", partial(nvdec_section, tests=gpu_tests, prepare=realistic_), 5),
    (
        "autotune-bf16",
        "encoder bf16 B=32, max-autotune (inductor's GEMM templates, epilogue fusion)",
        partial(time_encoder, dtype_name="bf16", batch=LARGE, paths=AUTOTUNE),
        150,
    ),
)
SECTIONS = ",".join(key for key, *_ in PLAN)
CUDA_ONLY = {"peak", "profile", "autotune-bf16"}  # --smoke lists them as skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run")
    parser.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny arch: checks the script")
    parser.add_argument(
        "--only", default=SECTIONS, help=f"comma-separated sections, run in that order (default all: {SECTIONS})"
    )
    parser.add_argument("--quick-checks", action="store_true", help="encoder checks in the default mode only")
    args = parser.parse_args(argv)
    only = list(dict.fromkeys(args.only.split(",")))
    unknown = [key for key in only if key not in SECTIONS.split(",")]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; the sections are {SECTIONS}")
    if args.smoke and os.environ.get("TRITON_INTERPRET") != "1":
        # the kernels run in Triton's interpreter, which must be chosen before triton is imported
        # (importing torch imports it): run again with it chosen
        os.environ["TRITON_INTERPRET"] = "1"
        os.execv(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)])
    device = torch.device("cpu" if args.smoke else "cuda")
    scale = SMOKE_SCALE if args.smoke else GPU_SCALE
    run = Run(Path(args.out).resolve(), args.budget, device, scale, args.quick_checks)
    print(json.dumps(run.results["env"]), flush=True)

    plan = {key: (name, fn, needs) for key, name, fn, needs in PLAN}
    for key in only:  # in the order given: the first ones get the time budget
        name, fn, needs = plan[key]
        if args.smoke and key in CUDA_ONLY:
            run.skip(name, "needs CUDA")
        else:
            run.section(name, fn, needs_s=needs)

    run.results["launch_tuning"] = launch_tuning_record()
    try:
        run.results["compiled_kernels"] = compiled_kernels_record()
    except Exception as e:  # Triton internals differ across versions: the record is optional
        run.results["compiled_kernels"] = [{"error": repr(e)}]
    failed = [t["test"] for t in run.results["tests"] if t["outcome"] == "failed"]
    run.results["failed_tests"] = failed
    run.save()
    outcomes = [t["outcome"] for t in run.results["tests"]]
    print(
        f"\n{len(outcomes)} GPU tests: {outcomes.count('passed')} passed, {len(failed)} failed, "
        f"{outcomes.count('skipped')} skipped; {len(run.results['errors'])} errors; "
        f"{run.results['elapsed_s']} s; results in {run.out / 'gpu_check.json'}"
    )
    for row in run.results["timings"]:
        print(json.dumps(row))
    return 1 if failed or run.results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
