"""Reliability class 2: every input is bounded before work starts; bad ones fail fast with a typed error.

Videos (the decode budget counts what the decoder holds, in ``stdd classify``, ``stdd batch``'s decoding
stage and ``stdd serve``'s model), label files, a chat endpoint's answers (compression bombs, answers
dripped slowly), and special files (FIFOs, links to /dev/zero, folders) where outputs and cache entries
belong. Each case runs in a child process with its time and resident memory measured and capped (bounds.py).
"""

import contextlib
import json
import os
import socketserver
import threading
import time
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from bounds import run_bounded
from helpers import randomize_
from video_fixtures import write_clip

from stdd_fast import create_model, save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("res") / "tiny.safetensors"
    return save_checkpoint(randomize_(create_model("test-tiny"), seed=1), path)


def _yuv_video(path: Path, width: int, height: int, frames: int) -> Path:
    """A flat video written from YUV planes directly (no RGB conversion: large sizes encode in seconds)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "45"}
        plane = np.zeros((height * 3 // 2, width), np.uint8)
        for i in range(frames):
            plane[:] = 16 + (8 * i) % 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(plane, format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_yaml_alias_bomb_is_refused_without_expanding(tmp_path):
    levels = "\n".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10))
    bomb = tmp_path / "classes_xprompt_bomb.yml"
    bomb.write_text(f"l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n{levels}\n")
    out = run_bounded(
        "YAML alias bomb",
        f"""
        from stdd_fast.prompts import read_xprompt
        from stdd_fast import ClassifierError
        try:
            read_xprompt({str(bomb)!r})
        except ClassifierError as e:
            print(e)
        """,
        seconds=60,
        rss_mb=1024,
    )
    assert out.returncode == 0 and "YAML aliases (*l0) are not allowed" in out.stdout, out.stderr


def test_oversized_label_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "classes_label_big.yml"
    big.write_text("classes:\n" + "".join(f"- class {i}\n" for i in range(150_000)))  # ~2 MB
    out = run_bounded(
        "oversized label file",
        f"""
        from stdd_fast.prompts import read_class_names
        from stdd_fast import ClassifierError
        try:
            read_class_names({str(big)!r})
        except ClassifierError as e:
            print(e)
        """,
        env={"STDD_MAX_YAML_MB": "1"},
        seconds=60,
    )
    assert "more than the 1 MiB a class-list file may have; set STDD_MAX_YAML_MB" in out.stdout, out.stderr


def huge_video(path: Path) -> Path:
    """A 200 kB file of three real 8192x8192 frames: FFmpeg allocates that size for each frame it decodes."""
    return _yuv_video(path, 8192, 8192, 3)


def test_a_huge_frame_size_fails_before_decoding_and_the_batch_goes_on(tmp_path, ckpt):
    """The default budget (2048 MiB) counts what the decoder holds on the way, not only the frames kept: the
    8192x8192 file (2 sampled frames, 384 MiB of RGB) cost +3 GB before; it fails now without a frame decoded."""
    huge = huge_video(tmp_path / "huge.mp4")
    good = write_clip(tmp_path / "good.mp4", 40)
    out = run_bounded(
        "8192x8192 video, the default 2048 MiB decode budget",
        f"""
        from stdd_fast import Engine
        engine = Engine({str(ckpt)!r}, classes=["a", "b"])
        base = _rss()
        for r in engine.classify([{str(huge)!r}, {str(good)!r}]):
            print(type(r.error).__name__ if r.error else "ok", r.error)
        print((_PEAK[0] - base) / 2**20)
        """,
        seconds=120,
        rss_mb=1500,
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("VideoError") and "2 sampled 8192x8192 frames as RGB: 384 MiB" in lines[0], out.stdout
    assert "the decoder's frames on the way" in lines[0] and "decode memory budget of 2048 MiB" in lines[0]
    assert "raise DecodeConfig(frame_budget_mb=...) (stdd: --frame-budget-mb)" in lines[0]
    assert lines[1].startswith("ok")
    print(f"[measured] peak RSS growth with the 8192x8192 file in the batch: {float(lines[2]):.0f} MiB")
    assert float(lines[2]) < 192  # not one 8192x8192 RGB frame was held


def test_a_video_the_budget_admits_costs_less_than_the_budget(tmp_path, ckpt):
    """A 4096x4096 file fits 2048 MiB by the estimate (its RGB frames and 17 decoder frames): decoding and
    transforming it must stay under it (one float frame at a time, the decoder's frames freed on close)."""
    big = _yuv_video(tmp_path / "big.mp4", 4096, 4096, 3)
    out = run_bounded(
        "4096x4096 video under the default decode budget",
        f"""
        from stdd_fast import Engine
        from stdd_fast.video.pyav import VideoReader, decode_bytes
        engine = Engine({str(ckpt)!r}, classes=["a", "b"], decode_workers=1)
        with VideoReader({str(big)!r}) as reader:
            distinct = len(set(engine.sampling.indices(reader.info).flatten().tolist()))
            estimate = sum(decode_bytes(reader.info, distinct, None)) / 2**20
        base = _rss()
        r = engine.classify({str(big)!r})[0]
        print(r.ok, r.error, estimate, (_PEAK[0] - base) / 2**20)
        """,
        seconds=120,
        rss_mb=3000,
    )
    ok, *_, estimate, growth = out.stdout.split()
    print(f"[measured] 4096x4096: estimate {float(estimate):.0f} MiB, peak RSS growth {float(growth):.0f} MiB")
    assert ok == "True" and float(growth) <= float(estimate) <= 2048


def test_the_batch_stage_and_the_server_refuse_the_huge_frame_size_before_decoding(tmp_path, ckpt):
    """``stdd batch``'s decoding stage (what its Ray tasks run) and ``stdd serve``'s service (per request, from
    the header) give the typed error with bounded memory; the other request of the server's batch is answered."""
    from stdd_fast import build_classifier, load_model

    clf = build_classifier(load_model(ckpt), ["a", "b"]).save(tmp_path / "clf.safetensors")
    huge = huge_video(tmp_path / "huge.mp4")
    good = write_clip(tmp_path / "good.mp4", 40)
    out = run_bounded(
        "8192x8192 video in stdd batch's decoding stage and in the served model",
        f"""
        from pathlib import Path
        from stdd_fast.batch import BatchConfig
        from stdd_fast.batch.stages import DecodeVideos
        from stdd_fast.serve.model import ServingSettings, VideoService
        stage = DecodeVideos(BatchConfig({str(ckpt)!r}, classes=["a", "b"]), 32)
        service = VideoService(ServingSettings({str(ckpt)!r}, classifier={str(clf)!r}, min_frames=1), Path("."))
        base = _rss()
        row = stage({{"path": {str(huge)!r}}})
        print(row["error_type"], row["error"])
        answers = service.classify([([Path({str(huge)!r}).read_bytes()], 2), ([Path({str(good)!r}).read_bytes()], 2)])
        print(type(answers[0]).__name__, answers[0])
        print(len(answers[1][0].labels))
        print((_PEAK[0] - base) / 2**20)
        service.close()
        """,
        seconds=180,
        rss_mb=1500,
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("VideoError") and "8192x8192" in lines[0] and "--frame-budget-mb" in lines[0], out
    assert lines[1].startswith("VideoError VIDEO[0] is a 8192x8192 video: decoding it needs about ") and (
        "over this server's decode memory budget of 2048 MiB per video (stdd serve --frame-budget-mb)" in lines[1]
    )
    assert lines[2] == "2"  # the other request of the execution was answered
    print(f"[measured] peak RSS growth (batch stage + served model): {float(lines[3]):.0f} MiB")
    assert float(lines[3]) < 192


def test_an_ordinary_1080p_clip_costs_little_memory(tmp_path, ckpt):
    """Distinct frames once, uint8 until a chunk becomes float: well under the old +1.3 GB for one 1080p clip."""
    clip = _yuv_video(tmp_path / "hd.mp4", 1920, 1080, 150)
    out = run_bounded(
        "classify a 1080p clip",
        f"""
        from stdd_fast import Engine
        engine = Engine({str(ckpt)!r}, classes=["a", "b"], decode_workers=1)
        import os
        base = _rss()
        r = engine.classify({str(clip)!r})[0]
        print(r.ok, (_PEAK[0] - base) / 2**20)
        """,
        seconds=120,
    )
    ok, growth = out.stdout.split()
    print(f"[measured] peak RSS growth while classifying a 1080p clip: {float(growth):.0f} MiB")
    assert ok == "True" and float(growth) < 600


def test_a_fifo_fails_at_once_and_the_batch_goes_on(tmp_path, ckpt):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    good = write_clip(tmp_path / "good.mp4", 40)
    out = run_bounded(
        "a FIFO in a batch",
        f"""
        from stdd_fast import Engine
        engine = Engine({str(ckpt)!r}, classes=["a", "b"])
        for r in engine.classify([{str(fifo)!r}, {str(good)!r}]):
            print(type(r.error).__name__ if r.error else "ok", r.error)
        """,
        seconds=60,
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("VideoError") and "not a regular file (a FIFO, device or socket)" in lines[0]
    assert lines[1].startswith("ok") and out.seconds < 60


# -- stdd prompts: a hostile chat endpoint -------------------------------------------------------------------------


def _encoded_head(encoding: str) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nConnection: close\r\n\r\n".encode()


class _Hostile(socketserver.BaseRequestHandler):
    """Reads one request, then answers as ``server.mode`` says: a compression bomb, or an answer dripped slowly."""

    def handle(self) -> None:
        sock, data = self.request, b""
        sock.settimeout(30)
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            if not got:
                return
            data += got
        with contextlib.suppress(OSError):  # the client hanging up is what the test wants
            getattr(self, self.server.mode)(sock)

    def brotli_bomb(self, sock) -> None:
        sock.sendall(_encoded_head("br") + self.server.bomb)

    def gzip_bomb(self, sock) -> None:  # zeros without end: 64 MiB a round, about 64 kB on the wire
        sock.sendall(_encoded_head("gzip"))
        packer, zeros = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(2**26)
        for _ in range(1024):
            sock.sendall(packer.compress(zeros))

    def drip_headers(self, sock) -> None:  # a header line every 0.1 s: each read is quick, the answer never ends
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(600):
            sock.sendall(b"X-Slow: a\r\n")
            time.sleep(0.1)

    def drip_body(self, sock) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(600):
            sock.sendall(b" ")
            time.sleep(0.1)


class _HostileServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def hostile():
    """``hostile(mode)``: a loopback server answering that way (URL returned); all stopped at teardown."""
    started = []

    def start(mode: str) -> str:
        server = _HostileServer(("127.0.0.1", 0), _Hostile)
        server.mode = mode
        if mode == "brotli_bomb":  # 1 GiB of zeros as brotli: 1.6 kB, one read for the client
            brotli = pytest.importorskip("brotli")
            packer = brotli.Compressor(quality=3)
            server.bomb = b"".join(packer.process(bytes(2**26)) for _ in range(16)) + packer.finish()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "mode, words",
    [
        ("brotli_bomb", "the response is over 4 MiB once decoded (br)"),
        ("gzip_bomb", "the response is over 4 MiB once decoded (gzip)"),
        ("drip_headers", "no answer within 2 s (--timeout)"),
        ("drip_body", "no answer within 2 s (--timeout)"),
    ],
)
def test_prompts_client_bounds_compression_bombs_and_dripped_answers(hostile, mode, words):
    """A compressed answer is decoded a bounded piece at a time and refused past 4 MiB (the brotli bomb cost
    +1 GB before: one read held all of it); a server dripping its headers or body meets the whole-request deadline
    (it kept the client for minutes before: each read was quick)."""
    url = hostile(mode)
    out = run_bounded(
        f"stdd prompts' client against a {mode.replace('_', ' ')}",
        f"""
        import time
        from stdd_fast.askg.client import ChatClient, ChatError
        base, start = _rss(), time.monotonic()
        with ChatClient({url!r}, "m", timeout=2, retries=0) as client:
            try:
                client.complete([{{"role": "user", "content": "hi"}}])
            except ChatError as e:
                print(e)
        print(time.monotonic() - start, (_PEAK[0] - base) / 2**20)
        """,
        seconds=60,
        rss_mb=512,
    )
    said, figures = out.stdout.splitlines()
    seconds, growth = map(float, figures.split())
    print(f"[measured] {mode}: answered in {seconds:.2f} s, peak RSS growth {growth:.0f} MiB")
    assert words in said and seconds < 5 and growth < 64, out.stdout


# -- special files where regular files belong ----------------------------------------------------------------------


def _special(path: Path, kind: str) -> Path:
    """``path`` made a FIFO (a read or write would block), a link to /dev/zero (a read never ends) or a folder."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    return path


def test_outputs_that_are_fifos_or_links_to_dev_zero_are_refused_at_once(tmp_path, ckpt):
    """Each command's output (--output / -o) a FIFO or a link to /dev/zero: a usage error naming it, before any
    work; never a write that blocks on the FIFO or vanishes into the device, nor a read of /dev/zero."""
    clip = write_clip(tmp_path / "clip.mp4", 40)
    cases = {}
    for kind in ("fifo", "zero"):
        folder = tmp_path / kind
        folder.mkdir()
        common = ["--weights", str(ckpt), "--classes", "a,b"]
        cases[f"classify --output ({kind})"] = ["classify", str(clip), *common, "--output",
                                                str(_special(folder / "r.jsonl", kind))]  # fmt: skip
        cases[f"build-classifier -o ({kind})"] = ["build-classifier", *common, "-o",
                                                  str(_special(folder / "c.safetensors", kind))]  # fmt: skip
        cases[f"prompts -o ({kind})"] = ["prompts", "waving", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m",
                                         "--no-cache", "-o", str(_special(folder / "p.yml", kind))]  # fmt: skip
        cases[f"batch -o ({kind})"] = ["batch", str(clip), *common, "-o", str(_special(folder / "out", kind))]
    out = run_bounded(
        "every command's output a FIFO or a link to /dev/zero",
        f"""
        import contextlib, io, signal
        from stdd_fast.cli import main
        def hung(*_):
            raise TimeoutError("no answer in 30 s")
        signal.signal(signal.SIGALRM, hung)
        for name, argv in {cases!r}.items():
            err = io.StringIO()
            signal.alarm(30)
            with contextlib.redirect_stderr(err):
                code = main(argv)
            signal.alarm(0)
            print(name, "|", code, "|", " ".join(err.getvalue().split()))
        """,
        seconds=240,
        rss_mb=1500,
    )
    said = dict(line.split(" | ", 1) for line in out.stdout.splitlines())
    assert set(said) == set(cases), out.stderr[-2000:]
    for name, text in said.items():
        code, message = text.split(" | ", 1)
        kind = "a FIFO" if "(fifo)" in name else "a device"
        print(f"[measured] {name}: exit {code}: {message}")
        assert code == "2" and f"is {kind}, not a file or folder: write to another path" in message, (name, message)


@pytest.mark.parametrize("kind", ["fifo", "zero", "folder"])
def test_cache_entries_that_are_special_files_read_as_absent(tmp_path, kind):
    """The answer cache, the CPU-choice record and the encoder-graph cache: an entry that is a FIFO, a link to
    /dev/zero or a folder reads as absent at once (rebuilt, or the cache goes unused), said once per place."""
    from stdd_fast.askg.cache import AnswerCache

    key = AnswerCache.key("http://x/v1", "m", "1", "askg", "waving")
    entry = tmp_path / "askg" / key[:2] / f"{key}.json"
    entry.parent.mkdir(parents=True)
    places = {
        "askg": _special(entry, kind),
        "cpu": _special(tmp_path / "cpu_choice.json", kind),
        "graph": _special(tmp_path / "g.onnx", kind),
        "record": _special(tmp_path / "r.json", kind),
    }
    (tmp_path / "ok.onnx").write_bytes(b"a graph")
    out = run_bounded(
        f"cache entries that are {kind}s",
        f"""
        import json, warnings
        from pathlib import Path
        from stdd_fast.askg.cache import AnswerCache
        from stdd_fast.errors import OutputError
        from stdd_fast.predict import cpu_choice, encoder_cache
        places = {{k: Path(v) for k, v in { ({k: str(v) for k, v in places.items()})!r}.items()}}
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            cache = AnswerCache(places["askg"].parents[1])
            print("askg", cache.get({key!r}), cache.get({key!r}))
            try:
                cache.put({key!r}, {{"label": "waving"}})
                print("put", "stored" if cache.get({key!r}) else "lost")
            except OutputError as e:
                print("put", "OutputError", e)
            print("cpu", cpu_choice._read(places["cpu"]), cpu_choice._read(places["cpu"]))
            print("graph", encoder_cache._stale(places["graph"], places["record"]))
            Path({str(tmp_path / "r2.json")!r}).write_text(json.dumps({{"sha256": "0" * 64}}))
            print("graph2", encoder_cache._stale(places["graph"], Path({str(tmp_path / "r2.json")!r})))
        print("warnings", json.dumps([str(w.message) for w in said]))
        """,
        seconds=60,
    )
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    print(f"[measured] {kind}: {lines}")
    assert lines["askg"] == "None None" and lines["cpu"] == "{} {}"
    assert lines["graph"] == "not cached yet"  # its record reads as absent
    assert lines["graph2"].startswith("the cached file does not match its record")  # the graph is never trusted
    # a FIFO or a link is replaced by the new entry; a folder cannot be: a typed error (generate says it once)
    assert lines["put"] == "stored" if kind != "folder" else lines["put"].startswith("OutputError")
    warned = json.loads(lines["warnings"])
    shown = {"fifo": "is a FIFO", "zero": "is a device", "folder": "is a folder"}[kind]
    assert len(warned) == len(set(warned)) and all(shown in w for w in warned), warned  # each place once
