"""Command-line inputs: files, folders (searched for videos), glob patterns and list files, as one list of paths."""

from __future__ import annotations

import csv
import glob
from pathlib import Path

from stdd_fast.errors import ConfigError

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".ogv"}
)
LIST_SUFFIXES = frozenset({".txt", ".csv", ".lst"})


def read_list_file(path: Path, prefix: str | None = None) -> list[str]:
    """The paths a list file names, relative ones taken from ``prefix`` (default: the list file's folder).

    ``.csv``: CSV records, quotes honoured (``"a,b.mp4",3`` is the path ``a,b.mp4``): the first field is the
    path, the fields after it (the official ``path,label``) are not read. A record whose second field is a
    video file name too (``a,b.mp4`` unquoted) is refused, naming its line: quote that path.
    ``.txt`` / ``.lst``: one path per line, kept whole (spaces and commas belong to the name).
    In both, a path followed by a space and an integer label (PySlowFast's ``path label``) is that path,
    unless the whole text names an existing file; blank lines and ``#`` comments are skipped.
    """
    base = Path(prefix) if prefix is not None else path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the list file ({e})") from None
    lines = text.splitlines()
    if path.suffix.lower() == ".csv":
        rows = csv.reader(lines)
        entries = [(n, row[0].strip(), row[1:]) for n, row in enumerate(rows, 1) if row and row[0].strip()]
    else:
        entries = [(n, line.strip(), []) for n, line in enumerate(lines, 1) if line.strip()]
    out = []
    for number, entry, rest in entries:
        if entry.startswith("#"):
            continue
        if rest and Path(rest[0].strip()).suffix.lower() in VIDEO_SUFFIXES:
            raise ConfigError(
                f"{path}, line {number}: {','.join([entry, *rest])!r} splits at a comma into {entry!r} and "
                f'{rest[0].strip()!r}; quote a path that holds a comma ("a,b.mp4",label)'
            )
        words = entry.rsplit(maxsplit=1)
        if len(words) == 2 and words[1].lstrip("-").isdigit() and not (base / entry).exists():
            entry = words[0]  # path label
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


def missing_files(items: list[str]) -> list[str]:
    """The local paths among ``items`` that do not exist (a URL such as ``rtsp://...`` is not checked here)."""
    return [item for item in items if "://" not in item and not Path(item).exists()]


def labelled_inputs(pairs: list[str], flag: str) -> dict[str, list[str]]:
    """``CLASS=INPUT`` values of a repeatable ``flag`` (``--example``, ``--positives``) -> {class: paths}."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        label, sep, inputs = pair.partition("=")
        if not sep or not label.strip() or not inputs.strip():
            raise ConfigError(f"{flag} {pair!r}: write CLASS=INPUT, e.g. 'forklift reversing=clips/forklift/*.mp4'")
        out.setdefault(label.strip(), []).extend(expand_inputs([inputs.strip()]))
    return out
