"""The webhook's spool: the events it has not delivered yet, on disk, in the order they were sent.

A folder, used by one sink at a time (a second one, in this process or another, is refused with an
:class:`~stdd_fast.errors.OutputError`; the lock goes with the process, so a killed one frees it)::

    lock            the holder's pid (``flock``-ed while a sink uses the folder)
    seg-<seq>.log   append-only records, one line each: ``<seq> <crc32> <key> <body>\\n``
    done            the index: one line per record delivered (or dropped), ``<seq>``; the highest is
                    the watermark, everything at or below it is done
    rejected.jsonl  events the endpoint refused for good (a 4xx that retrying cannot fix), kept to read

Records are numbered in send order, written with one ``write`` per batch and ``fsync``-ed by
:meth:`Spool.sync` (the worker calls it after each batch and each delivery). Delivery is in order, so
"what was delivered" is a single watermark. A torn last record (a crash mid-write) fails its CRC and is
cut off when the folder is opened again; the record before it is intact. Segments whose records are all
done are deleted.

Bounded: the records not done yet take at most ``max_bytes`` (plus the one record that crossed the
bound); past it the oldest are dropped, in order, and the caller counts and says so. The disk holds at
most that plus the done part of one segment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from stdd_fast.errors import OutputError
from stdd_fast.user_cache import check_not_special

READ_CHUNK = 1 << 16
INDEX_COMPACT_BYTES = 1 << 16  # rewrite the index as one line once it grows past this


@dataclass(frozen=True)
class Record:
    """One spooled event: its number (send order), key (``<event id> <kind>``), body, and size on disk."""

    seq: int
    key: str
    body: bytes
    size: int


def _line(seq: int, key: str, body: bytes) -> bytes:
    payload = f"{seq} {quote(key, safe='')} ".encode() + body
    return f"{seq} {zlib.crc32(payload):08x} {quote(key, safe='')} ".encode() + body + b"\n"


def _parse(line: bytes) -> Record | None:
    """The record a whole line (newline included) holds, or None when it is torn or corrupt."""
    parts = line[:-1].split(b" ", 3)
    if not line.endswith(b"\n") or len(parts) != 4 or not parts[0].isdigit():
        return None
    seq, crc, key, body = parts
    if f"{zlib.crc32(seq + b' ' + key + b' ' + body):08x}".encode() != crc:
        return None
    return Record(int(seq), unquote(key.decode()), body, len(line))


def _lines(data: bytes):
    """``(offset, line)`` for every line of ``data``; the last one may lack its newline (torn)."""
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        end = len(data) if end < 0 else end + 1
        yield offset, data[offset:end]
        offset = end


def segment_path(folder: Path, first: int) -> Path:
    """The file of the segment whose first record is number ``first``."""
    return folder / f"seg-{first:016d}.log"


def lock_folder(folder: Path) -> int:
    """Create ``folder`` and lock it for one sink (the lock file's descriptor); OutputError when it cannot be used."""
    check_not_special(folder, "spool folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OutputError(
            f"spool folder {folder} cannot be written ({e.strerror or e}): give spool_dir= a writable folder"
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise OutputError(
            f"spool folder {folder} is in use by another sink (pid {holder}): give each sink its own spool_dir="
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


@dataclass
class Scan:
    """What an earlier sink left in a spool folder (see :func:`scan`)."""

    watermark: int = 0  # the last record done
    last: int = 0  # the highest record number used
    pending: int = 0
    pending_bytes: int = 0
    corrupt: int = 0  # records not done whose line is damaged
    head: tuple[int, int] | None = None  # (segment, offset) of the oldest record not done
    segments: list[int] = field(default_factory=list)  # first record of each segment kept, oldest first
    unreadable: set[tuple[int, int]] = field(default_factory=set)  # (segment, offset) of the damaged lines


def scan(folder: Path) -> Scan:
    """Read the index and the segments of ``folder``: cut a torn last record off, delete the segments whose
    records are all done, count the rest."""
    found = Scan()
    with contextlib.suppress(FileNotFoundError):
        for line in (folder / "done").read_bytes().split(b"\n"):
            if line.isdigit():
                found.watermark = max(found.watermark, int(line))
    found.last = found.watermark
    names = sorted((p for p in folder.glob("seg-*.log") if p.stem[4:].isdigit()), key=lambda p: int(p.stem[4:]))
    for path in names:
        first, data = int(path.stem[4:]), path.read_bytes()
        expected = first  # records are numbered one by one: a damaged line is the one after the last good
        for offset, line in _lines(data):
            record = _parse(line)
            if record is None and offset + len(line) == len(data) and path == names[-1]:
                os.truncate(path, offset)  # a torn last write (never acknowledged): cut so appends start clean
                continue
            seq = expected if record is None else record.seq
            expected = seq + 1
            if seq <= found.watermark:
                continue
            found.head = found.head or (first, offset)
            found.last = max(found.last, seq)
            if record is None:
                found.corrupt += 1  # counted once here, passed over when read
                found.unreadable.add((first, offset))
            else:
                found.pending += 1
                found.pending_bytes += record.size
        if found.head is None:
            path.unlink()  # everything in it is done
        else:
            found.segments.append(first)
    return found


class Spool:
    """An on-disk queue of event bodies in ``folder`` (see the module docstring), bounded by ``max_bytes``.

    Thread-safe: appends, reads of the head and acknowledgements take one lock; :meth:`sync` does its
    ``fsync`` outside it, so an append never waits for the disk to flush.
    """

    def __init__(self, folder: str | Path, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(1 << 16, min(1 << 22, max_bytes // 8))
        self._lock = threading.Lock()
        self._lock_fd = lock_folder(self.folder)
        self._dirty: set[str] = set()
        found = scan(self.folder)
        self.pending, self.pending_bytes, self.corrupt = found.pending, found.pending_bytes, found.corrupt
        self.recovered = found.pending
        self._segments, self._head, self._unreadable = found.segments, found.head, found.unreadable
        self._next_seq, self._watermark = found.last + 1, found.watermark
        self._retired: list[int] = []  # descriptors of full segments, to fsync and close at the next sync
        self._peeked: Record | None = None
        self._read_fd: tuple[int, int] | None = None  # (segment, fd) open for reading the head
        self._tail_fd: int | None = None
        self._tail_size = 0
        if self._segments:
            self._tail_fd = os.open(self._segment(self._segments[-1]), os.O_WRONLY | os.O_APPEND)
            self._tail_size = os.fstat(self._tail_fd).st_size
        self._index_fd = os.open(self.folder / "done", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._index_size = os.fstat(self._index_fd).st_size

    def _segment(self, first: int) -> Path:
        return segment_path(self.folder, first)

    # -- writing ---------------------------------------------------------------------------------

    def append(self, items: list[tuple[str, bytes]]) -> tuple[list[int], int]:
        """Write ``(key, body)`` records after the others, in order; return their numbers and how many of the
        oldest records were dropped to stay within ``max_bytes``. OSError when the disk refuses (nothing
        written then: a partial write is cut off)."""
        with self._lock:
            if self._tail_fd is None or self._tail_size >= self.segment_bytes:
                self._new_segment()
            seqs = list(range(self._next_seq, self._next_seq + len(items)))
            data = b"".join(_line(seq, key, body) for seq, (key, body) in zip(seqs, items, strict=True))
            try:
                written = os.write(self._tail_fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes): disk full?")
            except OSError:
                self._cut_back()
                raise
            self._tail_size += len(data)
            self._next_seq += len(items)
            self._head = self._head or (self._segments[-1], self._tail_size - len(data))
            self.pending += len(items)
            self.pending_bytes += len(data)
            self._dirty.add("tail")
            dropped = 0
            with contextlib.suppress(OSError):  # the head cannot be read just now: the bound waits for the next append
                while self.pending_bytes > self.max_bytes and self.pending > 1 and (oldest := self._peek()) is not None:
                    self._consume(oldest)
                    dropped += 1
            return seqs, dropped

    def _new_segment(self) -> None:
        fd = os.open(self._segment(self._next_seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self._tail_fd is not None:
            self._retired.append(self._tail_fd)  # fsync-ed by the next sync(), never by an append
        self._tail_fd, self._tail_size = fd, 0
        self._segments.append(self._next_seq)
        self._dirty.add("folder")

    def _cut_back(self) -> None:
        """After a failed write: remove whatever part of it landed, or start a new segment if that fails too."""
        try:
            os.ftruncate(self._tail_fd, self._tail_size)
        except OSError:
            self._tail_size = self.segment_bytes  # the next append opens a fresh segment

    def keep_rejected(self, key: str, body: bytes, why: str) -> bool:
        """Append an event the endpoint refused for good to ``rejected.jsonl`` (fsync-ed), to be read and
        re-sent by hand; False when the folder refuses the write."""
        line = json.dumps({"key": key, "why": why, "body": body.decode(errors="replace")})
        try:
            with open(self.folder / "rejected.jsonl", "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            return False
        return True

    # -- reading and acknowledging -----------------------------------------------------------------

    def head(self) -> Record | None:
        """The oldest record not done yet (read from disk), or None when there is none."""
        with self._lock:
            return self._peek()

    def done(self, seq: int) -> None:
        """Mark record ``seq``, the head, delivered."""
        with self._lock:
            record = self._peek()
            if record is None or record.seq != seq:
                raise ValueError(f"record {seq} is not the head of the spool {self.folder}")
            self._consume(record)

    def _peek(self) -> Record | None:
        """The head record (cached until it is done); damaged lines are passed over and counted in ``corrupt``."""
        while self._peeked is None and self.pending:
            segment, offset = self._head
            line = self._read_line(segment, offset)
            record = _parse(line) if line else None
            if record is not None:
                self._peeked = record
            elif line:
                if (segment, offset) not in self._unreadable:  # damaged after it was written and counted
                    self.corrupt += 1
                    self.pending -= 1
                    self.pending_bytes -= len(line)
                self._head = (segment, offset + len(line))
            elif segment != self._segments[-1]:
                self._leave_segment(segment)  # end of this segment: the next one holds the rest
            else:  # the last segment ends before the records counted in it (cut short on disk): they are lost
                self.corrupt += self.pending
                self.pending = self.pending_bytes = 0
        return self._peeked

    def _read_line(self, segment: int, offset: int) -> bytes:
        if self._read_fd is None or self._read_fd[0] != segment:
            if self._read_fd is not None:
                os.close(self._read_fd[1])
            self._read_fd = (segment, os.open(self._segment(segment), os.O_RDONLY))
        fd, data = self._read_fd[1], b""
        while b"\n" not in data:
            chunk = os.pread(fd, READ_CHUNK, offset + len(data))
            if not chunk:
                break
            data += chunk
        end = data.find(b"\n")
        return data if end < 0 else data[: end + 1]

    def _consume(self, record: Record) -> None:
        segment, offset = self._head
        self._head, self._peeked = (segment, offset + record.size), None
        self.pending -= 1
        self.pending_bytes -= record.size
        self._watermark = record.seq
        self._write_index(f"{record.seq}\n".encode())
        if not self.pending:
            self._head = None
            if segment != self._segments[-1]:
                self._leave_segment(segment)

    def _leave_segment(self, segment: int) -> None:
        """The head moved past ``segment``: delete it (all its records are done) and go to the next one."""
        if self._read_fd is not None and self._read_fd[0] == segment:
            os.close(self._read_fd[1])
            self._read_fd = None
        with contextlib.suppress(OSError):  # left behind, it is deleted when the folder is next opened
            self._segment(segment).unlink()
        self._segments.remove(segment)
        self._dirty.add("folder")
        if self.pending:
            self._head = (self._segments[0], 0)

    def _write_index(self, entry: bytes) -> None:
        with contextlib.suppress(OSError):  # a lost index line costs a duplicate after a restart, never a loss
            os.write(self._index_fd, entry)
        self._index_size += len(entry)
        self._dirty.add("index")

    # -- durability --------------------------------------------------------------------------------

    def sync(self) -> None:
        """``fsync`` what was written since the last call (records, the index, the folder's entries), on
        duplicated descriptors outside the lock: appends go on while the disk flushes. Rewrites the index as one
        line once it has grown past ``INDEX_COMPACT_BYTES``."""
        if self._index_size > INDEX_COMPACT_BYTES:
            self._compact_index()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            retired, self._retired = self._retired, []
            wanted = [fd for name, fd in (("tail", self._tail_fd), ("index", self._index_fd)) if name in dirty]
            fds = retired + [os.dup(fd) for fd in wanted if fd is not None]
            if "folder" in dirty:
                fds.append(os.open(self.folder, os.O_RDONLY))
        for fd in fds:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _compact_index(self) -> None:
        """Replace the index by its watermark: written and fsync-ed aside, then renamed over it."""
        tmp = self.folder / "done.tmp"
        with self._lock:
            watermark = self._watermark
        with open(tmp, "wb") as f:
            f.write(f"{watermark}\n".encode())
            f.flush()
            os.fsync(f.fileno())
        with self._lock:
            os.replace(tmp, self.folder / "done")
            os.close(self._index_fd)
            self._index_fd = os.open(self.folder / "done", os.O_WRONLY | os.O_APPEND)
            self._index_size = 0
            if self._watermark != watermark:  # records done meanwhile: their lines went to the old file
                self._write_index(f"{self._watermark}\n".encode())
            self._dirty.add("folder")

    def close(self) -> None:
        """Flush to disk and let another sink use the folder (again: nothing)."""
        if self._lock_fd is None:
            return
        self.sync()
        with self._lock:
            for fd in (self._tail_fd, self._index_fd, self._read_fd[1] if self._read_fd else None, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._tail_fd = self._index_fd = self._read_fd = self._lock_fd = None
