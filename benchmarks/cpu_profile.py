"""Where a CPU clip's time goes: ONNX Runtime's profile of the fused encoder graph and PyTorch's of the fused path.

ViT-B/16 STDD (8 frames at 224^2, seeded random weights), one clip a call. Per op type (and, for ONNX
Runtime, the weight GEMMs by shape, told apart from attention's products): milliseconds a call and
the share of the call, beside the GEMM rate the machine reaches at the encoder's shapes measured in the
same run (so the GEMM-bound limit and what is not GEMM can be read off). Writes a JSON record.

    python benchmarks/cpu_profile.py [--arch ViT-B-16] [--frames 8] [--calls 4] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import torch

from stdd_fast import create_model
from stdd_fast.bench.environment import environment
from stdd_fast.bench.limit import gemm_probe
from stdd_fast.bench.timing import time_interleaved
from stdd_fast.flops import encoder_macs
from stdd_fast.predict.encoder_cache import cached_encoder, runtime_graph
from stdd_fast.predict.onnx_session import open_session, session_options


def onnxruntime_profile(graph: Path, clip: torch.Tensor, calls: int) -> dict:
    """Milliseconds a call per op type (weight GEMMs by weight shape) from ONNX Runtime's own profiler."""
    import onnx

    options = session_options(optimize=False)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = open_session(graph, "cpu", options)
    x = clip.numpy()
    session.run(None, {"frames": x})  # the first call (allocations) is left out below
    for _ in range(calls):
        session.run(None, {"frames": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    weights = {i.name: tuple(i.dims) for i in onnx.load(str(graph), load_external_data=False).graph.initializer}
    shapes = {n.name: next((weights[i] for i in n.input if len(weights.get(i, ())) == 2), None)
              for n in onnx.load(str(graph), load_external_data=False).graph.node}  # fmt: skip
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[-calls:]
    by_op: collections.Counter = collections.Counter()
    by_gemm: collections.Counter = collections.Counter()
    first = runs[0]["ts"]
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < first:
            continue
        op, node = e["args"]["op_name"], e["name"].removesuffix("_kernel_time")
        weight = shapes.get(node)
        if op in ("MatMul", "Gemm", "FusedMatMul") and weight and max(weight) >= 256:
            by_gemm[f"{op} {weight[0]}x{weight[1]}"] += e["dur"]
            op = "GEMM with weights"
        by_op[op] += e["dur"]
    call_ms = sorted(e["dur"] for e in runs)[len(runs) // 2] / 1e3
    return {
        "call_ms": call_ms,
        "by_op_ms": {op: d / calls / 1e3 for op, d in by_op.most_common()},
        "weight_gemms_ms": {k: d / calls / 1e3 for k, d in by_gemm.most_common()},
    }


def torch_profile(model, clip: torch.Tensor, calls: int) -> dict:
    """Milliseconds a call per aten op (self time) of the fused path, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model.encode_video(clip)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                model.encode_video(clip)
        call_ms = (time.perf_counter() - start) / calls * 1e3
    ops = sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)
    return {"call_ms": call_ms, "by_op_ms": {a.key: a.self_cpu_time_total / calls / 1e3 for a in ops[:25]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="ViT-B-16")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    model = create_model(args.arch, seed=0).eval().set_impl("fused")
    clip = torch.randn(1, args.frames, 3, model.arch.image_size, model.arch.image_size)
    graph = runtime_graph(cached_encoder(model, args.frames)).path
    probe = gemm_probe(model.arch, args.frames * model.arch.tokens_per_frame, torch.device("cpu"), torch.float32)
    rates = probe.limit({k: t.median for k, t in time_interleaved(probe.rounds, torch.device("cpu"), 10).items()})
    gflop = 2 * encoder_macs(model.arch, model.stca, "fused") * args.frames / 1e9
    record = {
        "env": environment(torch.device("cpu")),
        "arch": args.arch,
        "frames": args.frames,
        "gflop_per_clip": gflop,
        "gemm_limit": {**rates.to_dict(), "limit_ms": rates.limit_ms(gflop)},
        "onnxruntime": onnxruntime_profile(graph, clip, args.calls),
        "torch": torch_profile(model, clip, args.calls),
    }
    print(rates.describe(gflop))
    for runtime in ("onnxruntime", "torch"):
        prof = record[runtime]
        share = rates.limit_ms(gflop) / prof["call_ms"]
        print(f"\n{runtime}: {prof['call_ms']:.0f} ms a clip ({share:.0%} of the limit)")
        for op, ms in list(prof["by_op_ms"].items())[:16]:
            print(f"  {op[:40]:40s} {ms:8.1f} ms  {ms / prof['call_ms']:6.1%}")
        for gemm, ms in prof.get("weight_gemms_ms", {}).items():
            print(f"    {gemm:38s} {ms:8.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
