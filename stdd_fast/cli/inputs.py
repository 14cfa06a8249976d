"""Command-line inputs: files, folders (searched for videos), glob patterns and list files, as one list of paths."""

from __future__ import annotations

import glob
from pathlib import Path

from stdd_fast.errors import ConfigError

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".ogv"}
)
LIST_SUFFIXES = frozenset({".txt", ".csv", ".lst"})


def read_list_file(path: Path, prefix: str | None = None) -> list[str]:
    """Paths from a list file: one per line, or the official ``path,label`` / ``path label`` CSV rows.

    Blank lines and ``#`` comments are skipped; relative paths are taken from ``prefix`` (default:
    the list file's folder).
    """
    base = Path(prefix) if prefix is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the list file ({e})") from None
    out = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if "," in text:
            entry = text.rsplit(",", 1)[0].strip()  # path,label
        else:
            parts = text.rsplit(maxsplit=1)
            entry = parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else text  # path label
        p = Path(entry)
        out.append(str(p if p.is_absolute() else base / p))
    return out


def expand_inputs(items: list[str], prefix: str | None = None, unique: bool = True) -> list[str]:
    """Every video the command-line inputs name, in order (each once when ``unique``).

    A folder contributes its video files (by suffix, recursively, sorted); a pattern with ``*``, ``?``
    or ``[`` its matches (sorted); a ``.txt`` / ``.csv`` / ``.lst`` file the paths it lists; anything
    else is taken as a video path (a missing or unreadable one gets its error in the results).
    """
    out: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if not found:
                raise ConfigError(f"{item}: a folder with no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
            out += [str(p) for p in found]
        elif any(c in item for c in "*?[") and not path.exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise ConfigError(f"{item}: the pattern matches no file")
            out += matches
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            out += read_list_file(path, prefix)
        else:
            out.append(item)
    return list(dict.fromkeys(out)) if unique else out
