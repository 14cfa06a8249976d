"""One prepared GPU run (benchmarks/gpu_check.sh): every GPU path checked against the fp32 reference, then timed.

Sections run in priority order inside a time budget; each is isolated (an error is recorded and the
run goes on) and results are written to ``<out>/gpu_check.json`` after every section, so whatever
ran comes back even if the command is cut off. ``--smoke`` runs the same code on the CPU with the
tiny architecture (Triton's interpreter) to check the script itself.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

import stdd_fast
from stdd_fast import STCAConfig, create_model
from stdd_fast.bench.environment import environment
from stdd_fast.bench.paths import COMPILE_MODES
from stdd_fast.bench.peak import matrix_peak_tflops
from stdd_fast.bench.telemetry import NvmlSampler
from stdd_fast.bench.timing import time_fn
from stdd_fast.config import ArchConfig
from stdd_fast.flops import block_macs, encoder_macs
from stdd_fast.head import score_ref
from stdd_fast.stca_fused import (
    fold_sparse_projection,
    layer_norm_with_stats,
    residual_layer_norm_ref,
    scatter_residual_ref,
    sparse_attention_ref,
)
from stdd_fast.stca_ref import stca_block_ref

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOWP_FACTOR, LOWP_ATOL = 2.0, 1e-3


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def min_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.double().flatten(0, -2), b.double().flatten(0, -2), dim=-1).min().item()


class Run:
    def __init__(self, out: Path, budget_s: float, device: torch.device, smoke: bool) -> None:
        self.out, self.budget, self.device, self.smoke = out, budget_s, device, smoke
        self.start = time.perf_counter()
        self.unreliable_dot: dict[str, str] = {}  # dtype -> why its tl.dot results cannot be checked here
        self.results: dict = {"env": environment(device), "correctness": [], "timings": [], "skipped": [], "errors": []}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1))

    def section(self, name: str, fn, needs_s: float = 0.0) -> None:
        if self.left() < needs_s:
            self.results["skipped"].append(f"{name} (needs ~{needs_s:.0f} s, {self.left():.0f} s left)")
            print(f"[skip] {name}", flush=True)
            return
        t0 = time.perf_counter()
        print(f"[section] {name} ({self.left():.0f} s left)", flush=True)
        try:
            fn()
        except Exception as e:  # record and continue: one broken section must not hide the others
            self.results["errors"].append({"section": name, "error": repr(e), "trace": traceback.format_exc()[-3000:]})
            print(f"[error] {name}: {e!r}", flush=True)
        print(f"[done] {name} in {time.perf_counter() - t0:.1f} s", flush=True)
        self.save()

    def skip_check(self, name: str, why: str) -> None:
        self.results["skipped"].append(f"{name}: {why}")
        print(f"  SKIP {name}: {why}", flush=True)

    def check(self, name: str, value: float, bound: float, kind: str = "max_rel_err", **extra) -> None:
        ok = value >= bound if kind == "min_cosine" else value <= bound
        row = {"check": name, kind: value, "bound": bound, "pass": bool(ok), **extra}
        self.results["correctness"].append(row)
        self.save()  # a run cut off mid-section keeps the checks already made
        print(f"  {'PASS' if ok else 'FAIL'} {name}: {kind}={value:.3e} (bound {bound:.1e})", flush=True)


def interpreter_dot_error(dtype: torch.dtype) -> float:
    """Max abs error of one 32x64 @ 64x32 ``tl.dot`` in ``dtype`` under Triton's interpreter.

    The interpreter computes on numpy, which has no bfloat16: its bf16 ``tl.dot`` has returned
    errors near 1e11 on this tiny product, so ``--smoke`` cannot check bf16 results of kernels that
    use ``tl.dot`` (the sparse attention); GPU runs check them.
    """
    import triton
    import triton.language as tl

    @triton.jit
    def dot_kernel(a_ptr, b_ptr, out_ptr, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr):
        rows, cols, inner = tl.arange(0, M), tl.arange(0, N), tl.arange(0, K)
        a = tl.load(a_ptr + rows[:, None] * K + inner[None, :])
        b = tl.load(b_ptr + inner[:, None] * N + cols[None, :])
        tl.store(out_ptr + rows[:, None] * N + cols[None, :], tl.dot(a, b))

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 64, generator=gen).to(dtype), torch.randn(64, 32, generator=gen).to(dtype)
    out = torch.full((32, 32), float("nan"))
    dot_kernel[(1,)](a, b, out, 32, 32, 64)
    return (out.double() - a.double() @ b.double()).abs().max().nan_to_num(float("inf")).item()


def realistic_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """open_clip init plus non-trivial LayerNorm affines and biases (zeros would hide bias bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1 and "logit" not in name:
                noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
                p.add_(0.1 * noise)
    return model


def correctness(run: Run, arch: str, frames_shape: tuple[int, ...], quick: bool = False) -> None:
    dev = run.device
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    base = realistic_(create_model(arch, seed=1)).to(dev)
    frames = torch.randn(*frames_shape, device=dev)
    classes = F.normalize(torch.randn(400, 8, base.arch.embed_dim, device=dev), dim=-1)

    def encode(model, impl, dtype, seed=0):
        model = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)  # keep fp32 weights exact
        model.set_impl(impl)
        torch.manual_seed(seed)
        with torch.no_grad():
            return model.encode_video(frames.to(dtype))

    modes = (("none", False),) if quick else (("none", False), ("seeded", False), ("official", False), ("none", True))
    for shuffle, training in modes:
        model = realistic_(create_model(arch, stca=STCAConfig(shuffle=shuffle), seed=1)).to(dev).train(training)
        ref = encode(model, "reference", torch.float32)
        ref_scores = score_ref(ref, classes, model.logit_scale)
        for impl in ("fused", "triton"):
            for dname, dtype in DTYPES.items():
                if dname != "fp32" and (shuffle != "none" or training):
                    continue
                out = encode(model, impl, dtype)
                tag = f"encoder {impl} {dname} shuffle={shuffle} train={training}"
                scores = stdd_fast.score(out, classes, model.logit_scale.float(), impl=impl)
                top1 = (scores.argmax(-1) == ref_scores.argmax(-1)).float().mean().item()
                if impl == "triton" and dname in run.unreliable_dot:
                    run.skip_check(tag, run.unreliable_dot[dname])
                elif dname == "fp32":
                    run.check(tag, rel_err(out, ref), 1e-5, top1_agreement=top1)
                    run.check(tag + " cosine", min_cos(out, ref), 0.99999, kind="min_cosine")
                else:
                    ref_low = encode(model, "reference", dtype)
                    bound = LOWP_FACTOR * rel_err(ref_low, ref) + LOWP_ATOL
                    run.check(
                        tag, rel_err(out, ref), bound, reference_lowp_err=rel_err(ref_low, ref), top1_agreement=top1
                    )
                    run.check(tag + " cosine", min_cos(out, ref), 0.999, kind="min_cosine")
        del model
    del base


def sparse_args(block, x32: torch.Tensor, frames: int, dtype: torch.dtype) -> tuple:
    """The sparse path's inputs for ``block`` on frames ``x32`` [clips * frames, L, D], cast to ``dtype``."""
    dev = x32.device
    low = copy.deepcopy(block).to(dtype)
    x = x32.to(dtype)
    vis, src = block.visible_tokens(x32.shape[0] // frames, frames, dev), block.index.source_maps(frames, dev)
    with torch.no_grad():
        h, mean, rstd = layer_norm_with_stats(low.ln_1, x)
        qkv = F.linear(h, low.attn.in_proj_weight, low.attn.in_proj_bias)
        proj = fold_sparse_projection(low, src.shape[-1], dtype)
    return qkv, x, mean, rstd, vis, src, proj, low.attn.num_heads


def time_sparse(run: Run, what: str, args: tuple, dtype_name: str, paths: dict) -> None:
    """Time each of ``paths`` (name -> sparse-attention function, the first the baseline) on ``args``."""
    reference_s = None
    for name, fn in paths.items():
        with torch.no_grad():
            timing = time_fn(lambda fn=fn: fn(*args), run.device, warmup=3, iters=10, min_seconds=0.3)
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


def kernel_correctness(run: Run, arch: str, batch: int, frames: int) -> None:
    from stdd_fast.kernels.layer_norm import layer_norm_rows
    from stdd_fast.kernels.stca_scatter import TILES, stca_scatter
    from stdd_fast.kernels.stca_sparse_attention import head_groups, stca_sparse_attention
    from stdd_fast.kernels.stdd_head import stdd_score

    dev = run.device
    model = realistic_(create_model(arch, seed=2)).to(dev)
    block = model.blocks[len(model.blocks) // 2]
    length, width = model.arch.tokens_per_frame, model.arch.vision_width
    x32 = torch.randn(batch * frames, length, width, device=dev)
    vis = block.visible_tokens(batch, frames, dev)
    src = block.index.source_maps(frames, dev)

    exact = sparse_attention_ref(*sparse_args(block, x32, frames, torch.float32))
    for dname, dtype in DTYPES.items():
        args = sparse_args(block, x32, frames, dtype)
        out = torch.full((x32.shape[0], vis.shape[2] + 1, width), float("nan"), device=dev, dtype=dtype)
        stca_sparse_attention(*args, out=out)
        if dname == "fp32":
            run.check("kernel sparse-attention fp32", rel_err(out, exact), 1e-5)
        elif dname in run.unreliable_dot:
            run.skip_check(f"kernel sparse-attention {dname}", run.unreliable_dot[dname])
        else:
            ref_err = rel_err(sparse_attention_ref(*args), exact)
            run.check(
                f"kernel sparse-attention {dname}",
                rel_err(out, exact),
                LOWP_FACTOR * ref_err + LOWP_ATOL,
                reference_lowp_err=ref_err,
            )
        worst = 0.0  # every launch split the tuner may pick must give the same bits
        for group in head_groups(args[-1]):
            again = torch.full_like(out, float("nan"))
            stca_sparse_attention(*args, out=again, heads_per_program=group)
            worst = max(worst, (again.float() - out.float()).abs().max().nan_to_num(float("inf")).item())
        run.check(
            f"kernel sparse-attention {dname}: every head grouping bit-identical", worst, 0.0, kind="max_abs_diff"
        )

    full, mlp = torch.randn_like(x32), torch.randn_like(x32)
    sp = torch.randn(x32.shape[0], vis.shape[2] + 1, width, device=dev)
    exact = scatter_residual_ref(full, mlp, x32, sp, vis, src)
    for dname, dtype in DTYPES.items():
        args = [t.to(dtype) for t in (full, mlp, x32, sp)]
        out = torch.full_like(args[0], float("nan"))
        stca_scatter(*args, vis, src, out=out)
        ref_err = rel_err(scatter_residual_ref(*args, vis, src), exact)
        run.check(f"kernel scatter {dname}", rel_err(out, exact), 1e-5 if dname == "fp32" else 2 * ref_err + 1e-3)
        worst = 0.0
        for tile in TILES:
            again = torch.full_like(out, float("nan"))
            stca_scatter(*args, vis, src, out=again, tile=tile)
            worst = max(worst, (again.float() - out.float()).abs().max().nan_to_num(float("inf")).item())
        run.check(f"kernel scatter {dname}: every tile bit-identical", worst, 0.0, kind="max_abs_diff")

    ln = block.ln_2
    update = torch.randn_like(x32)
    exact_full = update + x32
    exact_ln = F.layer_norm(exact_full, (width,), ln.weight, ln.bias, ln.eps)
    for dname, dtype in DTYPES.items():
        low = [t.to(dtype) for t in (update, x32)]
        weight, bias = ln.weight.to(dtype), ln.bias.to(dtype)  # as in a model cast to the dtype
        full, normed, _, _ = layer_norm_rows(low[0], weight, bias, ln.eps, residual=low[1])
        ref_full, ref_normed = residual_layer_norm_ref(*low, weight, bias, ln.eps)
        bound = 1e-5 if dname == "fp32" else LOWP_FACTOR * rel_err(ref_normed, exact_ln) + LOWP_ATOL
        run.check(f"kernel residual LayerNorm {dname}", rel_err(normed, exact_ln), bound)
        # the sum is rounded once to the dtype, as PyTorch's add rounds it (within one rounding step)
        ulp = torch.finfo(dtype).eps if dname != "fp32" else 0.0
        run.check(f"kernel residual LayerNorm {dname}: the stored sum", rel_err(full, ref_full), ulp)

    f = F.normalize(torch.randn(32, 8, 512, device=dev), dim=-1)
    w = F.normalize(torch.randn(400, 224, 512, device=dev), dim=-1)
    out = torch.full((32, 400), float("nan"), device=dev)
    stdd_score(f, w, torch.tensor(4.6, device=dev), out=out)
    ref = score_ref(f, w, 4.6)
    run.check(
        "kernel head K=400 N=224 B=32 T=8",
        rel_err(out, ref),
        1e-5,
        top1_agreement=(out.argmax(-1) == ref.argmax(-1)).float().mean().item(),
    )


L14_ONE_BLOCK = ArchConfig("L14-one-block", 768, 224, 14, 1024, 1, 16, 64, 1, 1)
# --smoke: the same 16x16 grid at width 64 (Triton's interpreter, fp32)
L14_GRID_SMALL = ArchConfig("L14-grid-small", 32, 64, 4, 64, 1, 4, 32, 2, 1)


def l14_kernels(run: Run, arch: ArchConfig, dtypes: list[str], frames_timed: int) -> None:
    """The sparse-attention kernel at ViT-L/14 shapes (16x16 grid: 1 + V = 129 rows; width 1024, 16 heads).

    129 rows exceed the one-tile kernel: this checks the blocked kernel in each of ``dtypes`` and
    every head grouping, then times it against the PyTorch sparse path (what the triton path ran
    before it) over ``frames_timed`` frames in the last of ``dtypes`` (0: no timing).
    """
    from stdd_fast.kernels import sparse_attention_triton
    from stdd_fast.kernels.stca_sparse_attention import head_groups, single_tile, stca_sparse_attention

    dev = run.device
    model = realistic_(create_model(arch, seed=8)).to(dev)
    block = model.blocks[0]
    heads, width = arch.vision_heads, arch.vision_width

    def inputs(dtype, frames):
        x = torch.randn(frames, arch.tokens_per_frame, width, device=dev, generator=torch.Generator(dev).manual_seed(5))
        return sparse_args(block, x, 8, dtype)

    exact = sparse_attention_ref(*inputs(torch.float32, 16))
    assert not single_tile(exact.shape[1] - 1)
    for dname in dtypes:
        args = inputs(DTYPES[dname], 16)
        with torch.no_grad():
            out = torch.full_like(exact, float("nan"), dtype=DTYPES[dname])
            stca_sparse_attention(*args, out=out)
            bound = 1e-5 if dname == "fp32" else LOWP_FACTOR * rel_err(sparse_attention_ref(*args), exact) + LOWP_ATOL
            run.check(f"kernel sparse-attention L/14 (blocked) {dname}", rel_err(out, exact), bound)
            worst = 0.0
            for group in head_groups(heads):
                again = torch.full_like(out, float("nan"))
                stca_sparse_attention(*args, out=again, heads_per_program=group)
                worst = max(worst, (again.float() - out.float()).abs().max().nan_to_num(float("inf")).item())
        run.check(
            f"kernel sparse-attention L/14 (blocked) {dname}: every head grouping bit-identical",
            worst,
            0.0,
            kind="max_abs_diff",
        )

    if not frames_timed:
        return
    args = inputs(DTYPES[dtypes[-1]], frames_timed)
    paths = {"pytorch": sparse_attention_ref, "triton": sparse_attention_triton}
    time_sparse(run, "sparse_attention L/14", args, dtypes[-1], paths)


def fp32_paths(run: Run, arch: str, frames_timed: int, batch: int, iters: int) -> None:
    """fp32 on the GPU: the sparse-attention kernel against the PyTorch sparse path, then the encoder.

    The triton impl runs fp32 sparse attention in PyTorch on a GPU (the kernel's exact fp32
    ``tl.dot`` runs on FMA units and spills); this measures that choice, then the encoder's paths.
    """
    from stdd_fast.kernels.stca_sparse_attention import stca_sparse_attention

    dev = run.device
    model = realistic_(create_model(arch, seed=9)).to(dev)
    block = model.blocks[len(model.blocks) // 2]
    x32 = torch.randn(frames_timed, model.arch.tokens_per_frame, model.arch.vision_width, device=dev)
    args = sparse_args(block, x32, 8, torch.float32)
    time_sparse(
        run, "sparse_attention", args, "fp32", {"pytorch": sparse_attention_ref, "kernel": stca_sparse_attention}
    )
    del model, x32, args
    time_encoder(run, arch, "fp32", batch, 8, ["reference", "fused", "triton"], iters)


def gradients(run: Run, arch: str, frames_shape) -> None:
    dev = run.device
    model = realistic_(create_model(arch, seed=3)).to(dev).train()
    frames = torch.randn(*frames_shape, device=dev)
    classes = F.normalize(torch.randn(10, 8, model.arch.embed_dim, device=dev), dim=-1)
    grads = {}
    for impl in ("reference", "fused", "triton"):
        model.set_impl(impl)
        model.zero_grad()
        torch.manual_seed(7)
        emb = model.encode_video(frames)
        loss = F.cross_entropy(
            stdd_fast.score(emb, classes, model.logit_scale, impl=impl), torch.arange(frames.shape[0], device=dev)
        )
        loss.backward()
        grads[impl] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    for impl in ("fused", "triton"):
        worst = max(rel_err(grads[impl][n], g) for n, g in grads["reference"].items())
        run.check(f"gradients {impl} vs reference (train mode, fp32, worst tensor)", worst, 1e-4)


def compiled_and_graphs(run: Run, arch: str, frames_shape) -> None:
    dev = run.device
    model = realistic_(create_model(arch, seed=4)).to(dev)
    frames = torch.randn(*frames_shape, device=dev)
    with torch.no_grad():
        ref = model.set_impl("reference").encode_video(frames)
        model.set_impl("triton")
        compiled = torch.compile(model.encode_video)
        run.check("torch.compile(encode_video) impl=triton fp32", rel_err(compiled(frames), ref), 1e-5)
        if dev.type == "cuda":
            static = frames.clone()
            model.encode_video(static)  # warm caches (index tables, folded weights) before capture
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                captured = model.encode_video(static)
            static.copy_(frames)
            graph.replay()
            torch.cuda.synchronize()
            run.check("CUDA graph replay impl=triton fp32", rel_err(captured, ref), 1e-5)


def compiled_encoder(model, clip: torch.Tensor, mode: str):
    """The callable a timing path runs: eager, ``torch.compile``d, or a captured CUDA graph (replay)."""
    if mode in COMPILE_MODES:
        model.encode_video(clip)  # fill the index-table caches eagerly: tracing must not build them
        fn = torch.compile(model.encode_video, mode=COMPILE_MODES[mode])
        fn(clip)
        return lambda: fn(clip)
    if mode == "graph":
        model.encode_video(clip)  # warm the caches (index tables, folded weights) outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model.encode_video(clip)
        return graph.replay
    model.encode_video(clip)
    return lambda: model.encode_video(clip)


def percent_of_peak(run: Run, dtype_name: str, tflops: float) -> float | None:
    """``tflops`` as a percentage of the matrix peak the ``peak`` section measured (None: not measured)."""
    peak = run.results.get("matrix_peak_tflops", {}).get(dtype_name)
    return round(100 * tflops / peak, 1) if peak else None


def time_encoder(run: Run, arch: str, dtype_name: str, batch: int, frames: int, paths: list[str], iters: int) -> None:
    dev = run.device
    dtype = DTYPES[dtype_name]
    model = realistic_(create_model(arch, seed=5)).to(dev, dtype)
    size = model.arch.image_size
    clip = torch.randn(batch, frames, 3, size, size, device=dev, dtype=dtype)
    macs = {impl: encoder_macs(model.arch, model.stca, impl) for impl in ("reference", "fused")}
    reference_s = None
    for path in paths:
        mode, _, impl = path.rpartition(":")
        if mode in COMPILE_MODES and run.left() < (150 if mode == "autotune" else 60):
            run.results["skipped"].append(f"encoder {dtype_name} B={batch} {path} (time budget)")
            continue
        model.set_impl(impl)
        try:
            with torch.no_grad():
                t_compile = time.perf_counter()
                fn = compiled_encoder(model, clip, mode)
                t_compile = time.perf_counter() - t_compile
                with NvmlSampler() as sampler:
                    timing = time_fn(fn, dev, warmup=2, iters=iters, min_seconds=0.5)
        except Exception as e:
            run.results["errors"].append({"section": f"encoder {dtype_name} B={batch} {path}", "error": repr(e)})
            print(f"  [error] {path}: {e!r}", flush=True)
            continue
        seconds = timing.median
        reference_s = seconds if path == "reference" else reference_s
        own = macs["reference" if impl == "reference" else "fused"]
        row = {
            "what": "encoder",
            "path": path,
            "dtype": dtype_name,
            "batch": batch,
            "frames": frames,
            "median_ms": round(seconds * 1e3, 3),
            "p90_ms": round(timing.percentile(90) * 1e3, 3),
            "clips_per_s": round(batch / seconds, 2),
            "tflops_nominal": round(2 * macs["reference"] * batch * frames / seconds / 1e12, 1),
            "tflops_executed": round(2 * own * batch * frames / seconds / 1e12, 1),
            "speedup_vs_reference": round(reference_s / seconds, 3) if reference_s else None,
            "first_call_s": round(t_compile, 1),
            "percent_of_peak": percent_of_peak(run, dtype_name, 2 * own * batch * frames / seconds / 1e12),
            "telemetry": sampler.telemetry.summary(),
        }
        run.results["timings"].append(row)
        run.save()  # a run cut off mid-section keeps the paths already timed
        print(
            f"  {path:>20} {dtype_name} B={batch}: {row['median_ms']:9.2f} ms  {row['clips_per_s']:9.1f} clips/s  "
            f"{row['tflops_executed']:6.1f} TFLOP/s ({row['percent_of_peak']} % of peak)  "
            f"x{row['speedup_vs_reference']}",
            flush=True,
        )
    del model, clip
    torch.cuda.empty_cache() if dev.type == "cuda" else None


def time_block(run: Run, arch: str, dtype_name: str, batch: int, frames: int, iters: int) -> None:
    from stdd_fast import ops

    dev = run.device
    dtype = DTYPES[dtype_name]
    model = realistic_(create_model(arch, seed=6)).to(dev, dtype)
    block = model.blocks[len(model.blocks) // 2]
    x = torch.randn(batch * frames, model.arch.tokens_per_frame, model.arch.vision_width, device=dev, dtype=dtype)
    vis = block.visible_tokens(batch, frames, dev)
    src = block.index.source_maps(frames, dev)

    def call(impl):
        block.impl = impl
        return lambda: ops.stca_block(block, x, vis, src)

    variants = {"reference": call("reference"), "fused": call("fused"), "triton": call("triton")}
    if run.left() > 120:
        compiled = torch.compile(stca_block_ref)
        variants["compile:reference"] = lambda: compiled(block, x, vis, src)
    reference_s = None
    for name, fn in variants.items():
        with torch.no_grad():
            timing = time_fn(fn, dev, warmup=3, iters=iters, min_seconds=0.3)
        reference_s = timing.median if name == "reference" else reference_s
        macs = block_macs(model.arch, model.stca, "reference" if name.endswith("reference") else "fused")
        row = {
            "what": "stca_block",
            "path": name,
            "dtype": dtype_name,
            "batch": batch,
            "frames": frames,
            "median_ms": round(timing.median * 1e3, 4),
            "tflops_executed": round(2 * macs * batch * frames / timing.median / 1e12, 1),
            "speedup_vs_reference": round(reference_s / timing.median, 3),
        }
        run.results["timings"].append(row)
        run.save()  # a run cut off mid-section keeps the paths already timed
        print(f"  block {name:>18} {dtype_name} B={batch}: {row['median_ms']:8.3f} ms  x{row['speedup_vs_reference']}")


def time_head(run: Run, batch: int, frames: int, classes: int, prompts: int) -> None:
    from stdd_fast.kernels import score_triton

    dev = run.device
    f = F.normalize(torch.randn(batch, frames, 512, device=dev), dim=-1)
    w = F.normalize(torch.randn(classes, prompts, 512, device=dev), dim=-1)
    ref = time_fn(lambda: score_ref(f, w, 4.6), dev, warmup=3, iters=20)
    tri = time_fn(lambda: score_triton(f, w, 4.6), dev, warmup=3, iters=20)
    for name, t in (("reference", ref), ("triton", tri)):
        run.results["timings"].append(
            {
                "what": "head",
                "path": name,
                "batch": batch,
                "frames": frames,
                "classes": classes,
                "prompts": prompts,
                "median_ms": round(t.median * 1e3, 4),
                "speedup_vs_reference": round(ref.median / t.median, 3),
            }
        )
        print(f"  head {name:>10} B={batch} K={classes} N={prompts}: {t.median * 1e3:.3f} ms")


def profile_encoder(run: Run, arch: str, batch: int, paths: list[str]) -> None:
    """Top GPU kernels of one bf16 encoder forward per path (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    dev = run.device
    model = realistic_(create_model(arch, seed=9)).to(dev, torch.bfloat16)
    size = model.arch.image_size
    clip = torch.randn(batch, 8, 3, size, size, device=dev, dtype=torch.bfloat16)
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


def launch_tuning_record() -> dict:
    """The launch shapes the kernels' tuners chose per problem shape, with each candidate's time."""
    if "stdd_fast.kernels" not in sys.modules:
        return {}
    kernels = [
        importlib.import_module(f"stdd_fast.kernels.{name}") for name in ("stca_sparse_attention", "stca_scatter")
    ]
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
    for name in ("layer_norm", "stca_sparse_attention", "stca_scatter", "stdd_head"):
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


SECTIONS = (
    "peak,kernels,checks,gradients,eager-bf16,block-bf16,head,eager-fp16,b1-bf16,b1-fp16,"
    "compiled-bf16,compile-graphs,compiled-fp16,profile,l14,fp32,autotune-bf16"
)


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
    run = Run(Path(args.out), args.budget, device, args.smoke)
    arch = "test-tiny" if args.smoke else "ViT-B-16"
    size = 32 if args.smoke else 224
    big = 2 if args.smoke else 32
    it = 2 if args.smoke else 10
    for name in ("bf16", "fp16") if args.smoke else ():
        error = interpreter_dot_error(DTYPES[name])
        if error > 1e-2:
            run.unreliable_dot[name] = (
                f"Triton's interpreter gets {name} tl.dot wrong (error {error:.1e} on 32x64 @ 64x32)"
            )
    print(json.dumps(run.results["env"]), flush=True)

    def peaks():
        run.results["matrix_peak_tflops"] = {
            d: round(matrix_peak_tflops(device, DTYPES[d]), 1) for d in ("bf16", "fp16")
        }
        print("  measured matrix peak TFLOP/s:", run.results["matrix_peak_tflops"], flush=True)

    shape = (2, 8, 3, size, size)
    l14_setup = (L14_GRID_SMALL, ["fp32"], 0) if args.smoke else (L14_ONE_BLOCK, ["fp32", "fp16", "bf16"], 8 * big)
    eager = ["reference", "fused", "triton"]
    graphs = [] if args.smoke else ["graph:reference", "graph:triton"]
    compiled = ["reference", "compile:reference", "compile:fused", "compile:triton"]
    plan = [
        ("peak", "matrix peak", peaks, 0),
        ("kernels", "kernels vs references", lambda: kernel_correctness(run, arch, 2, 8), 0),
        ("checks", "encoder paths vs fp32 reference", lambda: correctness(run, arch, shape, args.quick_checks), 0),
        ("gradients", "gradients", lambda: gradients(run, arch, shape), 60),
        ("eager-bf16", "encoder bf16 B=32", lambda: time_encoder(run, arch, "bf16", big, 8, eager, it), 30),
        ("block-bf16", "STCA block bf16 B=32", lambda: time_block(run, arch, "bf16", big, 8, it), 30),
        ("head", "head", lambda: time_head(run, big, 8, 400, 224), 10),
        ("eager-fp16", "encoder fp16 B=32", lambda: time_encoder(run, arch, "fp16", big, 8, eager, it), 30),
        ("b1-bf16", "encoder bf16 B=1", lambda: time_encoder(run, arch, "bf16", 1, 8, eager + graphs, it), 20),
        ("b1-fp16", "encoder fp16 B=1", lambda: time_encoder(run, arch, "fp16", 1, 8, eager + graphs, it), 20),
        (
            "compiled-bf16",
            "encoder bf16 B=32 compiled",
            lambda: time_encoder(run, arch, "bf16", big, 8, compiled, it),
            100,
        ),
        ("compile-graphs", "torch.compile and CUDA graphs", lambda: compiled_and_graphs(run, arch, shape), 90),
        (
            "compiled-fp16",
            "encoder fp16 B=32 compiled",
            lambda: time_encoder(run, arch, "fp16", big, 8, compiled[:2], it),
            100,
        ),
        ("profile", "profile bf16 B=32", lambda: profile_encoder(run, arch, big, ["fused", "triton"]), 15),
        ("l14", "sparse-attention kernel at L/14 shapes", lambda: l14_kernels(run, *l14_setup), 45),
        (
            "fp32",
            "fp32 sparse attention and encoder",
            lambda: fp32_paths(run, arch, 8 * max(1, big // 4), max(1, big // 4), it),
            40,
        ),
        (
            "autotune-bf16",
            "encoder bf16 B=32, max-autotune (inductor's GEMM templates, epilogue fusion)",
            lambda: time_encoder(run, arch, "bf16", big, 8, ["reference", "compile:triton", "autotune:triton"], it),
            150,
        ),
    ]
    sections = {key: (name, fn, needs) for key, name, fn, needs in plan}
    for key in only:  # in the order given: the first ones get the time budget
        if not (args.smoke and key in ("peak", "profile", "autotune-bf16")):
            name, fn, needs = sections[key]
            run.section(name, fn, needs_s=needs)

    run.results["launch_tuning"] = launch_tuning_record()
    try:
        run.results["compiled_kernels"] = compiled_kernels_record()
    except Exception as e:  # Triton internals differ across versions: the record is optional
        run.results["compiled_kernels"] = [{"error": repr(e)}]
    failed = [c["check"] for c in run.results["correctness"] if not c["pass"]]
    run.results["failed_checks"] = failed
    run.save()
    print(
        f"\n{len(run.results['correctness'])} checks, {len(failed)} failed, {len(run.results['errors'])} errors; "
        f"{run.results['elapsed_s']} s; results in {run.out / 'gpu_check.json'}"
    )
    for row in run.results["timings"]:
        print(json.dumps(row))
    return 1 if failed or run.results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
