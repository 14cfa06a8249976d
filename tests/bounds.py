"""Run a test case in a child process with its time and memory measured and capped.

A reliability case that regresses must fail, not take the machine down: the child watches its own
resident memory and exits at once past ``rss_mb`` (and the parent kills it past ``seconds``).
Each case reports what it used (``[measured] ... s, ... MiB peak``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

_PRELUDE = """
import os, sys, threading, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
_LIMIT = {rss} * 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PEAK = [0]

def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE

def _watch():
    while True:
        r = _rss()
        _PEAK[0] = max(_PEAK[0], r)
        if r > _LIMIT:
            sys.stderr.write(f"MEMORY LIMIT: {{r / 2**20:.0f}} MiB > {rss} MiB\\n")
            sys.stderr.flush()
            os._exit(99)
        time.sleep(0.01)

threading.Thread(target=_watch, daemon=True).start()
import atexit
atexit.register(lambda: sys.stderr.write(f"PEAK RSS MiB {{max(_PEAK[0], _rss()) / 2**20:.0f}}\\n"))
"""


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if not line.startswith("PEAK RSS MiB")]


def run_bounded(name: str, code: str, seconds: float = 120.0, rss_mb: int = 2048, env: dict | None = None) -> Outcome:
    """Run ``code`` (Python source) in a child process; its outcome, time and peak resident memory."""
    program = _PRELUDE.format(rss=rss_mb) + textwrap.dedent(code)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=seconds,
        env={**os.environ, **(env or {})},
        cwd=os.path.dirname(__file__),
    )
    elapsed = time.monotonic() - start
    peaks = [float(line.rsplit(" ", 1)[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK RSS MiB")]
    peak = peaks[-1] if peaks else float("nan")
    print(f"[measured] {name}: {elapsed:.1f} s, {peak:.0f} MiB peak RSS (bounds {seconds:g} s, {rss_mb} MiB)")
    assert proc.returncode != 99, f"{name} went past {rss_mb} MiB: {proc.stderr[-2000:]}"
    return Outcome(proc.returncode, proc.stdout, proc.stderr, elapsed, peak)
