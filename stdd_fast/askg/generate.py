"""``generate_askg``: ASKG records (and, with ``xprompt=True``, their prompt clauses) for any class list.

Where each class's record comes from, first match wins:

1. **kept**: the output file of an earlier run into the same path (same model and prompt version)
   holds a record for it that still validates: nothing is asked (a rerun after a crash, or with a
   longer class list, asks only for what is missing; hand edits survive);
2. **cached**: the answer cache holds it (:mod:`stdd_fast.askg.cache`);
3. **asked**: the endpoint is asked (stage 1, then stage 2 with ``xprompt=True``); every answer is
   parsed and validated (:mod:`stdd_fast.askg.schema`). An unusable answer is asked again, saying
   what was wrong, up to ``answer_retries`` times; then the class is reported failed.

A failed class never stops the others: it is named in :attr:`AskgRun.failed` with the reason,
and the output file holds every other class. An error that every request would repeat (HTTP
401/403/404, or an endpoint that cannot be reached after the retries) reports the classes not yet
asked at once instead of each waiting out its retries. Rerunning the same command resumes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stdd_fast.askg import output
from stdd_fast.askg.cache import CACHE_ROOT, AnswerCache, default_cache_dir
from stdd_fast.askg.client import ChatError
from stdd_fast.askg.messages import (
    MAX_TOKENS,
    PROMPT_VERSION,
    TEMPERATURE,
    correction,
    parse_answer,
    stage1_messages,
    stage2_messages,
)
from stdd_fast.askg.schema import XPROMPT_FIELDS, AnswerError, check_askg, check_class_names, check_xprompt
from stdd_fast.checks import check_int
from stdd_fast.errors import ConfigError, OutputError, StddError
from stdd_fast.terminal import progress_bar

MAX_CONCURRENCY = 64


class Chat(Protocol):
    """What generation needs of a client (:class:`~stdd_fast.askg.client.ChatClient` is one)."""

    endpoint: str
    model: str

    @property
    def requests(self) -> int: ...

    def complete(
        self, messages, *, temperature: float, max_tokens: int, stop: threading.Event | None
    ) -> str | None: ...


@dataclass(frozen=True)
class AskgRun:
    """What one :func:`generate_askg` call did.

    records: class -> record, in class order (what the output file holds). failed: class -> why it
    has no record. asked / cached / kept: classes whose record came from the endpoint, the cache,
    or the earlier output file. requests: HTTP requests sent. output: the file written (None: none
    asked for, or nothing to write). notes: what the caller should tell the user (a file not
    resumed, a cache that could not be written, records of the old file that did not validate).
    """

    records: dict[str, dict]
    failed: dict[str, str]
    asked: int
    cached: int
    kept: int
    requests: int
    output: Path | None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed


def _key(client: Chat, stage: str, name: str, askg: Mapping | None = None) -> str:
    return AnswerCache.key(client.endpoint, client.model, PROMPT_VERSION, stage, name, askg)


def _check(stage: str, name: str, askg: Mapping | None = None) -> Callable[[object], dict]:
    """The validation of a ``stage`` answer for class ``name`` (stage 2: about its stage 1 record ``askg``)."""
    return (lambda data: check_askg(data, name)) if stage == "askg" else (lambda data: check_xprompt(data, name, askg))


def _from_cache(cache: AnswerCache | None, client: Chat, stage: str, name: str, askg: Mapping | None = None):
    """The cached record of ``stage`` for ``name`` that still validates (None: absent, or of an older schema)."""
    hit = cache.get(_key(client, stage, name, askg)) if cache is not None else None
    try:
        return None if hit is None else _check(stage, name, askg)(hit)
    except AnswerError:
        return None


class _Asker:
    """One class's record from the cache or the endpoint; runs on the worker threads."""

    def __init__(self, client: Chat, cache: AnswerCache | None, answer_retries: int, notes: list[str]) -> None:
        self.client, self.cache, self.answer_retries, self.notes = client, cache, answer_retries, notes
        self.stop = threading.Event()
        self.why_stopped = ""
        self._lock = threading.Lock()

    def halt(self, why: str) -> None:
        with self._lock:
            self.why_stopped = self.why_stopped or why
        self.stop.set()

    def _note(self, text: str) -> None:
        with self._lock:
            if text not in self.notes:
                self.notes.append(text)

    def record(self, name: str, stage: str, askg: Mapping | None = None) -> tuple[dict, bool]:
        """(validated record of ``stage`` for class ``name``, whether it came from the cache)."""
        check = _check(stage, name, askg)
        messages = stage1_messages(name) if stage == "askg" else stage2_messages(name, askg)
        hit = _from_cache(self.cache, self.client, stage, name, askg)
        if hit is not None:
            return hit, True
        problem, asking = "", messages
        for _ in range(self.answer_retries + 1):
            if self.stop.is_set():
                raise ChatError(f"not asked: {self.why_stopped}; rerun to resume")
            answer = None
            try:
                answer = self.client.complete(
                    asking, temperature=TEMPERATURE[stage], max_tokens=MAX_TOKENS, stop=self.stop
                )
                record = check(parse_answer(answer))
            except AnswerError as e:
                problem = str(e)
                asking = correction(messages, stage, name, answer, problem)
                continue
            except ChatError as e:
                if e.fatal:
                    self.halt(str(e))
                raise
            if self.cache is not None:
                try:
                    self.cache.put(_key(self.client, stage, name, askg), record)
                except OutputError as e:
                    self._note(f"{e} (going on without it)")
            return record, False
        raise AnswerError(f"{stage} stage: no usable answer in {self.answer_retries + 1} attempts; the last: {problem}")

    def one(self, name: str, kept: tuple[dict | None, dict | None], xprompt: bool) -> tuple[dict, str]:
        """(the class's full record, where it came from: "kept" | "cached" | "asked")."""
        askg, clauses = kept
        how = "kept"
        if askg is None:
            askg, hit = self.record(name, "askg")
            how = "cached" if hit else "asked"
        if not xprompt:
            return askg, how
        if clauses is None:
            clauses, hit = self.record(name, "xprompt", askg)
            how = "asked" if how == "asked" or not hit else "cached"
        return {**askg, **{f: clauses[f] for f in XPROMPT_FIELDS}}, how


def _kept(entry: object, name: str, xprompt: bool) -> tuple[dict | None, dict | None, str]:
    """(stage 1 record, stage 2 clauses, a note) from the earlier output file's entry for ``name``."""
    if entry is None:
        return None, None, ""
    try:
        askg = check_askg(entry, name)
    except AnswerError as e:
        return None, None, f"the earlier record of {name!r} does not validate ({e}): asked again"
    if not xprompt:
        return askg, None, ""
    try:
        return askg, check_xprompt(entry, name, askg), ""
    except AnswerError:
        return askg, None, ""  # stage 2 not run yet for it (or its clauses no longer fit the triples)


def _each_on_threads(work: Callable[[str], tuple], names: list[str], concurrency: int):
    """``(name, work(name), None)`` or ``(name, None, error)`` per name as each finishes, ``concurrency`` at once.

    Daemon threads: Ctrl-C ends the command at once rather than after the requests in flight (each is
    bounded by the client's timeout; the classes not started are reported "not asked" by the asker).
    """
    todo: queue.SimpleQueue = queue.SimpleQueue()
    finished: queue.SimpleQueue = queue.SimpleQueue()
    for name in names:
        todo.put(name)

    def worker() -> None:
        while True:
            try:
                name = todo.get_nowait()
            except queue.Empty:
                return
            try:
                finished.put((name, work(name), None))
            except BaseException as e:  # handed to the caller's thread, which decides
                finished.put((name, None, e))

    for i in range(min(concurrency, len(names))):
        threading.Thread(target=worker, daemon=True, name=f"stdd-askg-{i}").start()
    for _ in names:
        while True:  # poll, so that Ctrl-C reaches the caller on every platform
            try:
                yield finished.get(timeout=0.25)
                break
            except queue.Empty:
                continue


@dataclass(frozen=True)
class PlannedRequest:
    """What :func:`generate_askg` would do for one class: ``how`` it gets the record ("kept" from the output file,
    "cached", or "asked"), and for "asked" the first request: its ``stage`` and the JSON ``body`` POSTed to
    ``<endpoint>/chat/completions``."""

    label: str
    how: str
    stage: str | None = None
    body: dict | None = None


def _body(model: str, stage: str, messages: list[dict]) -> dict:
    """The chat-completions request body of one stage (as :meth:`ChatClient.complete` sends it)."""
    return {"model": model, "messages": messages, "temperature": TEMPERATURE[stage], "max_tokens": MAX_TOKENS}


def plan_requests(
    classes: Sequence[str],
    client: Chat,
    output_path: str | Path | None = None,
    *,
    xprompt: bool = False,
    cache_dir: str | Path | object | None = CACHE_ROOT,
) -> list[PlannedRequest]:
    """What :func:`generate_askg` with the same arguments would send, without sending anything (``--dry-run``).

    Per class, in order: nothing when the earlier output file or the answer cache holds its record, else the
    first request it needs. That is stage 1's, or with ``xprompt`` and stage 1 known, stage 2's; stage 2 of a
    class asked now is built from its stage 1 answer, so it follows that answer and is not shown.
    """
    names = check_class_names(list(classes), "classes") if not isinstance(classes, str) else None
    if not names:
        raise ConfigError(f"classes={classes!r}: give a non-empty list of class names")
    path = Path(output_path) if output_path is not None else None
    earlier, _ = output.previous(path, client.model, PROMPT_VERSION) if path is not None else ({}, "")
    cache_dir = default_cache_dir() if cache_dir is CACHE_ROOT else cache_dir
    cache = AnswerCache(cache_dir) if cache_dir is not None else None

    plan = []
    for name in names:
        askg, clauses, _ = _kept(earlier.get(name), name, xprompt)
        how = "kept"
        if askg is None:
            askg, how = _from_cache(cache, client, "askg", name), "cached"
        if askg is None:
            plan.append(PlannedRequest(name, "asked", "askg", _body(client.model, "askg", stage1_messages(name))))
        elif xprompt and clauses is None:  # stage 1 known: stage 2's request is known too
            if _from_cache(cache, client, "xprompt", name, askg) is None:
                body = _body(client.model, "xprompt", stage2_messages(name, askg))
                plan.append(PlannedRequest(name, "asked", "xprompt", body))
            else:
                plan.append(PlannedRequest(name, "cached"))
        else:
            plan.append(PlannedRequest(name, how))
    return plan


def _progress(total: int, progress: bool | None, model: str):
    return progress_bar(total, progress if total else False, f"ASKG from {model}", "class")


def generate_askg(
    classes: Sequence[str],
    client: Chat,
    output_path: str | Path | None = None,
    *,
    xprompt: bool = False,
    concurrency: int = 4,
    answer_retries: int = 2,
    cache_dir: str | Path | object | None = CACHE_ROOT,
    progress: bool | None = None,
) -> AskgRun:
    """ASKG records for ``classes`` from ``client``'s chat model (see the module docstring for what runs).

    classes: names in label order (the file's order: ``build_classifier`` pairs by position).
    client: a :class:`~stdd_fast.askg.client.ChatClient` (or anything with ``endpoint``, ``model``,
    ``requests`` and ``complete``). output_path: the YAML to write and resume (None: only return
    the records). xprompt: also run stage 2 (LLM clauses); without it the triples are rendered by
    :func:`stdd_fast.prompts.askg_clauses` when the classifier is built. concurrency: classes asked
    at once. answer_retries: re-asks per stage after an unusable answer. cache_dir: the answer
    cache (default: ``askg/`` in the user cache root, ``$STDD_CACHE_DIR`` moves it; None: none).
    progress: a bar on stderr (None: when stderr is a terminal).
    """
    names = check_class_names(list(classes), "classes") if not isinstance(classes, str) else None
    if not names:
        raise ConfigError(f"classes={classes!r}: give a non-empty list of class names")
    check_int("concurrency", concurrency, high=MAX_CONCURRENCY)
    check_int("answer_retries", answer_retries, low=0, high=20)
    path = Path(output_path) if output_path is not None else None
    if path is not None and not path.parent.is_dir():
        raise ConfigError(f"-o {path}: the folder {path.parent} does not exist; create it or write elsewhere")
    notes: list[str] = []
    earlier, note = output.previous(path, client.model, PROMPT_VERSION) if path is not None else ({}, "")
    notes += [note] if note else []
    kept: dict[str, tuple[dict | None, dict | None]] = {}
    for name in names:
        askg, clauses, note = _kept(earlier.get(name), name, xprompt)
        kept[name] = (askg, clauses)
        notes += [f"{path}: {note}"] if note else []
    cache_dir = default_cache_dir() if cache_dir is CACHE_ROOT else cache_dir
    cache = AnswerCache(cache_dir) if cache_dir is not None else None
    asker = _Asker(client, cache, answer_retries, notes)
    done: dict[str, dict] = {}
    failed: dict[str, str] = {}
    sources = {"kept": 0, "cached": 0, "asked": 0}
    requests_before = client.requests

    def save() -> None:
        if path is None or not done:
            return
        records = {n: done[n] for n in names if n in done}
        lines = output.header(client.endpoint, client.model, PROMPT_VERSION, xprompt, len(records), len(names))
        output.write(path, output.render(lines, records))

    bar = _progress(len(names), progress, client.model)
    try:
        for name, answer, error in _each_on_threads(lambda n: asker.one(n, kept[n], xprompt), names, concurrency):
            if isinstance(error, StddError):  # ChatError, AnswerError, OutputError of this class: the rest go on
                failed[name] = " ".join(str(error).split())
            elif error is not None:  # a bug: not a result of this class
                raise error
            else:
                done[name], how = answer
                sources[how] += 1
            save()
            bar.update(1)
            bar.set_postfix(failed=len(failed), refresh=False)
    except BaseException:  # Ctrl-C, or a bug: stop asking, keep what is done (answers in flight still reach the cache)
        asker.halt("interrupted")
        with contextlib.suppress(StddError):
            save()
        raise
    finally:
        bar.close()
    return AskgRun(
        records={n: done[n] for n in names if n in done},
        failed={n: failed[n] for n in names if n in failed},
        asked=sources["asked"],
        cached=sources["cached"],
        kept=sources["kept"],
        requests=client.requests - requests_before,
        output=path if path is not None and done else None,
        notes=tuple(notes),
    )
