"""``stdd-bench`` (``python -m stdd_fast.bench``): throughput, latency and exactness of every inference path.

With no arguments it benchmarks ViT-B/16 STDD (8 frames at 224^2, seeded random weights, or
``--weights``) on the best device here with every path available on it, in a few minutes on a
2-core CPU. Every figure is measured in this run; nothing is asserted. ``--dtype fp8`` (opt-in, not
exact) runs every path with bf16 weights and the STCA blocks' linear layers as fp8 GEMMs; ``--paths
fused,fp8:fused`` puts bf16 (or the run's dtype) and fp8 rows in one run against one fp32 reference.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from stdd_fast.bench.deciding import decision_rows, format_decisions
from stdd_fast.bench.encoder import EncoderCase, measure_encoder
from stdd_fast.bench.environment import environment
from stdd_fast.bench.limit import gemm_probe
from stdd_fast.bench.paths import parse_path, unavailable_reason
from stdd_fast.bench.report import format_header, format_table, write_json, write_plot
from stdd_fast.bench.timing import time_fn
from stdd_fast.classifier import Classifier
from stdd_fast.cli import options
from stdd_fast.cli.runner import Parser, UsageError
from stdd_fast.cli.runner import run as run_command
from stdd_fast.config import STCAConfig, get_arch
from stdd_fast.devices import resolve_device, resolve_precision
from stdd_fast.errors import StddError
from stdd_fast.factory import create_model, load_model
from stdd_fast.flops import encoder_macs
from stdd_fast.head import score
from stdd_fast.ops import resolve_impl

# the CPU default run stays within 3 minutes on 2 cores; onnxruntime (the reference graph), compile:fused
# (a minute of compiling) and int8 are one --paths away
CPU_PATHS = ("reference", "fused", "onnxruntime:fused", "default", "clip")
GPU_PATHS = ("reference", "fused", "triton", "compile:reference", "compile:triton", "graph:triton")


def _positive_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected integers like 1 or 1,2,4") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{what} {text!r}: every value must be >= 1")
    return values


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="stdd-bench", description=__doc__.split("\n\n")[0])
    options.add_weights(p, required=False, what="weights to benchmark (speed does not depend on them)")
    options.add_device(p)
    p.add_argument("--frames", type=int, default=8, help="frames per clip (T)")
    p.add_argument("--batch", default=None, help="clips per forward, or a sweep like 1,8,32 (default 1 CPU, 32 GPU)")
    p.add_argument("--paths", default=None, help="comma-separated paths (default: all available here)")
    p.add_argument("--video", nargs="+", default=None, metavar="FILE", help="also run end to end on these videos")
    p.add_argument("--num-classes", type=int, default=400, help="K classes of the random prompt-level classifier")
    p.add_argument("--prompts", type=int, default=8, help="N prompts per class of the random classifier")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per path (default 1 CPU, 3 GPU)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per path (default 5 CPU, 20 GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    p.add_argument(
        "--outliers", type=int, default=0, metavar="N",
        help="plant N outlier channels as trained CLIP towers have (same function; judges int8 honestly)",
    )  # fmt: skip
    p.add_argument("--json", default=None, metavar="OUT", help="write every figure and the environment here")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="plot throughput vs batch per path")
    options.add_debug(p)
    return p


def _config(args: argparse.Namespace) -> dict:
    predictor = options.settings_of(args).predictor  # --device, --dtype, --arch, --trust-pickle
    device = resolve_device(predictor.device)
    gpu = device.type == "cuda"
    dtype, linear_format = resolve_precision(predictor.dtype, device)
    arch = get_arch(predictor.arch or "ViT-B-16")
    batches = _positive_ints(args.batch or ("32" if gpu else "1"), "--batch")
    if args.frames < 1 or args.num_classes < 1 or args.prompts < 1:
        raise UsageError("--frames, --num-classes and --prompts must be >= 1")
    warmup = 3 if args.warmup is None and gpu else 1 if args.warmup is None else args.warmup
    iters = 20 if args.iters is None and gpu else 5 if args.iters is None else args.iters
    if warmup < 0 or iters < 1:
        raise UsageError(f"--warmup {warmup} / --iters {iters}: need warmup >= 0 and iters >= 1")
    names = args.paths.split(",") if args.paths else list(GPU_PATHS if gpu else CPU_PATHS)
    paths = [parse_path(n.strip()) for n in names if n.strip()]
    if not paths:
        raise UsageError("--paths is empty")
    if linear_format is not None:  # --dtype fp8: every path in fp8 (the model timed is bf16)
        paths = [dataclasses.replace(p, dtype=predictor.dtype) for p in paths]
    if args.paths is None:  # defaults: only what runs here
        paths = [p for p in paths if unavailable_reason(p, device, dtype) is None]
    videos = [Path(v) for v in args.video or []]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        raise UsageError(f"--video: no such file(s): {', '.join(missing)}")
    # precision: what the Engine and the record are told (dtype is the model's: bfloat16 for fp8)
    precision = predictor.dtype if linear_format is not None else dtype
    return dict(device=device, dtype=dtype, precision=precision, arch=arch, batches=batches, warmup=warmup,
                iters=iters, paths=paths, videos=videos, predictor=predictor)  # fmt: skip


def _random_classifier(classes: int, prompts: int, dim: int, seed: int) -> Classifier:
    gen = torch.Generator().manual_seed(seed + 1)
    weights = F.normalize(torch.randn(classes, prompts, dim, generator=gen), dim=-1)
    return Classifier(weights, [f"class {k}" for k in range(classes)], source="random (benchmark)")


def _head_rows(cfg: dict, classifier: Classifier, batch: int, frames: int, logit_scale: torch.Tensor) -> list[dict]:
    device = cfg["device"]
    emb = F.normalize(torch.randn(batch, frames, classifier.embed_dim, device=device), dim=-1)
    w = classifier.weights.to(device)
    rows = [("reference", lambda: score(emb, w, logit_scale))]
    try:
        resolve_impl("triton", device)
        from stdd_fast import triton_ops

        rows.append(("triton", lambda: triton_ops.score(emb, w, logit_scale)))
    except StddError:
        pass
    out = []
    for name, fn in rows:
        t = time_fn(fn, device, warmup=cfg["warmup"], iters=max(cfg["iters"], 5))
        out.append({"path": name, "batch": batch, "frames": frames, "classes": classifier.num_classes,
                    "prompts": classifier.weights.shape[1], "p50_ms": t.median * 1e3})  # fmt: skip
    return out


def _decode_backends(device: torch.device) -> list[str]:
    """PyAV always; DALI when it imports and can run on ``device``."""
    from stdd_fast.video import dali

    return ["pyav"] + (["dali"] if dali.device_problem(device) is None else [])


def _end_to_end(cfg: dict, model, classifier: Classifier) -> dict:
    """Decode throughput per backend, and the Engine's per-stage breakdown per backend, on ``--video``."""
    from stdd_fast.bench.decode import decode_throughput, stage_breakdown
    from stdd_fast.engine import Engine

    videos, device = cfg["videos"], cfg["device"]
    out = {"decode": [], "stages": []}
    for backend in _decode_backends(device):
        out["decode"].append(decode_throughput(videos, backend, device=device))
        engine = Engine(copy.deepcopy(model), classifier=classifier, device=device, dtype=cfg["precision"],
                        impl="auto", decode_backend=backend)  # fmt: skip
        engine.classify(videos[:1], progress=False)  # warm-up (index tables, kernels, pipelines)
        out["stages"].append({"impl": engine.impl, **stage_breakdown(engine, videos)})
    return out


def _plan(cfg: dict, weights: str | None) -> str:
    """What the run does, in order, said before it starts (a B/16 run on a CPU takes minutes)."""
    names = ", ".join(p.name for p in cfg["paths"])
    plan = (
        f"the run: load the model ({weights or 'seeded random weights'}); then per batch size the fp32 reference "
        f"on the inputs, each path ({names}) set up and called {cfg['warmup']} + {min(cfg['iters'], 3)} times (a "
        f"line each), then {cfg['iters']} timed rounds of all paths"
    )
    cached = [p.name for p in cfg["paths"] if p.mode in ("default", "int8") or p.name == "onnxruntime:fused"]
    if cached and cfg["device"].type == "cpu":
        plan += (
            f". The first run on this machine also builds the encoder graph for ONNX Runtime ({', '.join(cached)}) "
            "and measures the CPU choice (default), each said when it starts"
        )
    return plan


def _say(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> dict:
    cfg = _config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = cfg["device"], cfg["dtype"]
    if device.type == "cuda":  # the fp32 reference must be exact fp32, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    stca = STCAConfig()
    env = environment(device)
    config = {"arch": cfg["arch"].name, "stca": "default", "frames": args.frames, "image_size": cfg["arch"].image_size,
              "dtype": str(cfg["precision"]).split(".")[-1], "seed": args.seed, "batches": cfg["batches"],
              "paths": [p.name for p in cfg["paths"]], "warmup": cfg["warmup"], "iters": cfg["iters"],
              "classes": args.num_classes, "prompts": args.prompts, "weights": args.weights}  # fmt: skip
    print(format_header(env, config), flush=True)
    print(_plan(cfg, args.weights), flush=True)

    if args.weights is not None:
        p = cfg["predictor"]
        model32 = load_model(args.weights, arch=p.arch, device=device, trust_pickle=p.trust_pickle)
        cfg["arch"] = model32.arch
    else:
        model32 = create_model(cfg["arch"], stca=stca, seed=args.seed, device=device)
    if args.outliers:
        from stdd_fast.bench.weights import add_outlier_channels_

        config["outlier_channels"] = add_outlier_channels_(model32, channels=args.outliers, seed=args.seed)
    model = model32 if dtype == torch.float32 else copy.deepcopy(model32).to(dtype)
    classifier = _random_classifier(args.num_classes, args.prompts, cfg["arch"].embed_dim, args.seed)
    rows: list[dict] = []
    limits = []
    for batch in cfg["batches"]:
        case = EncoderCase(batch, args.frames, dtype, device, cfg["warmup"], cfg["iters"], args.seed)
        probe = gemm_probe(cfg["arch"], batch * args.frames * cfg["arch"].tokens_per_frame, device, dtype, args.seed)
        batch_rows, limit = measure_encoder(model32, model, classifier, cfg["paths"], case, probe, say=_say)
        rows += batch_rows
        gflop = 2 * encoder_macs(cfg["arch"], model32.stca, "fused") * args.frames / 1e9
        limits.append({"batch": batch, "gflop_per_clip": gflop, "limit_ms": limit.limit_ms(gflop), **limit.to_dict()})
        _say("  " + limit.describe(gflop))
    head = _head_rows(cfg, classifier, max(cfg["batches"]), args.frames, model32.logit_scale.detach())
    largest = [r for r in rows if r["batch"] == max(cfg["batches"]) and "p50_ms" in r]
    fastest = min(largest, key=lambda r: r["p50_ms"], default=None)
    logit_scale = model32.logit_scale.detach().cpu()
    decisions = decision_rows(classifier, logit_scale, max(cfg["batches"]), args.frames, fastest, cfg["warmup"],
                              cfg["iters"], args.seed)  # fmt: skip
    record = {"env": env, "config": config, "gemm_limit": limits, "encoder": rows, "head": head,
              "decisions": decisions}  # fmt: skip
    if cfg["videos"]:
        record["end_to_end"] = _end_to_end(cfg, model32, classifier)
    return record


def print_report(record: dict) -> None:
    print()
    print(format_table(record["encoder"]))
    for limit in record.get("gemm_limit", []):
        rates = ", ".join(f"{name} {rate:.0f}" for name, rate in limit["rates_gflop_s"].items())
        print(f"\nof limit (B={limit['batch']}): the least time a clip can take here, {limit['gflop_per_clip']:.0f} "
              f"GFLOP at the best GEMM rate at the encoder's shapes ({rates} GFLOP/s): {limit['limit_ms']:.0f} ms, "
              "over each path's time a clip")  # fmt: skip
    head = record["head"]
    print("\nscoring head " + ", ".join(f"{h['path']} {h['p50_ms']:.3f} ms" for h in head)
          + f" (B={head[0]['batch']}, K={head[0]['classes']}, N={head[0]['prompts']})")  # fmt: skip
    if record.get("decisions"):
        print(format_decisions(record["decisions"]))
    e2e = record.get("end_to_end")
    if e2e:
        print("\nvideo decoding (the sampled views of every --video file):")
        for d in e2e["decode"]:
            skipped = f", {len(d['skipped'])} skipped" if d.get("skipped") else ""
            rate = f"{d['frames_per_s']:.0f} frames/s, {d['clips_per_s']:.1f} clips/s"
            print(f"  {d['backend']:>5} on {d['device']}: {rate} ({d['videos']} videos{skipped})")
        for st in e2e["stages"]:
            stages = ", ".join(f"{k} {v:.2f} s" for k, v in st["stages"].items())
            for source, error in st["failed"].items():
                print(f"  error: {source}: {error}")
            print(f"  end to end, decode_backend={st['decode_backend']} (ran: {st['backends']}), impl {st['impl']}: "
                  f"{st['videos_per_s']:.2f} videos/s; {stages}; {len(st['failed'])} failed")  # fmt: skip


def _bench(args: argparse.Namespace) -> int:
    record = run(args)
    print_report(record)
    if args.json:
        print(f"\nwrote {write_json(args.json, record)}")
    if args.plot:
        title = f"{record['config']['arch']} STDD, {record['config']['dtype']}, {record['env']['device']}"
        print(f"wrote {write_plot(args.plot, record['encoder'], title)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``stdd-bench`` / ``python -m stdd_fast.bench`` (exit codes: :mod:`stdd_fast.cli.runner`)."""
    return run_command("stdd-bench", parser, _bench, argv)
