"""Where stdd-fast keeps what it builds once per machine, and how it reads and writes there safely.

The root is ``$STDD_CACHE_DIR``, else ``~/.cache/stdd_fast``. Under it: ``onnx/`` (encoder graphs,
:mod:`stdd_fast.predict.encoder_cache`), ``cpu_choice.json`` (the measured CPU backend,
:mod:`stdd_fast.predict.cpu_choice`) and ``askg/`` (answers of chat endpoints, :mod:`stdd_fast.askg.cache`).

A cache only saves work, so it never stops one: an entry that is missing, a special file (a FIFO, a
device, a link to ``/dev/zero``), too big or unreadable reads as absent (and is rebuilt); a cache
that cannot be written (a file where its folder should be, no permission, a read-only or full disk)
means running without it, said once per place with a :class:`CacheWarning`. Outputs the commands
write (results, artifacts, generated files) are checked with :func:`check_not_special`: a FIFO or
a link to a device there is an error, never a write that blocks or vanishes.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

from stdd_fast.errors import OutputError

MAX_RECORD_BYTES = 2**20  # a record (JSON) larger than this is not one of ours
MAX_SAFETENSORS_HEADER = 100 * 2**20  # the safetensors library's own limit
_SAID: set[str] = set()
_PROCESS_FOLDERS: dict[str, Path] = {}


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


def special_kind(path: str | Path) -> str | None:
    """What ``path`` is when it exists as neither a regular file nor a folder (links followed), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def check_not_special(path: str | Path, what: str) -> None:
    """OutputError when ``path`` (``what``: the flag naming it) is a FIFO, device or socket, or a link to one:
    writing there would block (a FIFO waits for a reader) or vanish (``/dev/null``), reading it never end."""
    kind = special_kind(path)
    if kind is not None:
        raise OutputError(f"{what} {path} is {kind}, not a file or folder: write to another path")


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a regular file's contents (links followed); None when absent, special or unreadable (never blocks).

    A safetensors file's JSON header is hashed in one canonical form (keys sorted): the library writes its
    metadata in no fixed order, so the same tensors saved twice would otherwise hash differently.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.set_blocking(fd, True)
        digest = hashlib.sha256()
        try:
            digest.update(_canonical_header(f, os.fstat(fd).st_size))
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        except OSError:
            return None
    return digest.hexdigest()


def _canonical_header(f, size: int) -> bytes:
    """A safetensors header (8-byte length, JSON) read from ``f`` in canonical form; else the bytes read as they are."""
    head = f.read(8)
    length = int.from_bytes(head, "little") if len(head) == 8 else 0
    if not 1 < length <= min(size - 8, MAX_SAFETENSORS_HEADER):
        return head
    text = f.read(length)
    try:
        return head + json.dumps(json.loads(text), sort_keys=True).encode()
    except (ValueError, RecursionError):
        return head + text


def open_regular(path: Path, mode: str = "rb"):
    """``path`` opened for reading when it is a regular file (links followed), else None; never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        found = os.fstat(fd).st_mode
        if not stat.S_ISREG(found):
            os.close(fd)
            kind = "a folder" if stat.S_ISDIR(found) else special_kind(path) or "not a regular file"
            say_once(str(path), f"{path} is {kind}, not a cache entry: ignored (remove it to keep the cache)")
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


def process_folder(name: str) -> Path:
    """A temporary folder standing in for cache folder ``name`` while the cache cannot be written: one per
    process (what is built there is found again by this process), removed when the process exits."""
    if name not in _PROCESS_FOLDERS:
        folder = Path(tempfile.mkdtemp(prefix=f"stdd-{name}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _PROCESS_FOLDERS[name] = folder
    return _PROCESS_FOLDERS[name]


def writable_folder(folder: Path, what: str) -> bool:
    """Whether ``folder`` exists (created) and takes files; if not, a :class:`CacheWarning` once and False."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
        return True
    except OSError as e:
        in_the_way = isinstance(e, FileExistsError | NotADirectoryError)
        reason = "a file is where a folder should be" if in_the_way else e.strerror or type(e).__name__
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
