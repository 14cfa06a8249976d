"""Delivering events (``stdd_fast.delivery``) against real receivers: a loopback HTTP server started here (127.0.0.1
only), real files, real subprocesses. Every wait is bounded in time; every server and sink is stopped on the way out.

The webhook cases print their counts (and the send-throughput comparison prints events/s); no timing is asserted
but the 50 ms bound on a single ``send`` that the delivery contract promises.
"""

import hashlib
import hmac
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stdd_fast.delivery import (
    SECRET_ENV,
    CallbackSink,
    DeliveryWarning,
    EventFormat,
    JsonlSink,
    WebhookConfig,
    WebhookSink,
    open_sink,
    verify_signature,
)
from stdd_fast.delivery import spool as spool_module
from stdd_fast.delivery.spool import Spool
from stdd_fast.errors import ConfigError, OutputError

SEND_BOUND_S = 0.05  # the longest a single send() may take (the contract: bounded, small work)


def make_events(n: int, source: str = "dock-cam") -> list:
    """``n`` events of segments one after another: open, close, open, close... (stable ids, some evidence)."""
    from stdd_fast.events import Event, Evidence, event_id  # here, so a child process can run this function's source

    out = []
    for k in range(n):
        segment, kind = k // 2, ("open", "close")[k % 2]
        start = 40 * segment
        evidence = tuple(
            Evidence(w, start + 8 * w, start + 8 * w + 16, (start + 8 * w) / 25, (start + 8 * w + 16) / 25, 0.8)
            for w in range(4)
        )
        out.append(
            Event(
                id=event_id(source, "loading", start),
                kind=kind,
                source=source,
                label="loading",
                start_frame=start,
                start_time=start / 25,
                end_frame=start + 32 if kind == "close" else None,
                end_time=(start + 32) / 25 if kind == "close" else None,
                peak_confidence=0.91,
                mean_confidence=0.84,
                windows=4,
                sequence=k,
                delay_s=0.25,
                evidence=evidence,
            )
        )
    return out


def keys(events) -> list:
    return [(e.id, e.kind) for e in events]


def balanced(stats) -> bool:
    """Every event accepted or recovered is delivered, dropped, failed or still pending (once)."""
    return stats.queued + stats.recovered == stats.delivered + stats.dropped + stats.failed + stats.pending


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line a child prints, or "" when none comes within ``timeout`` seconds."""
    line = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


def wait_until(condition, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


class Receiver:
    """A webhook receiver on 127.0.0.1: answers ``status`` (or ``status_for(event_id, kind)``), records the events
    it acknowledged (2xx) with their headers and bodies, and verifies nothing itself (the tests do)."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        self.status, self.status_for, self.retry_after = status, None, None
        self.acked, self.answered, self.times, self.lock = [], [], [], threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = (self.headers["X-Stdd-Event-Id"], self.headers["X-Stdd-Event-Kind"])
                status = receiver.status_for(*key) if receiver.status_for else receiver.status
                with receiver.lock:
                    receiver.answered.append(status)
                    receiver.times.append(time.monotonic())
                    if 200 <= status < 300:
                        receiver.acked.append((key, dict(self.headers), body))
                self.send_response(status)
                if receiver.retry_after and status in (429, 503):
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def keys(self) -> list:
        with self.lock:
            return [key for key, _, _ in self.acked]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiving(port: int = 0, status: int = 200):
    receiver = Receiver(port, status)
    try:
        yield receiver
    finally:
        receiver.stop()


@contextmanager
def silent_endpoint():
    """A server on 127.0.0.1 that accepts connections and never reads or answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.05)
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook", held
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


@contextmanager
def closing(sink, timeout: float = 5.0):
    """The sink, closed on the way out even when the test fails (its close warnings are expected there)."""
    try:
        yield sink
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeliveryWarning)
            sink.close(timeout)


def quick(**options) -> dict:
    """Webhook options for tests: short timeouts and backoff, so outages resolve within a second of ending."""
    return {"connect_timeout": 1.0, "timeout": 2.0, "retry_initial": 0.05, "retry_max_delay": 0.5, **options}


# -- signatures -------------------------------------------------------------------------------------------


def test_signatures_verify_at_the_receiver(tmp_path, monkeypatch):
    """The receiver recomputes HMAC-SHA256 over "<timestamp>." + the exact body and gets the header's value."""
    secret = "s3cr3t-" + os.urandom(4).hex()
    events = make_events(6)
    with receiving() as receiver:
        sink = WebhookSink(receiver.url, secret=secret, spool_dir=tmp_path / "spool", headers={"Authorization": "t"})
        with closing(sink):
            for event in events:
                sink.send(event)
            assert wait_until(lambda: len(receiver.keys()) == len(events), 10)
        assert receiver.keys() == keys(events)
        for (_, headers, body), event in zip(receiver.acked, events, strict=True):
            timestamp, signature = headers["X-Stdd-Timestamp"], headers["X-Stdd-Signature"]
            expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            assert signature == "sha256=" + expected
            assert verify_signature(secret, body, timestamp, signature)
            assert not verify_signature(secret + "x", body, timestamp, signature)
            assert not verify_signature(secret, body + b" ", timestamp, signature)
            assert not verify_signature(secret, body, str(int(timestamp) - 3600), signature)
            assert headers["Authorization"] == "t" and headers["Content-Type"] == "application/json"
            assert json.loads(body) == event.to_dict()

        monkeypatch.setenv(SECRET_ENV, "from-env")
        with closing(WebhookSink(receiver.url, spool_dir=tmp_path / "env")) as sink:
            sink.send(events[0])
            assert wait_until(lambda: len(receiver.keys()) == len(events) + 1, 10)
        _, headers, body = receiver.acked[-1]
        assert verify_signature("from-env", body, headers["X-Stdd-Timestamp"], headers["X-Stdd-Signature"])

        monkeypatch.delenv(SECRET_ENV)
        with closing(WebhookSink(receiver.url, spool_dir=tmp_path / "unsigned")) as sink:
            sink.send(events[1])
            assert wait_until(lambda: len(receiver.keys()) == len(events) + 2, 10)
        assert "X-Stdd-Signature" not in receiver.acked[-1][1]
    print(f"[measured] {len(receiver.acked)} signed/unsigned requests checked")


# -- outages ----------------------------------------------------------------------------------------------


def test_endpoint_down_for_ten_seconds_then_back_delivers_each_event_once_in_order(tmp_path):
    """5 s with nothing listening (connection refused), 5 s answering 503, then 200: all events arrive once, in
    send order; those sent during the outage went through the spool; the counts add up."""
    port, events = free_port(), make_events(70)
    during, after = events[:60], events[60:]
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", spool_dir=tmp_path / "spool", max_queue=16, **quick())
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as said, closing(sink):
        warnings.simplefilter("always", DeliveryWarning)
        for event in during:  # over the first ~3 s, while the endpoint is down
            sink.send(event)
            time.sleep(0.05)
        time.sleep(max(0.0, 5 - (time.monotonic() - start)))
        with receiving(port, status=503) as receiver:
            time.sleep(max(0.0, 10 - (time.monotonic() - start)))
            assert receiver.keys() == []
            receiver.status = 200
            assert wait_until(lambda: sink.stats().pending == 0, 20), sink.stats().summary()
            recovered_at = time.monotonic() - start
            for event in after:
                sink.send(event)
            assert wait_until(lambda: len(receiver.keys()) == len(events), 10)
            stats = sink.close(5)
    print(
        f"\n[measured] down 0-5 s (refused), 503 5-10 s ({receiver.answered.count(503)} answers), drained at "
        f"{recovered_at:.1f} s; {stats.summary()}"
    )
    assert receiver.keys() == keys(events)  # every event once, in the order sent
    assert stats.delivered == len(events) and stats.dropped == stats.failed == stats.pending == 0
    assert stats.redelivered >= len(during) and stats.spooled >= len(during) and stats.retried > 0
    assert stats.queue_peak <= 16 and balanced(stats)
    messages = " ".join(str(w.message) for w in said)
    assert "ConnectionRefusedError" in messages and "HTTP 503" in messages


def test_a_silent_endpoint_does_not_slow_send_and_memory_stays_bounded(tmp_path):
    """An endpoint that accepts and never answers: send() costs what rendering the body costs, as with no sink at
    all; memory holds at most max_queue events, the rest goes to the spool, where it survives close().

    On a loaded machine any loop, sink or not, sees the odd call preempted for tens of ms (the "no sink" rows show
    it): the webhook's run is measured up to three times and its best run must keep every call under the bound, which
    a sink that waits on its endpoint, its disk or its worker could not do in any run."""
    events, max_queue = make_events(1500), 100
    render = EventFormat().render

    def rate(send) -> tuple[float, float, float]:
        """events/s, and the median and longest single call, in seconds."""
        took, start = [], time.perf_counter()
        for event in events:
            t = time.perf_counter()
            send(event)
            took.append(time.perf_counter() - t)
        took.sort()
        return len(events) / (time.perf_counter() - start), took[len(took) // 2], took[-1]

    rates = {"no sink": rate(lambda event: None), "no sink, body rendered": rate(lambda e: render(e, 0.0))}
    with closing(CallbackSink(lambda event: None)) as noop:
        rates["no-op callback sink"] = rate(noop.send)
    with silent_endpoint() as (url, held):
        sink = WebhookSink(url, spool_dir=tmp_path / "spool", max_queue=max_queue, **quick(timeout=60.0))
        with closing(sink):
            runs = []
            while len(runs) < 3 and (not runs or runs[-1][2] >= SEND_BOUND_S):
                runs.append(rate(sink.send))
                rates[f"webhook, silent endpoint ({len(runs)})"] = runs[-1]
            during = sink.stats()
            assert wait_until(lambda: len(held) >= 1, 5)  # the worker is stuck in a request to it
            t = time.monotonic()
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always", DeliveryWarning)
                stats = sink.close(2.0)
            closed_in = time.monotonic() - t
    print("\n[measured] send() of", len(events), "events:")
    for name, (per_s, median, longest) in rates.items():
        print(f"  {name:30s} {per_s:>10,.0f} ev/s  median {median * 1e6:7.1f} us  longest {longest * 1e3:6.2f} ms")
    print(f"  close(2.0) took {closed_in:.2f} s; {during.summary()}")
    sent = len(runs) * len(events)
    assert min(longest for _, _, longest in runs) < SEND_BOUND_S
    assert during.queued == sent and during.delivered == 0 and during.dropped == during.failed == 0
    assert during.queue_peak <= max_queue and during.spooled >= sent - max_queue
    assert stats.pending == sent and balanced(stats)
    assert any(f"{sent} not delivered yet, kept in the spool" in str(w.message) for w in said)
    reopened = Spool(tmp_path / "spool", max_bytes=2**30)
    assert reopened.recovered == sent  # on disk, in order, for the next sink
    assert reopened.head().key == " ".join(keys(events)[0])
    reopened.close()


PRODUCER = """
import sys, time
from stdd_fast.delivery import WebhookSink

url, spool, n, source = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sink = WebhookSink(url, spool_dir=spool, connect_timeout=1.0, retry_initial=0.05, retry_max_delay=0.2)
for event in make_events(n, source):
    sink.send(event)
deadline = time.monotonic() + 30
while sink.stats().spooled < n and time.monotonic() < deadline:
    time.sleep(0.01)
print("spooled", sink.stats().spooled, flush=True)
time.sleep(120)  # killed here, its spool on disk and its worker still retrying
"""


def test_a_killed_process_spool_is_redelivered_first_on_restart(tmp_path):
    """A producer sends against a closed port and is SIGKILL-ed; a new sink on the same spool, the endpoint up,
    delivers what the killed one left, then its own events: each once, in order."""
    old, new = make_events(50, "gate-cam"), make_events(8, "yard-cam")
    code = textwrap.dedent(inspect.getsource(make_events)) + PRODUCER
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    url = f"http://127.0.0.1:{free_port()}/hook"
    argv = [sys.executable, "-c", code, url, str(tmp_path / "spool"), str(len(old)), "gate-cam"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = read_line(proc, 60)
        assert line.split() == ["spooled", str(len(old))], (line, proc.poll())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with receiving() as receiver:
        sink = WebhookSink(receiver.url, spool_dir=tmp_path / "spool", **quick())
        with closing(sink):
            recovered = sink.stats().recovered
            for event in new:
                sink.send(event)
            assert wait_until(lambda: len(receiver.keys()) == len(old) + len(new), 20), sink.stats().summary()
            stats = sink.close(5)
    print(f"\n[measured] killed with 50 spooled (exit {proc.returncode}); restart: {stats.summary()}")
    assert proc.returncode == -signal.SIGKILL and recovered == len(old)
    assert receiver.keys() == keys(old) + keys(new)
    # the new events queued behind the spooled ones went through the spool too: order before speed
    assert stats.redelivered == stats.delivered == len(old) + len(new) and balanced(stats)


def test_an_event_refused_for_good_is_kept_aside_and_does_not_block_the_rest(tmp_path):
    events = make_events(6)
    refused = (events[2].id, events[2].kind)
    with receiving() as receiver, warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", DeliveryWarning)
        receiver.status_for = lambda event_id, kind: 422 if (event_id, kind) == refused else 200
        with closing(WebhookSink(receiver.url, spool_dir=tmp_path / "spool", **quick())) as sink:
            for event in events:
                sink.send(event)
            assert wait_until(lambda: sink.stats().pending == 0, 10)
            stats = sink.stats()
    assert receiver.keys() == [k for k in keys(events) if k != refused]
    assert stats.failed == 1 and stats.delivered == 5 and stats.retried == 0 and balanced(stats)
    kept = [json.loads(line) for line in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert [k["key"] for k in kept] == [" ".join(refused)] and kept[0]["why"] == "HTTP 422"
    assert json.loads(kept[0]["body"]) == events[2].to_dict()
    assert any("refused an event for good" in str(w.message) for w in said)


def test_a_full_spool_drops_the_oldest_counted_and_said(tmp_path):
    port, events = free_port(), make_events(60)
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", spool_dir=tmp_path / "spool", max_spool_mib=0.02, **quick())
    with warnings.catch_warnings(record=True) as said, closing(sink):
        warnings.simplefilter("always", DeliveryWarning)
        for event in events:
            sink.send(event)
        assert wait_until(lambda: sink.stats().spooled == len(events), 10)
        full = sink.stats()
        assert sink.spool.pending_bytes <= 0.02 * 2**20 + 4096
        with receiving(port) as receiver:
            assert wait_until(lambda: sink.stats().pending == 0, 15), sink.stats().summary()
            stats = sink.close(5)
    print(f"\n[measured] spool bound 0.02 MiB: {full.summary()}")
    assert 0 < stats.dropped < len(events) and stats.delivered == len(events) - stats.dropped and balanced(stats)
    assert receiver.keys() == keys(events)[stats.dropped :]  # the newest, in order
    assert any("is full" in str(w.message) for w in said)


def test_retry_after_lengthens_the_backoff(tmp_path):
    with receiving() as receiver:
        receiver.status_for = lambda event_id, kind: 429 if len(receiver.answered) == 0 else 200
        receiver.retry_after = "1"
        sink = WebhookSink(receiver.url, spool_dir=tmp_path / "spool", **quick(retry_max_delay=2.0))
        with closing(sink), pytest.warns(DeliveryWarning, match="HTTP 429"):
            sink.send(make_events(1)[0])
            assert wait_until(lambda: len(receiver.keys()) == 1, 10)
    gap = receiver.times[1] - receiver.times[0]
    print(f"\n[measured] answered {receiver.answered}; retried after {gap:.2f} s (Retry-After: 1, backoff 0.05 s)")
    assert receiver.answered == [429, 200] and gap >= 0.95


FULL_DISK = """
import json, resource, signal, sys, time
from stdd_fast.delivery import WebhookSink

url, spool = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))  # the spool's disk is "full" after ~14 events
sink = WebhookSink(url, spool_dir=spool, max_queue=10, connect_timeout=1.0, retry_initial=0.05, retry_max_delay=0.2)
for event in make_events(40):
    sink.send(event)
    time.sleep(0.005)
time.sleep(0.5)
print(sink.stats().summary(), flush=True)
sys.stdin.readline()  # the endpoint is up now
deadline = time.monotonic() + 20
while sink.stats().pending and time.monotonic() < deadline:
    time.sleep(0.02)
stats = sink.close(5)
print(json.dumps({k: getattr(stats, k) for k in ("delivered", "spooled", "failed", "dropped", "pending")}), flush=True)
"""


def test_a_spool_that_stops_taking_writes_is_said_and_memory_carries_on(tmp_path):
    """The spool's disk fills up (a file-size limit in a child process): said on stderr, the events already spooled
    and those held in memory (max_queue) are delivered in order once the endpoint is back; the rest are counted as
    failed, never silently gone."""
    port, events = free_port(), make_events(40)
    code = textwrap.dedent(inspect.getsource(make_events)) + FULL_DISK
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-c", code, f"http://127.0.0.1:{port}/hook", str(tmp_path / "spool")]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        with receiving(port) as receiver:
            receiver.status = 503  # up, but not taking events until the child has sent them all
            before = read_line(proc, 60)
            receiver.status = 200
            proc.stdin.write("\n")
            proc.stdin.flush()
            final = json.loads(read_line(proc, 60) or "{}")
            stderr = proc.communicate(timeout=30)[1]
    finally:
        proc.kill()
    print(f"\n[measured] disk full, endpoint down: {before.strip()}\n  after: {final}")
    assert "cannot write the spool" in stderr and "events lost" in stderr
    assert final["failed"] > 0 and final["delivered"] + final["failed"] == len(events) and final["pending"] == 0
    assert final["delivered"] > final["spooled"]  # some came from memory, past the full spool
    assert receiver.keys() == keys(events)[: final["delivered"]]


# -- the spool on disk ------------------------------------------------------------------------------------


def test_the_spool_survives_torn_and_damaged_records(tmp_path):
    spool = Spool(tmp_path, max_bytes=2**20)
    spool.append([(f"e{i} open", f'{{"n": {i}}}'.encode()) for i in range(1, 6)])
    spool.done(spool.head().seq)
    spool.close()
    (segment,) = tmp_path.glob("seg-*.log")
    data = segment.read_bytes()
    third = data.index(b'{"n": 3}')
    segment.write_bytes(data[:third] + b'{"n": 9}' + data[third + 8 :] + b"6 0000")  # a flipped byte, a torn tail
    spool = Spool(tmp_path, max_bytes=2**20)
    assert (spool.recovered, spool.corrupt) == (3, 1)
    assert segment.read_bytes() == data[:third] + b'{"n": 9}' + data[third + 8 :]  # the torn tail cut off
    seen = []
    while (record := spool.head()) is not None:
        seen.append(record.key)
        spool.done(record.seq)
    assert seen == ["e2 open", "e4 open", "e5 open"]
    spool.append([("e6 close", b"{}")])
    spool.close()
    spool = Spool(tmp_path, max_bytes=2**20)
    assert spool.recovered == 1 and spool.head().key == "e6 close"
    spool.close()


def test_the_spool_rotates_segments_deletes_done_ones_and_compacts_its_index(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "INDEX_COMPACT_BYTES", 64)
    spool = Spool(tmp_path, max_bytes=2**20, segment_bytes=256)
    for i in range(30):
        spool.append([(f"e{i} open", f'{{"n": {i}}}'.encode())])
    segments = len(list(tmp_path.glob("seg-*.log")))
    for i in range(20):
        record = spool.head()
        assert record.key == f"e{i} open"
        spool.done(record.seq)
    left = len(list(tmp_path.glob("seg-*.log")))
    spool.close()
    print(f"\n[measured] segments: {segments} written, {left} left after 20 of 30 done")
    assert segments > 3 and left < segments and (tmp_path / "done").stat().st_size < 64 + 8
    spool = Spool(tmp_path, max_bytes=2**20, segment_bytes=256)
    assert spool.recovered == 10 and spool.head().key == "e20 open"
    spool.close()


def test_the_spool_is_one_sinks_and_must_be_writable(tmp_path):
    first = Spool(tmp_path / "a", max_bytes=2**20)
    with pytest.raises(OutputError, match="in use by another sink"):
        Spool(tmp_path / "a", max_bytes=2**20)
    first.close()
    Spool(tmp_path / "a", max_bytes=2**20).close()  # free again once closed
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot be written"):
        WebhookSink("http://127.0.0.1:9/hook", spool_dir=tmp_path / "file" / "spool")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputError, match="FIFO"):
        Spool(tmp_path / "fifo", max_bytes=2**20)


# -- the local sinks ---------------------------------------------------------------------------------------


def test_jsonl_sink_appends_one_flushed_line_per_event(tmp_path, capsys):
    events, path = make_events(5), tmp_path / "events.jsonl"
    path.write_text('{"earlier": true}\n')
    with closing(JsonlSink(path)) as sink:
        for event in events:
            sink.send(event)
        assert wait_until(lambda: len(path.read_text().splitlines()) == 6, 5)  # flushed while still open
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"earlier": True} and lines[1:] == [e.to_dict() for e in events]
    stats = sink.stats()
    assert stats.delivered == 5 and stats.pending == 0 and balanced(stats)

    sink = JsonlSink(format=EventFormat("vss", sensor_id="cam-7"))
    for event in events[:2]:
        sink.send(event)
    sink.close()
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["Id"] for o in out] == [f"{e.id}-{e.kind}" for e in events[:2]] and out[0]["sensorId"] == "cam-7"


def test_jsonl_sink_refuses_paths_that_cannot_take_lines(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    for bad, said in [
        ("fifo", "FIFO"),
        ("zero", "device"),
        ("folder", "cannot be written"),
        ("file/events.jsonl", "cannot be written"),
        ("missing/events.jsonl", "cannot be written"),
    ]:
        with pytest.raises(OutputError, match=said):
            JsonlSink(tmp_path / bad)


def test_callback_exceptions_are_counted_and_never_end_the_stream():
    events, seen = make_events(9), []

    def callback(event):
        if event.sequence % 3 == 2:
            raise RuntimeError(f"receiver bug at {event.sequence}")
        seen.append(event.sequence)

    sink = CallbackSink(callback)
    with pytest.warns(DeliveryWarning) as said:
        for event in events:
            sink.send(event)
        stats = sink.close(5)
    assert seen == [0, 1, 3, 4, 6, 7] and stats.failed == 3 and stats.delivered == 6 and balanced(stats)
    assert "RuntimeError: receiver bug at 2" in str(said[0].message)
    assert "receiver bug at 8" in stats.last_error


def test_a_local_sink_behind_its_receiver_drops_counted_and_said():
    started, release = threading.Event(), threading.Event()

    def slow(event):
        started.set()
        release.wait(10)

    sink = CallbackSink(slow, max_queue=3)
    events = make_events(10)
    sink.send(events[0])
    assert started.wait(5)
    with pytest.warns(DeliveryWarning, match="events dropped"):
        for event in events[1:]:
            sink.send(event)
    held = sink.stats()
    release.set()
    with pytest.warns(DeliveryWarning, match="6 dropped, 0 failed"):
        stats = sink.close(5)
    assert (held.pending, held.dropped, held.queue_peak) == (4, 6, 3)
    assert stats.delivered == 4 and stats.dropped == 6 and balanced(stats)


def test_send_after_close_is_dropped_counted_and_said(tmp_path):
    sink = CallbackSink(lambda event: None)
    sink.close()
    with pytest.warns(DeliveryWarning, match="after close"):
        sink.send(make_events(1)[0])
    stats = sink.stats()
    assert stats.dropped == 1 and balanced(stats)


# -- formats and configuration ---------------------------------------------------------------------------------


def test_the_vss_incident_carries_the_documented_fields():
    opened, closed = make_events(2)
    origin = datetime(2026, 1, 1, 8, 0, tzinfo=timezone.utc)
    form = EventFormat("vss", sensor_id="dock-7", place="Dock 7", origin=origin)
    incident = json.loads(form.render(closed, sent_at=0.0))
    assert incident["Id"] == f"{closed.id}-close" and incident["sensorId"] == "dock-7"
    assert incident["timestamp"] == "2026-01-01T08:00:00.000Z" and incident["end"] == "2026-01-01T08:00:01.280Z"
    assert incident["category"] == "loading" and incident["place"] == {"name": "Dock 7"}
    assert all(isinstance(v, str) for v in incident["info"].values())
    assert incident["info"]["segmentId"] == closed.id and incident["info"]["kind"] == "close"
    assert incident["info"]["peakConfidence"] == "0.9100" and incident["info"]["endFrame"] == "32"

    live = EventFormat("vss")
    sent = 1_767_225_600.0
    first, second = json.loads(live.render(opened, sent)), json.loads(live.render(closed, sent + 7.0))
    assert "end" not in first and first["sensorId"] == opened.source and "place" not in first
    # the open was decided delay_s after its last evidence window ended: that fixes the source's media time 0 ...
    zero = sent - opened.delay_s - opened.evidence[-1].end_time
    assert first["timestamp"] == iso(zero + opened.start_time)
    # ... which its close keeps, though it was sent later: both say the same start
    assert second["timestamp"] == first["timestamp"] and second["end"] == iso(zero + closed.end_time)
    other = json.loads(live.render(make_events(1, "yard-cam")[0], sent + 60.0))
    assert other["timestamp"] == iso(sent + 60.0 - opened.delay_s - opened.evidence[-1].end_time)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_configuration_errors_name_the_value_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"'xml'.*'stdd', 'vss'"):
        EventFormat("xml")
    with pytest.raises(ConfigError, match="format='vss' only"):
        EventFormat("stdd", place="dock")
    with pytest.raises(ConfigError, match="timezone-aware"):
        EventFormat("vss", origin=datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match="http:// or https://"):
        WebhookConfig("ftp://example.com/hook")
    with pytest.raises(ConfigError, match="max_queue=0"):
        WebhookConfig("http://127.0.0.1/hook", max_queue=0)
    with pytest.raises(ConfigError, match="X-Stdd"):
        WebhookConfig("http://127.0.0.1/hook", headers={"X-Stdd-Signature": "forged"})
    with pytest.raises(ConfigError, match="secret=''"):
        WebhookConfig("http://127.0.0.1/hook", secret="")
    assert "s3cr3t" not in repr(WebhookConfig("http://127.0.0.1/hook", secret="s3cr3t"))
    with pytest.raises(ConfigError, match="apply to a webhook"):
        open_sink(str(tmp_path / "events.jsonl"), timeout=1.0)
    for target, kind in [("-", JsonlSink), (str(tmp_path / "e.jsonl"), JsonlSink)]:
        sink = open_sink(target)
        assert isinstance(sink, kind)
        sink.close()
    sink = open_sink("http://127.0.0.1:9/hook", format="vss", spool_dir=tmp_path / "spool")
    assert isinstance(sink, WebhookSink) and sink.config.format.name == "vss"
    sink.close(0.5)
    assert (tmp_path / "spool" / "lock").is_file()
