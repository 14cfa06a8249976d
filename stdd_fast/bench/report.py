"""The benchmark's outputs: the terminal table, the JSON record and the throughput plot."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = (
    ("path", "path", "{}"),
    ("batch", "B", "{}"),
    ("clips_per_s", "clips/s", "{:.2f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p90_ms", "p90 ms", "{:.1f}"),
    ("speedup", "speed-up", "{:.2f}x"),
    ("max_rel_err", "max rel err", "{:.1e}"),
    ("cos_min", "min cos", "{:.5f}"),
    ("top1_agreement", "top-1 agree", "{:.0%}"),
    ("peak_mem_mib", "peak MiB", "{:.0f}"),
    ("gflop_per_clip", "GFLOP/clip", "{:.0f}"),
    ("tflops", "TFLOP/s", "{:.2f}"),
    ("limit_share", "of limit", "{:.0%}"),
    ("first_call_s", "setup s", "{:.1f}"),
)


def format_table(rows: list[dict]) -> str:
    """A fixed-width table; skipped paths list their reason below it."""
    header = [title for _, title, _ in COLUMNS]
    body, notes = [], []
    for row in rows:
        if "skipped" in row:
            notes.append(f"  {row['path']} (B={row['batch']}): skipped: {row['skipped']}")
            continue
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None else fmt.format(value))
        body.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) for cells in body]
    ran = [f"  {r['path']}: {r['ran']}" for r in rows if r.get("ran") not in (None, r["path"]) and "skipped" not in r]
    return "\n".join(lines + notes + (["what ran (setup s: export, compile or capture, once):", *ran] if ran else []))


def format_header(env: dict, config: dict) -> str:
    gpu = f", GPU {env['gpu']} (CUDA {env.get('cuda')})" if env.get("gpu") else ""
    return "\n".join(
        [
            f"stdd-fast bench | device {env['device']}{gpu} | CPU {env['cpu']} ({env['cpu_count']} cores, "
            f"torch threads {env['torch_threads']})",
            f"torch {env['torch']}, open_clip {env['open_clip']}, triton {env['triton']}, "
            f"onnxruntime {env['onnxruntime']}, python {env['python']}, commit {env['commit']}",
            f"model {config['arch']} STDD (STCA {config['stca']}), {config['frames']} frames x "
            f"{config['image_size']}^2, dtype {config['dtype']}, SEEDED RANDOM WEIGHTS (seed {config['seed']}): "
            "speed does not depend on the weights; errors compare each path with the fp32 reference path",
        ]
    )


def write_json(path: str | Path, record: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str))
    return path


def write_plot(path: str | Path, rows: list[dict], title: str) -> Path:
    """Throughput (clips/s) against batch size, one line per path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name in dict.fromkeys(r["path"] for r in rows):
        points = sorted((r["batch"], r["clips_per_s"]) for r in rows if r["path"] == name and "clips_per_s" in r)
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch (clips)")
    ax.set_ylabel("clips / s")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
