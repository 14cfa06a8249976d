"""Validated answers on disk, so a rerun or a longer class list asks the endpoint only for what is new.

An entry is keyed by (endpoint, model, prompt version, stage, class) and, for stage 2, the stage 1
record it was asked about (edited triples are asked again). Each is one small JSON file written atomically;
an entry that does not read back as a valid record is a miss (asked again), never an error. Only
validated records are stored: a failure is never cached. A cache that cannot be written raises
:class:`~stdd_fast.errors.OutputError`; the generator reports it once and goes on without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from stdd_fast.errors import OutputError
from stdd_fast.user_cache import cache_root, read_small_file

MAX_ENTRY_BYTES = 2**20


CACHE_ROOT = object()  # cache_dir= default: default_cache_dir(), read when a run starts


def default_cache_dir() -> Path:
    """``askg/`` in the one cache root (``$STDD_CACHE_DIR``, else ``~/.cache/stdd_fast``)."""
    return cache_root() / "askg"


class AnswerCache:
    """Records by key under ``folder`` (created when first written)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()

    def __repr__(self) -> str:
        return f"AnswerCache({str(self.folder)!r})"

    @staticmethod
    def key(endpoint: str, model: str, prompt_version: str, stage: str, label: str, askg: Mapping | None = None) -> str:
        """The entry of one answer: keyed by the endpoint too, since one model name at two servers (another
        quantisation, another build, another model behind the name) answers differently."""
        parts = {
            "endpoint": endpoint,
            "model": model,
            "prompt_version": prompt_version,
            "stage": stage,
            "class": label,
            "askg": askg,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> object | None:
        """The stored record, or None (absent, unreadable, too big, or written under another key)."""
        text = read_small_file(self._path(key), "an answer-cache entry", MAX_ENTRY_BYTES)  # a FIFO reads as absent
        try:
            entry = json.loads(text) if text is not None else None
        except (ValueError, RecursionError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        return entry.get("record")

    def put(self, key: str, record: Mapping) -> None:
        """Store ``record`` (temp file + rename: a reader never sees half an entry)."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"key": key, "record": record}, f, ensure_ascii=False)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise OutputError(
                f"{self.folder}: cannot write the answer cache ({e.strerror or e}); pass another --cache-dir"
            ) from None
