"""Encoder measurements: every path on the same inputs, timed in interleaved rounds (drift on a shared
machine hits every path alike) and checked against the fp32 reference."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stdd_fast.bench.limit import GemmLimit, GemmProbe
from stdd_fast.bench.memory import PeakMemory
from stdd_fast.bench.paths import BenchPath, build_callable, setup_note, unavailable_reason
from stdd_fast.bench.telemetry import NvmlSampler
from stdd_fast.bench.timing import synchronize, time_interleaved
from stdd_fast.classifier import Classifier
from stdd_fast.flops import encoder_macs
from stdd_fast.head import score
from stdd_fast.model import STDDModel
from stdd_fast.notices import about
from stdd_fast.numerics import max_rel_err


@dataclass(frozen=True)
class EncoderCase:
    batch: int
    frames: int
    dtype: torch.dtype
    device: torch.device
    warmup: int
    iters: int
    seed: int = 0


def random_frames(case: EncoderCase, size: int) -> torch.Tensor:
    """Seeded CLIP-normalised-like frames [B, T, 3, S, S] in fp32 on the case's device."""
    gen = torch.Generator().manual_seed(case.seed)
    return torch.randn(case.batch, case.frames, 3, size, size, generator=gen).to(case.device)


def measure_encoder(
    model32: STDDModel,
    model: STDDModel,
    classifier: Classifier,
    paths: list[BenchPath],
    case: EncoderCase,
    probe: GemmProbe,
    say: Callable[[str], None] = lambda line: None,
) -> tuple[list[dict], GemmLimit]:
    """One row per path: throughput, latency, error vs the fp32 reference, memory, FLOPs, share of the limit;
    and the GEMM-bound limit (:mod:`stdd_fast.bench.limit`) from ``probe``'s rounds timed among the paths'.

    ``model32`` is the fp32 reference model on the case's device; ``model`` the one timed (the
    case's dtype; the same object as ``model32`` for fp32). A path with its own dtype (``fp8:``) says
    so in its row, and has no share of the limit (its GEMMs run another dtype). The limit of a clip is
    the fused path's FLOPs (the least work that computes STDD; plain CLIP's own for ``clip``) at the
    best GEMM rate. ``say``: where progress goes, one line per path as it is ready (and before a long
    set-up), then one before the timed rounds.
    """
    size = model.arch.image_size
    frames32 = random_frames(case, size)
    frames = frames32.to(case.dtype)
    weights = classifier.weights.to(case.device)
    with torch.no_grad():
        reference = model32.set_impl("reference").encode_video(frames32)
        ref_top1 = score(reference, weights, model32.logit_scale).argmax(-1)

    rows: dict[str, dict] = {}
    fns, measured, call_s = {}, {}, {}
    burst = min(case.iters, 3)
    for i, path in enumerate(paths, 1):
        tag = f"  [{i}/{len(paths)}] {path.name} (B={case.batch})"
        rows[path.name] = {"path": path.name, "batch": case.batch, "frames": case.frames,
                           "dtype": path.dtype or str(case.dtype).split(".")[-1]}  # fmt: skip
        reason = unavailable_reason(path, case.device, case.dtype)
        if reason:
            rows[path.name]["skipped"] = reason
            say(f"{tag}: skipped: {reason}")
            continue
        note = setup_note(path, model, case.frames)
        if note:
            say(f"{tag}: setting up: {note}")
        try:
            start = time.perf_counter()
            fn = build_callable(path, model, frames, classifier)
            rows[path.name]["first_call_s"] = time.perf_counter() - start  # export / compile / capture, once
            rows[path.name]["ran"] = getattr(fn.predictor, "backend_choice", path.name)
            with torch.no_grad():
                for _ in range(case.warmup):
                    fn(frames)
                # a short burst per path for its memory peak and telemetry (timing is interleaved below)
                start = time.perf_counter()
                with PeakMemory(case.device) as mem, NvmlSampler() as nvml:
                    out = fn(frames).float()
                    for _ in range(burst - 1):
                        fn(frames)
                    synchronize(case.device)
                call_s[path.name] = (time.perf_counter() - start) / burst
        except Exception as e:  # a path that fails is reported in its row, the others still run
            rows[path.name]["skipped"] = f"failed: {type(e).__name__}: {e}"
            say(f"{tag}: failed: {type(e).__name__}: {e}")
            continue
        fns[path.name] = lambda fn=fn: fn(frames)
        measured[path.name] = (path, out, mem.peak_mib, nvml.telemetry.summary())
        say(f"{tag}: ready, about {call_s[path.name]:.2f} s a call (set-up {rows[path.name]['first_call_s']:.1f} s)")
    if fns:
        expected = about(sum(call_s.values()) * case.iters)
        say(f"  timing {len(fns)} path(s) in {case.iters} interleaved round(s): {expected}")
    gemms = {f"gemm:{name}": run for name, run in probe.rounds.items()}
    with torch.no_grad():
        timings = time_interleaved({**fns, **gemms}, case.device, case.iters)
    limit = probe.limit({name.split(":", 1)[1]: timings[name].median for name in gemms})

    reference_s = timings["reference"].median if "reference" in timings else None
    for name, (path, out, peak_mib, telemetry) in measured.items():
        seconds = timings[name].median
        stca = None if path.mode == "clip" else model.stca
        macs = encoder_macs(model.arch, stca, path.flops_impl) * case.frames
        tflops = 2 * macs * case.batch / seconds / 1e12
        least_ms = limit.limit_ms(2 * encoder_macs(model.arch, stca, "fused") * case.frames / 1e9)
        top1 = score(F.normalize(out, dim=-1), weights, model32.logit_scale).argmax(-1)
        rows[name].update(
            clips_per_s=case.batch / seconds,
            p50_ms=seconds * 1e3,
            p90_ms=timings[name].percentile(90) * 1e3,
            speedup=(reference_s / seconds) if reference_s else None,
            max_rel_err=max_rel_err(out, reference),
            cos_min=F.cosine_similarity(out.flatten(0, 1), reference.flatten(0, 1), dim=-1).min().item(),
            top1_agreement=(top1 == ref_top1).float().mean().item(),
            peak_mem_mib=peak_mib,
            gflop_per_clip=2 * macs / 1e9,
            tflops=tflops,
            limit_ms=least_ms,
            limit_share=least_ms / (seconds * 1e3 / case.batch) if path.dtype is None else None,
            telemetry=telemetry,
        )
    if measured:
        say(f"  timed (B={case.batch}, p50): " + ", ".join(f"{n} {rows[n]['p50_ms']:.0f} ms" for n in measured))
    return list(rows.values()), limit
