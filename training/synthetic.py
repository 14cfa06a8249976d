"""A tiny synthetic video dataset in the official list format, for smoke runs and tests.

``python -m stdd_fast.training.synthetic OUT`` writes ``OUT/videos/<class>/<n>.mp4`` (H.264 via
PyAV), ``OUT/train.csv`` (``relative/path,label``) and ``OUT/index2cls.json``. Each class has its
own background colour; every video adds a square moving along its own path, so clips of one class
differ but the classes stay separable by colour through any crop or flip. Not a benchmark: it only
shows that the pipeline runs end to end (and lets a tiny model overfit).
"""

from __future__ import annotations

import argparse
import colorsys
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

NAMES = ("archery", "bowling", "juggling", "skiing", "surfing", "rowing", "boxing", "diving")


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a synthetic dataset was written: the list file, the path prefix and the index->class JSON."""

    root: Path
    csv: Path
    prefix: Path
    classes: Path
    names: tuple[str, ...]
    rows: tuple[tuple[str, int], ...]


def class_names(num_classes: int) -> list[str]:
    """``num_classes`` distinct action-like names."""
    return [NAMES[k % len(NAMES)] + (f" {k // len(NAMES) + 1}" if k >= len(NAMES) else "") for k in range(num_classes)]


def class_colour(label: int, num_classes: int) -> tuple[int, int, int]:
    """The background colour of a class: hues evenly spaced on the colour wheel."""
    r, g, b = colorsys.hsv_to_rgb(label / num_classes, 0.85, 0.9)
    return round(255 * r), round(255 * g), round(255 * b)


def synthetic_frames(
    label: int, num_classes: int, video: int, num_frames: int, height: int, width: int
) -> torch.Tensor:
    """uint8 [N, H, W, 3]: the class colour with a grey square moving on a per-video path."""
    frames = torch.empty(num_frames, height, width, 3, dtype=torch.uint8)
    frames[:] = torch.tensor(class_colour(label, num_classes), dtype=torch.uint8)
    side = max(2, min(height, width) // 4)
    for t in range(num_frames):
        y = (video * 7 + t * (1 + video % 3)) % (height - side)
        x = (video * 11 + t * (2 + video % 2)) % (width - side)
        frames[t, y : y + side, x : x + side] = 128
    return frames


def write_video(path: str | Path, frames: torch.Tensor, fps: int = 30) -> Path:
    """Encode uint8 [N, H, W, 3] RGB frames as H.264 (near-lossless) with PyAV."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i].numpy(), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_synthetic_dataset(
    root: str | Path,
    num_classes: int = 4,
    per_class: int = 2,
    num_frames: int = 24,
    height: int = 40,
    width: int = 48,
    fps: int = 30,
    broken: int = 0,
) -> SyntheticDataset:
    """Write the dataset under ``root`` (see the module docstring); ``broken`` extra rows point at unreadable files."""
    root = Path(root)
    prefix = root / "videos"
    names = class_names(num_classes)
    rows = []
    for label in range(num_classes):
        for j in range(per_class):
            rel = f"{names[label].replace(' ', '_')}/{j}.mp4"
            video = label * per_class + j
            write_video(prefix / rel, synthetic_frames(label, num_classes, video, num_frames, height, width), fps)
            rows.append((rel, label))
    for j in range(broken):
        rel = f"broken/{j}.mp4"
        (prefix / "broken").mkdir(parents=True, exist_ok=True)
        (prefix / rel).write_bytes(b"not a video " * 16)
        rows.append((rel, j % num_classes))
    csv = root / "train.csv"
    csv.write_text("".join(f"{p},{label}\n" for p, label in rows), encoding="utf-8")
    classes = root / "index2cls.json"
    classes.write_text(json.dumps({str(k): n for k, n in enumerate(names)}, indent=1), encoding="utf-8")
    return SyntheticDataset(root, csv, prefix, classes, tuple(names), tuple(rows))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stdd_fast.training.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("root", help="output directory")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--per-class", type=int, default=2)
    p.add_argument("--frames", type=int, default=24)
    args = p.parse_args(argv)
    ds = write_synthetic_dataset(args.root, args.classes, args.per_class, args.frames)
    print(
        f"wrote {len(ds.rows)} videos; stdd-eval: --csv {ds.csv} --prefix {ds.prefix} --classes-file {ds.classes}; "
        f"stdd-train: train_csv={ds.csv} prefix={ds.prefix} classes={ds.classes}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
