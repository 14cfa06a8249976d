"""The local Ray a driver started dies with the driver, however the driver ends (``kill -9`` included).

Ray ties its core processes to the driver, but not all of them: its agents outlive a killed driver by a
minute or more, and a driver that dies mid-job leaves them behind. So before it starts a local Ray the
driver marks its environment with a token (``STDD_BATCH_RAY=<token>``), which every Ray process it
starts inherits, and starts this module as a small watcher holding a pipe from the driver. While the
driver lives, the watcher notes its descendants that carry the token (a process may overwrite its
environment later: Ray retitles its agents); when the pipe closes (the driver ended, or stopped its
Ray), it kills them, and any other process carrying the token: exactly that Ray, nothing else.

Run as a script (``python -I reaper.py TOKEN``): it imports nothing but the standard library.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import uuid
from pathlib import Path

MARK = "STDD_BATCH_RAY"
POLL = 0.5  # seconds between looks at the driver's descendants


def _carries(pid: int, token: str) -> bool:
    """Whether process ``pid``'s environment holds ``MARK=token`` (False when gone or another user's)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{MARK}={token}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ... starttime
        except OSError:
            continue
        found[int(entry)] = (int(fields[1]), fields[19])
    return found


def marked_below(root: int, token: str, known: dict[int, str]) -> None:
    """Add the processes below ``root`` carrying the token to ``known`` (pid -> start time)."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            todo.append(pid)
            if pid not in known and pid != os.getpid() and _carries(pid, token):
                known[pid] = processes[pid][1]


def reap(token: str, known: dict[int, str]) -> int:
    """SIGKILL the ``known`` processes still running (the same start time: not a reused pid) and every other
    process carrying the token; how many there were."""
    alive = {pid: start for pid, (_, start) in _processes().items() if pid != os.getpid()}
    pids = {pid for pid, start in known.items() if alive.get(pid) == start}
    pids |= {pid for pid in alive if _carries(pid, token)}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    return len(pids)


class Reaper:
    """Marks this process's environment for the Ray it is about to start, and starts the watcher.

    :meth:`started` (once Ray runs) takes the mark off this process again, so nothing it starts later
    carries it; :meth:`stop` (after ``ray.shutdown()``) ends the watch, killing what the shutdown left;
    the driver's death ends it the same way. Linux only (``/proc``); elsewhere a no-op.
    """

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self._watcher: subprocess.Popen | None = None
        if not Path("/proc/self/environ").exists():
            return
        os.environ[MARK] = self.token
        env = {k: v for k, v in os.environ.items() if k != MARK}
        script = [sys.executable, "-I", str(Path(__file__).resolve()), self.token]
        # its own session: a Ctrl-C for the driver's process group does not end the watch early
        self._watcher = subprocess.Popen(
            script, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip

    def started(self) -> None:
        os.environ.pop(MARK, None)  # Ray's processes have it (its workers inherit it from the raylet)

    def stop(self) -> None:
        self.started()
        if self._watcher is None:
            return
        self._watcher.stdin.close()  # the watcher reads EOF: it reaps and exits
        self._watcher.wait(timeout=30)
        self._watcher = None


def main() -> None:
    token, driver, known = sys.argv[1], os.getppid(), {}
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], POLL)
        if ready and not os.read(sys.stdin.fileno(), 4096):  # EOF: the driver closed the pipe, or died
            break
        marked_below(driver, token, known)
    reap(token, known)


if __name__ == "__main__":
    main()
