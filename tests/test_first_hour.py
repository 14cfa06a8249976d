"""The first hour of a new user (issue 30): one test per class of problem, the command line run as a subprocess.

Install bounds and a tritonserver known not to work; one-time work said before it starts; a used
``--output`` refused, resumed or overwritten; class lists that look wrong; noise nobody can act on
and results torn by the progress bar; install hints that work from a clone; an exported ``.onnx``
as ``--weights``; missing inputs found before the model loads; ``stdd prompts --dry-run`` and an
answer cache keyed by endpoint; weights by name from a Hugging Face cache the test writes (never the
network). Processes that do not depend on each other start together (each pays the torch import).
"""

import csv
import hashlib
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from helpers import randomize_
from safetensors.torch import save_file
from video_fixtures import write_clip

from stdd_fast import create_model, notices, save_checkpoint
from stdd_fast.cli import main
from stdd_fast.errors import BackendUnavailableError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = "run,jump,swim"
FAST = ("--frames", "4", "--views", "1")  # a short clip, one view: the tests are about the command, not the model
OPENAI_REPO = "models--timm--vit_base_patch16_clip_224.openai"  # open_clip's hf_hub entry for ViT-B-16/openai
REVISION = "0123456789abcdef0123456789abcdef01234567"


def launch(*args, env: dict | None = None, python: bool = False) -> subprocess.Popen:
    """``stdd ARGS`` (or ``python ARGS``) as a subprocess, offline; ``env`` adds to (None values remove from)
    this process's environment."""
    merged = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    merged = {k: v for k, v in merged.items() if v is not None}
    cmd = [sys.executable, *([] if python else ["-m", "stdd_fast.cli"]), *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=merged)


def finish(proc: subprocess.Popen, rc: int) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == rc, (proc.args, proc.returncode, out[-2000:], err[-3000:])
    return subprocess.CompletedProcess(proc.args, rc, out, err)


def one_error_line(err: str, *fragments: str) -> str:
    """The single ``stdd: error:`` line of ``err`` (warnings aside), holding every fragment."""
    errors = [line for line in err.strip().splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    assert all(f in errors[0] for f in fragments), (fragments, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-hour")
    model = randomize_(create_model("test-tiny"), seed=30)
    (root / "index2cls.json").write_text(json.dumps({str(i): c for i, c in enumerate(CLASSES.split(","))}))
    return {
        "root": root,
        "model": model,
        "ckpt": save_checkpoint(model, root / "tiny.safetensors"),
        "clips": [write_clip(root / f"{name}.mp4", 24) for name in ("a", "b", "c")],
        "json": root / "index2cls.json",
    }


# -- 1. an install that works with any current pip --------------------------------------------------------------


def test_the_serve_extra_admits_no_known_bad_set():
    """pip 26 resolved numpy 2.4.6 + nvidia-pytriton 0.5.7 (tritonserver 2.45): every request failed."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    serve = {r.name: r.specifier for r in map(Requirement, extras["serve"])}
    assert not serve["numpy"].contains("2.4.6") and serve["numpy"].contains("1.26.4")
    assert not serve["nvidia-pytriton"].contains("0.5.7") and serve["nvidia-pytriton"].contains("0.7.0")
    ray = {r.name: r.specifier for r in map(Requirement, extras["ray"])}
    assert not ray["pyarrow"].contains("26.0.0")  # pyarrow 26 needs numpy 2, which serve rules out


def test_a_tritonserver_known_to_fail_beside_numpy_2_is_refused_in_one_line():
    pytest.importorskip("pytriton")
    from stdd_fast.cli.runner import EXIT_BACKEND, exit_code
    from stdd_fast.serve.server import NUMPY2_FROM, check_numpy_support, find_tritonserver

    binary = find_tritonserver()
    version = binary.version()  # read from the binary itself, before anything starts
    print(f"[measured] bundled tritonserver {version}")
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version)
    assert check_numpy_support(binary, "1.26.4") == version
    assert tuple(int(p) for p in version.split(".")[:2]) < NUMPY2_FROM  # pytriton 0.7 bundles 2.51
    with pytest.raises(BackendUnavailableError) as refused:
        check_numpy_support(binary, "2.4.6")
    message = str(refused.value)
    assert exit_code(refused.value) == EXIT_BACKEND and "\n" not in message
    assert f"tritonserver {version}" in message and "numpy 2.4.6" in message and "numpy<2" in message


# -- 2. one-time work said before it starts ---------------------------------------------------------------------


def test_notices_are_one_line_each_and_can_be_turned_off(capsys, monkeypatch):
    monkeypatch.delenv(notices.QUIET_ENV, raising=False)
    notices.notice("building\x1b[2J something")
    with notices.speaking_as("stdd"):
        notices.notice("measuring")
        with notices.quiet():
            notices.notice("not said")
    monkeypatch.setenv(notices.QUIET_ENV, "1")
    notices.notice("not said either")
    assert capsys.readouterr().err == "stdd_fast: building\\x1b[2J something\nstdd: measuring\n"
    assert [notices.about(s) for s in (3, 61, 200)] == ["a few seconds", "about 60 s", "about 3 min"]


ENGINE_TWICE = """
import os, sys, stdd_fast
ckpt, quiet_cache, cache = sys.argv[1:]
os.environ["STDD_CACHE_DIR"] = quiet_cache
stdd_fast.Engine(ckpt, classes=["a", "b"], quiet=True)
print("-- quiet engine built", file=sys.stderr, flush=True)
os.environ["STDD_CACHE_DIR"] = cache
engine = stdd_fast.Engine(ckpt, classes=["a", "b"])
print("-- built:", engine.backend_choice.seconds > 0, engine.predictor.setup_note, file=sys.stderr)
"""


def test_the_first_engine_and_classify_say_what_they_build_before_building_it(files, tmp_path):
    first = tmp_path / "first"
    fresh = {"STDD_BACKEND": None, "STDD_CACHE_DIR": str(first), "STDD_QUIET": None}  # the CPU default, measured
    classify = ["classify", files["clips"][0], "--weights", files["ckpt"], "--classes", CLASSES, *FAST]
    cli = launch(*classify, env=fresh)
    python = launch("-c", ENGINE_TWICE, files["ckpt"], tmp_path / "quiet", tmp_path / "py", python=True,
                    env={"STDD_BACKEND": None, "STDD_QUIET": None})  # fmt: skip
    err = finish(cli, 0).stderr.splitlines()
    build = next(i for i, line in enumerate(err) if line.startswith("stdd: building the test-tiny encoder graph"))
    measure = next(i for i, line in enumerate(err) if line.startswith("stdd: measuring which exact CPU path"))
    backend = next(i for i, line in enumerate(err) if line.startswith("stdd: backend:"))
    assert build < measure < backend, err  # said before the work; its cost after it, on the backend line
    assert "once per weights, a few seconds" in err[build] and "measuring the choice took" in err[backend]

    said = finish(python, 0).stderr.split("-- quiet engine built\n")
    assert "stdd_fast:" not in said[0]  # Engine(quiet=True) says nothing
    assert said[1].startswith("stdd_fast: building the test-tiny encoder graph") and "-- built: True" in said[1]

    again = finish(launch(*classify, env=fresh), 0).stderr  # cached: nothing to announce, the costs still said
    assert "stdd: building" not in again and "stdd: measuring" not in again and "from the cache" in again


# -- 3. a used --output is never overwritten unasked ----------------------------------------------------------


def _csv_videos(path: Path) -> list[str]:
    return [row["video"] for row in csv.DictReader(path.open())]


def test_a_used_output_is_refused_and_resumed_or_overwritten_on_request(files, tmp_path, capsys):
    a, b, c = map(str, files["clips"])
    out = tmp_path / "results.csv"
    common = ["--weights", str(files["ckpt"]), "--classes", CLASSES, *FAST, "--no-progress", "--output", str(out)]
    assert main(["classify", a, b, *common]) == 0
    kept = out.read_bytes()
    capsys.readouterr()

    refused = finish(launch("classify", a, b, *common), 2)  # as a user would run it twice
    one_error_line(refused.stderr, f"--output {out} already holds the results of 2 video(s)", "--resume", "--overwrite")
    assert out.read_bytes() == kept

    assert main(["classify", c, *common[:2], "--classes", "x,y", *common[4:], "--resume"]) == 2
    assert "other classes" in capsys.readouterr().err  # its columns would lie
    with out.open("a") as f:  # the line a kill cut short
        f.write(f"{c},run;jump")
    assert main(["classify", a, b, c, *common, "--resume"]) == 0
    printed, said = capsys.readouterr()
    assert "2 of 3 videos are done" in said and c in printed and a not in printed and b not in printed
    assert _csv_videos(out) == [a, b, c] and out.read_bytes().startswith(kept)

    assert main(["classify", a, "--weights", "/absent.safetensors", "--output", str(out), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().err  # all done: the model is not even loaded
    assert main(["classify", c, *common, "--overwrite"]) == 0 and _csv_videos(out) == [c]
    assert main(["classify", a, *common, "--resume", "--overwrite"]) == 2
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes\n")
    assert main(["classify", a, *common[:-1], str(notes), "--resume"]) == 2  # not a results file: not appended to
    assert notes.read_text() == "my notes\n"


# -- 4. a class list that looks wrong is an error naming the right flag ---------------------------------------


def test_a_class_list_that_looks_wrong_names_the_right_flag(files, tmp_path, capsys):
    commas = tmp_path / "classes.txt"
    commas.write_text("# mine\nrun,jump,swim\n")
    base = ["classify", files["clips"][0], "--weights", files["ckpt"], *FAST]
    path_as_names = launch(*base, "--classes", files["json"])  # both fail before torch is imported
    joined_lines = launch(*base, "--classes-file", commas)
    one_error_line(finish(path_as_names, 2).stderr, f"--classes '{files['json']}' names a file", "--classes-file")
    one_error_line(finish(joined_lines, 2).stderr, "'run,jump,swim' holds commas", "one name per line", "--classes")
    assert main([*map(str, base), "--classes", "run", "--no-progress"]) == 0  # one class: allowed, and said
    printed, said = capsys.readouterr()
    assert "stdd: warning: one class ('run'): its probability is 100 %" in said and "run" in printed


def test_the_synthetic_data_hint_names_the_flags_that_take_it(tmp_path, capsys):
    from stdd_fast.training.synthetic import main as synthetic

    assert synthetic([str(tmp_path / "data"), "--classes", "2", "--per-class", "1", "--frames", "4"]) == 0
    hint = capsys.readouterr().out
    assert f"--classes-file {tmp_path / 'data' / 'index2cls.json'}" in hint and " --classes " not in hint


# -- 5. noise and torn lines ----------------------------------------------------------------------------------


def test_stdd_eval_prints_no_library_info_lines(files, tmp_path):
    from stdd_fast.training.synthetic import write_synthetic_dataset

    ds = write_synthetic_dataset(tmp_path / "data", 2, 1, 8)
    env = {"STDD_BACKEND": None, "STDD_CACHE_DIR": str(tmp_path / "cache")}  # the default: an encoder-graph export
    done = finish(
        launch("-m", "stdd_fast.training.eval", "--weights", files["ckpt"], "--csv", ds.csv, "--prefix", ds.prefix,
               "--classes-file", ds.classes, *FAST, "--device", "cpu", "--output", tmp_path / "eval", "--no-plot",
               python=True, env=env),
        0,
    )  # fmt: skip
    lines = done.stderr.splitlines()
    print(f"[measured] stdd-eval stderr: {len(lines)} lines")
    assert "stdd-eval: building the test-tiny encoder graph" in done.stderr  # the export did run
    assert not [line for line in lines if "onnxscript" in line or "onnx_ir" in line]
    assert all("stdd_fast" in line for line in lines if line.startswith("INFO"))


def _read_terminal(command: list[str], env: dict) -> str:
    """What ``command`` writes to a terminal (stdout and stderr on one pseudo-terminal), as text."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(command, stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL, env=env)
    os.close(terminal)
    chunks = []
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        try:
            data = os.read(controller, 65536) if ready else b""
        except OSError:  # EIO: every writer is gone
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(controller)
    assert proc.returncode == 0, b"".join(chunks)[-2000:]
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def test_results_print_above_the_progress_bar_on_a_terminal(files):
    clips = [str(c) for c in files["clips"]]
    command = [sys.executable, "-m", "stdd_fast.cli", "classify", *clips, "--weights", str(files["ckpt"]),
               "--classes", CLASSES, *FAST]  # fmt: skip
    shown = _read_terminal(command, {**os.environ, "HF_HUB_OFFLINE": "1"})
    # each line as the terminal leaves it: what follows its last carriage return
    visible = [line.rsplit("\r", 1)[-1] for line in shown.split("\n")]
    assert "classifying" in shown and "3/3" in shown  # there was a bar, and it counted every result
    for clip in clips:
        assert clip in visible, [line for line in visible if clip in line]  # never behind the bar's text


# -- 6. hints that work from a clone ---------------------------------------------------------------------------


def test_install_hints_are_commands_that_work_from_this_checkout(capsys):
    from stdd_fast import deps

    assert "openai" not in deps.OPTIONAL  # nothing imports it
    for name, dep in deps.OPTIONAL.items():
        assert "-m pip install -e '" in dep.install and f"[{dep.extra}]'" in dep.install, (name, dep.install)
        assert "stdd-fast[" not in dep.install
    assert main(["info", "--json"]) == 0
    backends = json.loads(capsys.readouterr().out)["backends"]
    assert "openai" not in backends
    for name, st in backends.items():
        assert st["installed"] or "-m pip install -e '" in st["note"], (name, st)
    readme = (ROOT / "README.md").read_text()
    assert "pip install 'stdd-fast[" not in readme and "pip install openai" not in readme
    assert "source .venv/bin/activate" in readme  # the later sections' bare `stdd` is explained


# -- 7. an exported .onnx as --weights -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(files):
    from stdd_fast import build_classifier
    from stdd_fast.export import export_onnx

    classifier = build_classifier(files["model"], CLASSES.split(","))
    return export_onnx(files["model"], classifier, files["root"] / "tiny.onnx", num_frames=4, verify=False)


def test_an_exported_onnx_scores_the_classes_baked_into_it(files, exported, capsys):
    clip = files["clips"][0]
    base = ["classify", str(clip), "--weights", str(exported), *FAST, "--top-k", "3", "--no-progress"]
    no_classes = launch(*base)
    stream = launch("stream", clip, "--weights", exported, "--frames", "4", "--window", "4", "--stride", "8")
    table = finish(no_classes, 0).stdout
    assert sorted(re.findall(r"^\s+\d\s+(\w+)", table, re.M)) == sorted(CLASSES.split(","))
    assert re.search(r"\] (run|jump|swim) ", finish(stream, 0).stdout)
    assert main([*base, "--classes", CLASSES]) == 0 and capsys.readouterr().out == table  # the file's own names
    assert main([*base, "--classes", "run,swim,jump"]) == 2
    one_error_line(capsys.readouterr().err, "scores its own 3 classes", "differ at class 1", "'swim'", "'jump'")
    assert main([*base, "--askg", str(files["json"])]) == 2
    one_error_line(capsys.readouterr().err, "drop xprompt= / askg=")


# -- 8. missing inputs are found before the model loads --------------------------------------------------------


def test_missing_inputs_are_named_before_the_model_loads(files, tmp_path, capsys):
    absent, no_ckpt = tmp_path / "absent.mp4", tmp_path / "absent.safetensors"
    # a missing checkpoint would be exit 3: the inputs were checked first (before torch is even imported)
    classify = launch("classify", absent, "--weights", no_ckpt, "--classes", CLASSES)
    stream = launch("stream", absent, "--weights", no_ckpt, "--classes", CLASSES)
    one_error_line(finish(classify, 2).stderr, f"no such file: {absent}; nothing to classify")
    one_error_line(finish(stream, 2).stderr, f"no such file: {absent}; nothing to stream")
    some = ["classify", str(files["clips"][0]), str(absent), "--weights", str(files["ckpt"]), "--classes", CLASSES]
    assert main([*some, *FAST, "--no-progress"]) == 1  # the others run; the missing one's result carries its error
    err = capsys.readouterr().err.splitlines()
    warned = next(i for i, line in enumerate(err) if "1 of 2 videos do not exist" in line)
    assert warned < next(i for i, line in enumerate(err) if line.startswith("stdd: backend:"))


def test_a_stream_of_a_missing_file_ends_at_once_without_retries(files, tmp_path):
    from stdd_fast import Engine

    engine = Engine(files["ckpt"], classes=CLASSES.split(","), num_frames=4, num_views=1)
    start = time.perf_counter()
    results = list(engine.stream(tmp_path / "absent.mp4", window=4, max_retries=3, retry_delay=5.0))
    elapsed = time.perf_counter() - start
    print(f"[measured] a missing file's stream ended in {elapsed:.2f} s")
    assert len(results) == 1 and not results[0].ok and elapsed < 5.0  # no reopening, no retry delay
    assert "no such file (a local path that does not exist is not reopened)" in str(results[0].error)


# -- 9. stdd prompts without a server; the answer cache keyed by endpoint -------------------------------------


class _Recorder:
    """A chat-completions endpoint on loopback that answers every class and keeps each request's JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                recorder.bodies.append(body)
                label = re.search(r"\[(.*)\]", body["messages"][-1]["content"])[1]
                record = {"label": label, "obj_en_li": ["pallet"], "obj_rel_triples": ["<pallet, on, floor>"],
                          "act_obj_triples": [f"<{label}, moves, pallet>"], "sub_act_en_li": ["lifting"],
                          "act_rel_triples": [f"<{label}, starts with, lifting>"]}  # fmt: skip
                answer = {"choices": [{"message": {"role": "assistant", "content": yaml.safe_dump(record)}}]}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def endpoints():
    made: list[_Recorder] = []
    yield lambda: made.append(_Recorder()) or made[-1]
    for r in made:
        r.close()


def test_prompts_dry_run_prints_exactly_what_would_be_sent_and_sends_nothing(endpoints, tmp_path):
    from stdd_fast.askg import generate_askg
    from stdd_fast.askg.client import ChatClient

    server, names = endpoints(), ["forklift reversing", "stacking pallets"]
    common = ["--endpoint", server.url, "--model", "m", "--cache-dir", tmp_path / "cache"]
    dry = finish(launch("prompts", *names, *common, "--dry-run", "--json"), 0)
    planned = [json.loads(line) for line in dry.stdout.splitlines()]
    assert server.bodies == [] and "nothing was sent; 2 of 2 classes would be asked" in dry.stderr
    assert [p["url"] for p in planned] == [f"{server.url}/chat/completions"] * 2
    with ChatClient(server.url, "m") as client:  # the real run: what reaches the server
        assert generate_askg(names, client, tmp_path / "out.yml", cache_dir=tmp_path / "cache", concurrency=1).ok
    assert [p["body"] for p in planned] == server.bodies  # byte for byte the same JSON bodies
    again = finish(launch("prompts", *names, *common, "--dry-run", "--json", "-o", tmp_path / "out.yml"), 0)
    assert [json.loads(line)["how"] for line in again.stdout.splitlines()] == ["kept", "kept"]


def test_the_answer_cache_is_keyed_by_endpoint(endpoints, tmp_path):
    from stdd_fast.askg import generate_askg
    from stdd_fast.askg.client import ChatClient

    first, second = endpoints(), endpoints()
    for server in (first, second, first):  # the same model name at another server is asked; the first is cached
        with ChatClient(server.url, "same-name") as client:
            generate_askg(["waving"], client, cache_dir=tmp_path / "cache")
    assert (len(first.bodies), len(second.bodies)) == (1, 1)


# -- weights by name, from a Hugging Face cache the test writes ------------------------------------------------


def _cached_repo(hub: Path, repo_dir: str, filename: str, data: bytes, blob: str | None = None) -> str:
    """``data`` as ``filename`` of a repo in the Hugging Face cache layout (refs/main, snapshots, blobs by sha256)."""
    sha = hashlib.sha256(data).hexdigest()
    root = hub / repo_dir
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "snapshots" / REVISION).mkdir(parents=True, exist_ok=True)
    (root / "blobs" / (blob or sha)).write_bytes(data)
    (root / "refs" / "main").write_text(REVISION)
    (root / "snapshots" / REVISION / filename).symlink_to(f"../../blobs/{blob or sha}")
    return sha


@pytest.fixture(scope="module")
def hub(files, tmp_path_factory):
    """Two caches: ViT-B-16/openai (test-tiny weights in its place, open_clip's pickle) and hf-hub:stdd-test/tiny
    (safetensors); and one whose ViT-B-16/openai blob does not match its sha256."""
    root = tmp_path_factory.mktemp("hf")
    state = files["model"].state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    pickle = buffer.getvalue()
    good, corrupt = root / "hub", root / "corrupt"
    sha = _cached_repo(good, OPENAI_REPO, "open_clip_pytorch_model.bin", pickle)
    flipped = pickle[:1000] + bytes([pickle[1000] ^ 0xFF]) + pickle[1001:]  # one byte changed after download
    _cached_repo(corrupt, OPENAI_REPO, "open_clip_pytorch_model.bin", flipped, blob=sha)
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "tiny.safetensors"))
    hub_sha = _cached_repo(good, "models--stdd-test--tiny", "open_clip_model.safetensors",
                           (root / "tiny.safetensors").read_bytes())  # fmt: skip
    return {"good": good, "corrupt": corrupt, "empty": root / "empty", "sha": sha, "hub_sha": hub_sha}


BY_NAME = """
import sys, stdd_fast
engine = stdd_fast.Engine("hf-hub:stdd-test/tiny", classes=["run", "jump", "swim"], num_frames=4, num_views=1)
info = engine.predictor.checkpoint_info
by_path = stdd_fast.Engine(sys.argv[1], classes=["run", "jump", "swim"], num_frames=4, num_views=1)
same = engine.classify(sys.argv[2])[0].scores == by_path.classify(sys.argv[2])[0].scores
print(info.name, info.sha256, same)
"""


def test_weights_by_name_load_from_the_hugging_face_cache_offline(files, hub):
    clip = files["clips"][0]
    cmd = ["classify", clip, "--weights", "ViT-B-16/openai", "--classes", CLASSES, *FAST]
    cached = launch(*cmd, env={"HF_HUB_CACHE": str(hub["good"])})
    absent = launch(*cmd, env={"HF_HUB_CACHE": str(hub["empty"])})
    corrupt = launch(*cmd, env={"HF_HUB_CACHE": str(hub["corrupt"])})
    python = launch("-c", BY_NAME, files["ckpt"], clip, python=True, env={"HF_HUB_CACHE": str(hub["good"])})
    done = finish(cached, 0)
    assert f"stdd: weights ViT-B-16/openai: {hub['good'] / OPENAI_REPO}" in done.stderr
    assert f"(sha256 {hub['sha']})" in done.stderr and "run" in done.stdout
    one_error_line(finish(absent, 3).stderr, "ViT-B-16/openai: not in the Hugging Face cache", "HF_HUB_OFFLINE=1")
    one_error_line(finish(corrupt, 3).stderr, "does not match its sha256", "delete it and rerun")
    assert finish(python, 0).stdout.split() == ["hf-hub:stdd-test/tiny", hub["hub_sha"], "True"]
