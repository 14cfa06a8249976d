"""The output folder of a corpus job: each run's Parquet files, what a resumed job skips, and the
consolidation that leaves every video's row in it exactly once.

    DIR/_stdd_batch.json                the settings that decide the rows (a resumed job must match them)
    DIR/run-<stamp>/*.parquet           one run's rows, written by Ray Data as its blocks finish
    DIR/results-<stamp>/part-*.parquet  consolidated rows: every path once
    DIR/.results-<stamp>/               a consolidation being written (hidden: Parquet readers skip names
                                        starting with "." or "_", and so does this module)

A stamp is the UTC time to the microsecond and the pid, so sorting by stamp orders the sources in
time. Consolidating reads every readable file in stamp order and keeps, per path, its latest
successful row, else its latest failed row; writes them to a hidden folder; renames that folder to
``results-<stamp>`` (one atomic rename); and only then removes the sources it read. Killed before
the rename, the sources are untouched (the hidden folder is ignored, and removed next time); killed
after it, the new results lie beside sources whose rows they already hold, and the next
consolidation (the end of the next ``--resume``) picks the same rows and removes the rest: once it
completes, every path is in DIR exactly once. A file a killed run left truncated cannot be read: it
is skipped, reported, and removed with its run.

DIR holds nothing else, so the documented read, ``pandas.read_parquet(DIR)``, reads every row once
and nothing but rows: a job refuses a folder holding files it did not write (named in the error),
and a Parquet file in its folders whose columns are not the results' is never read as rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from stdd_fast.batch.config import absolute
from stdd_fast.batch.rows import result_schema
from stdd_fast.deps import require
from stdd_fast.errors import ConfigError, OutputError
from stdd_fast.user_cache import check_not_special

JOB_FILE = "_stdd_batch.json"
RUN, RESULTS, PENDING = "run-", "results-", ".results-"
PART_ROWS = 100_000  # rows per consolidated file


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + f"-{os.getpid()}"


def _stamp_of(folder: Path) -> str:
    return folder.name.split("-", 1)[1]


@dataclass
class Scan:
    """The readable Parquet files of DIR (in stamp order), those it had to skip, and the row kept per path."""

    files: list[Path] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "FILE: why", for the summary
    foreign: list[str] = field(default_factory=list)  # "FILE: why" of files in DIR stdd batch did not write
    left: set[Path] = field(default_factory=set)  # those files: consolidation leaves them where they are
    # path -> (ok, file number, row number) of the row kept: the latest successful, else the latest failed
    kept: dict[str, tuple[bool, int, int]] = field(default_factory=dict)

    @property
    def succeeded(self) -> set[str]:
        return {p for p, (ok, _, _) in self.kept.items() if ok}


def results_columns(schema) -> bool:
    """Whether a Parquet schema is the results table's (its columns and types; embeddings optional)."""
    pa = require("pyarrow")
    expected = {f.name: f.type for f in result_schema((1, 1, 1))}
    found = {f.name: f.type for f in schema}
    found.setdefault("embeddings", pa.list_(pa.float32()))
    return found == expected


def _not_results(file: Path, schema) -> str:
    return f"{file}: its columns ({', '.join(schema.names[:6])}) are not the results'"


def _ignored(name: str) -> bool:
    """Names Parquet readers skip (hidden, or starting with "_")."""
    return name.startswith((".", "_"))


def count_rows(file: Path) -> tuple[int, int] | None:
    """(rows, failed rows) of a finished Parquet file of results; None while it cannot be read (being written)."""
    pq = require("pyarrow.parquet")
    try:
        errors = pq.ParquetFile(file).read(columns=["error_type"]).column(0)
    except Exception:  # not finished yet, or truncated by a kill
        return None
    return len(errors), len(errors) - errors.null_count


class OutputFolder:
    """DIR: where each run writes (:meth:`new_run`), what it holds (:meth:`scan`), and :meth:`consolidate`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(absolute(path))

    def prepare(self, settings: dict, resume: bool) -> None:
        """Create DIR, or check that the job it holds is this one (``resume``); OutputError / ConfigError if not.

        The job's settings are written by :meth:`record` once its predictor was built, so a job that
        failed before (a bad checkpoint) leaves DIR free for the corrected command.
        """
        check_not_special(self.path, "--output")
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"output {self.path} is a file; name a folder for the Parquet results")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"output {self.path}: cannot create the folder ({e.strerror or e})") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise OutputError(f"output {self.path}: no permission to write there; name another folder")
        job = self.path / JOB_FILE
        if (self._sources() or job.exists()) and not resume:
            raise ConfigError(
                f"output {self.path} holds the results of an earlier job: pass --resume to finish that job "
                "(its successful videos are skipped), or name an empty folder"
            )
        if job.exists():
            self._check_same_job(job, settings)
        foreign = self.foreign()
        if foreign:
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise ConfigError(
                f"output {self.path} holds files stdd batch did not write ({'; '.join(foreign[:5])}{more}): "
                f"pandas.read_parquet({str(self.path)!r}) would read them with the results; move them out, or "
                "name an empty folder"
            )

    def _check_same_job(self, job: Path, settings: dict) -> None:
        """ConfigError naming what differs when the job recorded in ``job`` is not this one."""
        try:
            check_not_special(job, "the job file")
            recorded = json.loads(job.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{job}: not a job file stdd batch can read ({e}); name another output folder") from None
        differ = [k for k in sorted(settings.keys() | recorded.keys()) if settings.get(k) != recorded.get(k)]
        if differ:
            said = "; ".join(_difference(k, recorded.get(k), settings.get(k)) for k in differ)
            raise ConfigError(
                f"output {self.path} holds a job with other settings ({said}): its rows would mix with this job's; "
                "resume it with the same settings, or name another output folder"
            )

    def record(self, settings: dict) -> None:
        """Write the job's settings (once; :meth:`prepare` checked any that were there)."""
        job = self.path / JOB_FILE
        if not job.exists():
            tmp = self.path / f".{JOB_FILE}.{os.getpid()}"
            tmp.write_text(json.dumps({"stdd_batch": 1, "settings": settings}, indent=1), encoding="utf-8")
            os.replace(tmp, job)

    def new_run(self) -> Path:
        """The folder a new run writes into (created by Ray Data's writer)."""
        return self.path / f"{RUN}{stamp()}"

    def _sources(self) -> list[Path]:
        found = [d for d in self.path.iterdir() if d.is_dir() and d.name.startswith((RUN, RESULTS))]
        return sorted(found, key=_stamp_of)

    def foreign(self) -> list[str]:
        """What in DIR stdd batch did not write and a Parquet reader of DIR would read: "PATH: what it is"."""
        pq = require("pyarrow.parquet")
        found = []
        for entry in sorted(self.path.iterdir()):
            if _ignored(entry.name):
                continue
            if not (entry.is_dir() and not entry.is_symlink() and entry.name.startswith((RUN, RESULTS))):
                found.append(f"{entry}: not a results folder of stdd batch")
                continue
            for file in sorted(entry.rglob("*")):
                if any(_ignored(part) for part in file.relative_to(entry).parts) or file.is_dir():
                    continue
                if file.suffix != ".parquet" or file.is_symlink() or not file.is_file():
                    found.append(f"{file}: not a Parquet file of results")
                    continue
                try:
                    schema = pq.read_schema(file)
                except Exception:  # truncated by a killed run: skipped and removed with its run
                    continue
                if not results_columns(schema):
                    found.append(_not_results(file, schema))
        return found

    def scan(self) -> Scan:
        """Every readable results file under DIR and the row kept per path (reads only ``path`` and ``error_type``)."""
        pq = require("pyarrow.parquet")
        scan = Scan()
        for source in self._sources():
            for file in sorted(source.glob("*.parquet")):
                try:
                    reader = pq.ParquetFile(file)
                    if not results_columns(reader.schema_arrow):  # planted, or another program's: never rows
                        scan.foreign.append(_not_results(file, reader.schema_arrow))
                        scan.left.add(file)
                        continue
                    index = reader.read(columns=["path", "error_type"])
                except Exception as e:  # truncated by a killed run: its videos are run again
                    scan.unreadable.append(f"{file}: {type(e).__name__}: {' '.join(str(e).split())}")
                    continue
                number = len(scan.files)
                scan.files.append(file)
                errors = index.column("error_type").is_null().to_pylist()
                for row, (path, ok) in enumerate(zip(index.column("path").to_pylist(), errors, strict=True)):
                    old = scan.kept.get(path)
                    if old is None or ok or not old[0]:  # a later success wins; a later failure only over a failure
                        scan.kept[path] = (ok, number, row)
        return scan

    def consolidate(self) -> Scan:
        """Rewrite DIR so it holds each path's kept row once (see the module docstring); returns the scan."""
        pq = require("pyarrow.parquet")
        scan, sources = self.scan(), self._sources()
        rows_of: dict[int, list[int]] = {}
        for _, number, row in scan.kept.values():
            rows_of.setdefault(number, []).append(row)
        done = stamp()
        pending, final = self.path / f"{PENDING}{done}", self.path / f"{RESULTS}{done}"
        pending.mkdir()
        with _Parts(pending) as parts:
            for number, file in enumerate(scan.files):
                keep = sorted(rows_of.get(number, ()))
                if not keep:
                    continue
                reader, start, i = pq.ParquetFile(file), 0, 0
                for batch in reader.iter_batches(batch_size=4096):  # bounded memory, embeddings included
                    end, picked = start + batch.num_rows, []
                    while i < len(keep) and keep[i] < end:
                        picked.append(keep[i] - start)
                        i += 1
                    if picked:
                        parts.write(batch.take(picked), reader.schema_arrow)
                    start = end
        os.replace(pending, final)  # the commit point: from here on DIR's rows are the consolidated ones
        for old in [*sources, *self.path.glob(f"{PENDING}*")]:
            if old != final:
                _remove(old, scan.left)
        scan.files = sorted(final.glob("*.parquet"))
        return scan


def _remove(folder: Path, left: set[Path]) -> None:
    """Remove a consolidated source folder, but none of the ``left`` files (not written by stdd batch)."""
    if not any(file in left for file in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in sorted(folder.rglob("*"), reverse=True):  # children before their folders
        if entry in left:
            continue
        with contextlib.suppress(OSError):
            entry.rmdir() if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def _difference(key: str, there: object, now: object) -> str:
    """One setting a resumed job differs in, for the error (a fingerprint as "the contents of X changed")."""
    if key.endswith("_sha256") and there is not None and now is not None:
        what = key.removesuffix("_sha256")
        return f"the contents of the {what} file changed (sha256 {there[:12]} there, {now[:12]} now)"
    return f"{key}: {there!r} there, {now!r} now"


class _Parts:
    """Consolidated rows as ``part-NNNNN.parquet`` files of at most PART_ROWS rows, in one schema."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.number, self.rows, self.writer, self.schema = folder, 0, 0, None, None

    def write(self, batch, schema) -> None:
        pa, pq = require("pyarrow"), require("pyarrow.parquet")
        if self.schema is None:
            self.schema = schema.remove_metadata()  # Ray's per-file metadata; the fields keep theirs
        if self.writer is None or self.rows >= PART_ROWS:
            self.close()
            self.writer = pq.ParquetWriter(self.folder / f"part-{self.number:05d}.parquet", self.schema)
            self.number, self.rows = self.number + 1, 0
        self.writer.write_table(pa.Table.from_batches([batch]).cast(self.schema))
        self.rows += batch.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> _Parts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
