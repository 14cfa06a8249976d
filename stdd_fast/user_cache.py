"""Where stdd-fast keeps what it builds once per machine, and how it reads and writes there safely.

The root is ``$STDD_CACHE_DIR``, else ``~/.cache/stdd_fast``. Under it: ``onnx/`` (encoder graphs,
:mod:`stdd_fast.predict.encoder_cache`), ``cpu_choice.json`` (the measured CPU backend,
:mod:`stdd_fast.predict.cpu_choice`) and ``askg/`` (answers of chat endpoints, :mod:`stdd_fast.askg.cache`).

A cache only saves work, so it never stops one: an entry that is missing, a special file (a FIFO, a
device, a link to ``/dev/zero``), too big or unreadable reads as absent (and is rebuilt); a cache
that cannot be written (a file where its folder should be, no permission, a read-only or full disk)
means running without it, said once per place with a :class:`CacheWarning`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import warnings
from pathlib import Path

MAX_RECORD_BYTES = 2**20  # a record (JSON) larger than this is not one of ours
_SAID: set[str] = set()


class CacheWarning(RuntimeWarning):
    """A cache that cannot be read or written: the work is done without it."""


def cache_root() -> Path:
    root = os.environ.get("STDD_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "stdd_fast"


def say_once(where: str, message: str) -> None:
    """A :class:`CacheWarning` the first time ``where`` has a problem in this process."""
    if where not in _SAID:
        _SAID.add(where)
        warnings.warn(message, CacheWarning, stacklevel=3)


def open_regular(path: Path, mode: str = "rb"):
    """``path`` opened for reading when it is a regular file (links followed), else None; never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            say_once(str(path), f"{path} is not a regular file (a FIFO, device or link to one): ignored, rebuilt")
            return None
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def read_small_file(path: Path, what: str, limit: int = MAX_RECORD_BYTES) -> str | None:
    """The UTF-8 text of ``path``, or None when it is absent, special, over ``limit`` bytes or unreadable."""
    handle = open_regular(path)
    if handle is None:
        return None
    with handle:
        try:
            data = handle.read(limit + 1)
        except OSError:
            return None
    if len(data) > limit:
        say_once(str(path), f"{path}: {what} is over {limit} bytes, not one of ours: ignored, rebuilt")
        return None
    return data.decode("utf-8", errors="replace")


def writable_folder(folder: Path, what: str) -> bool:
    """Whether ``folder`` exists (created) and takes files; if not, a :class:`CacheWarning` once and False."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
        return True
    except OSError as e:
        reason = e.strerror or type(e).__name__
        say_once(
            str(folder),
            f"cannot write {what} in {folder} ({reason}): running without it (set STDD_CACHE_DIR to a writable folder)",
        )
        return False


def write_atomically(path: Path, text: str, what: str) -> bool:
    """Write ``text`` to ``path`` through a temporary file and a rename; False (said once) when it cannot."""
    if not writable_folder(path.parent, what):
        return False
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        return True
    except OSError as e:
        say_once(str(path), f"cannot write {what} at {path} ({e.strerror or e}): running without it")
        return False
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
