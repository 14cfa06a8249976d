"""Several streams, one model: each stream's worker cuts windows into a shared queue; the consumer scores them.

**Slow consumers** (``on_backpressure``). Windows wait for the model in one queue shared by all
streams, at most ``max_pending`` of them. ``"block"``: a stream whose window does not fit waits, and so
stops reading its source (a live source then buffers or drops on its side). ``"drop"``: the window is
discarded and counted; the stream keeps reading, so results stay current. Drops are reported in the
stream's next result (``WindowResult.dropped``) and in :class:`StreamStats`.

**Batching.** The consumer takes every window that is ready (up to the predictor's ``batch_clips``,
waiting at most ``max_delay`` seconds for more) and scores them in one predictor call, whichever
streams they come from; each window is one view, so its logits are that view's.

**Ending.** Every stream ends by saying so: a stream that fails for good, or that produced no window
at all, yields one result with ``index == -1`` and its :class:`StreamError` (why, and what would
make it work); :class:`StreamStats` records each stream's end. :meth:`WindowStream.close` returns
at once from any thread, from the callback or from inside the loop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from stdd_fast.errors import ClassifierError, ConfigError, NonFiniteError, StddError, StreamError
from stdd_fast.numerics import all_finite
from stdd_fast.predict.contract import Predictor
from stdd_fast.results import WindowResult
from stdd_fast.stream.config import StreamConfig
from stdd_fast.stream.gate import MotionGate
from stdd_fast.stream.sources import POLL, Connection, Source, put_until
from stdd_fast.stream.windows import CutWindow, WindowCutter, WindowError
from stdd_fast.video.config import SamplingConfig
from stdd_fast.video.transforms import transform_frames


@dataclass
class StreamStats:
    """Counters of a :class:`WindowStream` run.

    streams: per stream name, ``frames`` accepted, ``windows`` with a result, ``skipped`` of them (the motion
    gate carried the previous result forward: :mod:`stdd_fast.stream.gate`), ``dropped`` windows,
    ``out_of_order`` frames dropped, ``resets`` of the source's clock, ``reconnects``,
    ``max_buffered`` frames held at once, ``ended`` ("end of source", "closed" or "error") and
    ``error`` (None or its message). model_calls: batched predictor calls; shared_calls: calls
    holding windows of two or more streams; max_batch: most windows in one call.
    """

    streams: dict[str, dict] = field(default_factory=dict)
    model_calls: int = 0
    shared_calls: int = 0
    max_batch: int = 0


@dataclass
class _Window:
    worker: _StreamWorker
    cut: CutWindow


@dataclass
class _End:
    """The last item of a stream: None for a clean end, else the error that ended it."""

    worker: _StreamWorker
    error: StddError | None


class _Hub:
    """What the streams share: the bounded queue of windows for the model and the stop flag."""

    def __init__(self, config: StreamConfig) -> None:
        self.items: queue.Queue = queue.Queue(maxsize=config.max_pending)
        self.stopped = threading.Event()

    def put(self, item: _Window | _End, block: bool) -> bool:
        """Queue an item; False when the queue is full and ``block`` is False (or the run stopped)."""
        if not block:
            try:
                self.items.put_nowait(item)
                return True
            except queue.Full:
                return False
        return put_until(self.items, item, self.stopped)


class _StreamWorker:
    """One source on its own thread: its connection feeds its window cutter, windows go to the hub."""

    def __init__(self, key: int, name: str, source: Source, hub: _Hub, cutter: WindowCutter, config: StreamConfig):
        self.key, self.name, self.hub, self.cutter, self.config = key, name, hub, cutter, config
        self.connection = Connection(name, source, config, hub.stopped)
        self.gate = MotionGate(config.motion_gate)
        self.windows = 0  # windows with a result (scored, or carried forward by the motion gate)
        self.dropped_total = 0
        self.error: StddError | None = None
        self.ended = "running"
        self._dropped = 0  # since the last result of this stream
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._main, daemon=True, name=f"stdd-stream-{name}")

    def _main(self) -> None:
        try:
            self._run()
            if self.hub.stopped.is_set():
                self.ended = "closed"
            else:
                self.ended = "end of source"
                if self.cutter.windows == 0:
                    self.error = StreamError(f"{self.name}: produced no window: {self.cutter.why_none()}")
        except (WindowError, ConfigError) as e:  # unusable frames or timestamps, no frame rate: not reconnectable
            self.error = StreamError(f"{self.name}: {e}")
        except StreamError as e:
            self.error = e
        except BaseException as e:  # a bug must still end the stream, never hang the consumer
            self.error = StreamError(f"{self.name}: internal error in the stream worker ({type(e).__name__}: {e})")
            self.error.__cause__ = e
        if self.error is not None:
            self.ended = "error"
        self.hub.put(_End(self, self.error), block=True)

    def _run(self) -> None:
        items = self.connection.items()
        try:
            for kind, value in items:
                if kind == "fps":
                    self.cutter.set_declared_fps(value)
                    continue
                frame, ts = value
                for cut in self.cutter.push(frame, ts, time.monotonic()):
                    self._hand_on(cut)
            for cut in self.cutter.finish():
                self._hand_on(cut)
        finally:
            items.close()

    def _hand_on(self, cut: CutWindow) -> None:
        block = self.config.on_backpressure == "block"
        if not self.hub.put(_Window(self, cut), block=block) and not self.hub.stopped.is_set():
            with self._lock:
                self._dropped += 1
                self.dropped_total += 1

    def take_dropped(self) -> int:
        with self._lock:
            n, self._dropped = self._dropped, 0
            return n

    def stats(self) -> dict:
        c = self.cutter
        return {
            "frames": c.frames,
            "windows": self.windows,
            "dropped": self.dropped_total + c.discarded,
            "out_of_order": c.out_of_order,
            "resets": c.resets,
            "reconnects": self.connection.reconnects,
            "max_buffered": c.max_buffered,
            "skipped": self.gate.skipped,
            "ended": self.ended,
            "error": None if self.error is None else str(self.error),
        }


class WindowStream:
    """Results of one or more streams, window by window; iterate it, or :meth:`run` it with a callback.

    Iterating yields :class:`~stdd_fast.results.WindowResult` in the order they are scored (per
    stream, in window order); a stream that ends with an error (or with no window) yields one
    result with ``error`` set and ``index == -1``. ``callback(result)`` (if given) sees every result
    before it is yielded. Threads start on the first iteration and stop when it ends or
    :meth:`close` is called.
    """

    def __init__(
        self,
        predictor: Predictor,
        sampling: SamplingConfig,
        sources: Sequence[Source],
        config: StreamConfig,
        callback: Callable[[WindowResult], object] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not predictor.classes:
            raise ConfigError("this Engine has no classifier: build it with classes=[...] or classifier=...")
        sources = list(sources)
        if not sources:
            raise ConfigError("no sources given")
        for i, src in enumerate(sources):
            if not (isinstance(src, str | Path) or callable(src) or isinstance(src, Iterable)):
                raise ConfigError(
                    f"sources[{i}]: expected a path or URL, an iterable of (frame, seconds) pairs or a "
                    f"callable returning one; got {type(src).__name__}"
                )
        if names is None:
            names = [str(s) if isinstance(s, str | Path) else f"<stream {i}>" for i, s in enumerate(sources)]
        names = list(names)
        if len(names) != len(sources) or len(set(names)) != len(names):
            raise ConfigError(f"names must be {len(sources)} distinct strings, one per source; got {names!r}")
        if callback is not None and not callable(callback):
            raise ConfigError(f"callback must be callable; got {type(callback).__name__}")
        self.predictor, self.config, self.callback = predictor, config, callback
        self.stats = StreamStats()
        self._hub = _Hub(config)
        size, device = predictor.image_size, predictor.device

        def transform(image: torch.Tensor) -> torch.Tensor:  # the offline transforms, one frame at a time
            return transform_frames(image[None], size, device)[0]

        self._workers = [
            _StreamWorker(i, name, src, self._hub, WindowCutter(sampling, config, transform, config.fps), config)
            for i, (name, src) in enumerate(zip(names, sources, strict=True))
        ]
        self._started = False

    def __iter__(self) -> Iterator[WindowResult]:
        if self._started:
            raise ConfigError("a WindowStream can be iterated once; call engine.stream(...) again")
        self._started = True
        return self._results()

    def run(self) -> StreamStats:
        """Consume every result (each goes to the callback) until all streams end; the counters."""
        for _ in self:
            pass
        return self.stats

    def close(self) -> None:
        """Stop the streams; returns at once (the iteration ends at its next step, sources are abandoned)."""
        self._hub.stopped.set()

    def __enter__(self) -> WindowStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _results(self) -> Iterator[WindowResult]:
        hub = self._hub
        for w in self._workers:
            w.thread.start()
        live = {w.key for w in self._workers}
        try:
            while live and not hub.stopped.is_set():
                items = self._gather(len(live))
                results = self._results_of([i for i in items if isinstance(i, _Window)])
                for item in items:
                    if isinstance(item, _End):
                        live.discard(item.worker.key)
                        self.stats.streams[item.worker.name] = item.worker.stats()
                        if item.error is not None:
                            yield self._emit(WindowResult(item.worker.name, -1, error=item.error))
                        continue
                    yield self._emit(results[id(item)])
                    if hub.stopped.is_set():
                        return
        finally:
            hub.stopped.set()
            for w in self._workers:
                w.thread.join(timeout=1.0)
                self.stats.streams[w.name] = w.stats()

    def _gather(self, live: int) -> list[_Window | _End]:
        """The next item (waiting for it), then whatever else is ready, up to one predictor batch.

        Waits up to ``max_delay`` for more windows, unless all ``live`` streams have ended meanwhile.
        Returns nothing once the run is closed.
        """
        while True:  # poll, so that Ctrl-C and close() reach the consumer promptly
            if self._hub.stopped.is_set():
                return []
            try:
                items = [self._hub.items.get(timeout=POLL)]
                break
            except queue.Empty:
                continue
        limit = self.predictor.batch_clips
        deadline = time.monotonic() + self.config.max_delay
        while sum(isinstance(i, _Window) for i in items) < limit:
            if sum(isinstance(i, _End) for i in items) == live:
                break
            wait = deadline - time.monotonic()
            try:
                items.append(self._hub.items.get(timeout=wait) if wait > 0 else self._hub.items.get_nowait())
            except queue.Empty:
                break
        return items

    def _results_of(self, windows: list[_Window]) -> dict[int, WindowResult]:
        """Each window's result: the model's, or, for a still window, its stream's reference window's carried
        forward by the motion gate (the reference may be scored in this same call)."""
        classifier = getattr(self.predictor, "classifier", None)
        carried, to_score = {}, []
        for w in windows:
            gate = w.worker.gate
            if gate.still(w.cut.clip, classifier):
                # the reference's result now: a later window of this call may become the reference
                carried[id(w)] = (gate.key, gate.result_of(gate.key))
            else:
                to_score.append(w)
                gate.refer(w.cut.clip, classifier, id(w))
        scored = self._score(to_score) if to_score else None
        decided = _decisions(scored)
        found = None if decided is None else decided.per_row(scored.classes)
        results = {}
        for row, w in enumerate(to_score):
            decisions = {} if decided is None else {"detected": found[row], "confidences": decided.confidence[row]}
            results[id(w)] = self._result(w, scored, row, decisions)
            w.worker.gate.scored(id(w), results[id(w)])
        for w in windows:
            if id(w) in carried:
                key, earlier = carried[id(w)]  # earlier: scored in a previous call; else in this one
                results[id(w)] = w.worker.gate.carry(w.cut, earlier if earlier is not None else results[key])
                w.worker.windows += 1
        return results

    def _score(self, windows: list[_Window]):
        """One predictor call for the windows: its Prediction (logits [B, K] and the classes they name)."""
        clips = torch.stack([w.cut.clip for w in windows])  # [B, T, 3, S, S]
        prediction = self.predictor.predict(clips)
        self.stats.model_calls += 1
        self.stats.max_batch = max(self.stats.max_batch, len(windows))
        if len({w.worker.key for w in windows}) > 1:
            self.stats.shared_calls += 1
        return prediction

    def _result(self, window: _Window, scored, row: int, decisions: dict) -> WindowResult:
        w, cut = window.worker, window.cut
        error = None
        if scored.logits is None:  # the predictor's classifier was taken away while the stream ran
            error = ClassifierError(f"{w.name}: window {cut.index}: no classifier to score it with (set_classifier)")
        elif not all_finite(scored.logits[row], scored.embeddings[row]):
            error = NonFiniteError(f"{w.name}: window {cut.index}: the model produced NaN/Inf scores")
        if error is not None:
            return WindowResult(w.name, cut.index, cut.start_frame, cut.end_frame, cut.start_time, cut.end_time,
                                cut.frames, error=error)  # fmt: skip
        logits = scored.logits[row].float().cpu()  # [K]
        names = scored.classes
        top = logits.topk(min(self.config.top_k, len(names)))
        w.windows += 1
        return WindowResult(
            source=w.name,
            index=cut.index,
            start_frame=cut.start_frame,
            end_frame=cut.end_frame,
            start_time=cut.start_time,
            end_time=cut.end_time,
            frames=cut.frames,
            labels=[names[i] for i in top.indices.tolist()],
            scores=top.values.tolist(),
            probabilities=logits.softmax(-1)[top.indices].tolist(),
            logits=logits,
            latency=time.monotonic() - cut.arrival,
            dropped=w.take_dropped(),
            **decisions,
        )

    def _emit(self, result: WindowResult) -> WindowResult:
        if self.callback is not None:
            self.callback(result)
        return result


def _decisions(scored):
    """The decisions of every window of a call at once (a window is one view): a [B, K] Decision, or None."""
    if scored is None or scored.decider is None or scored.logits is None:
        return None
    return scored.decider.decisions(scored.logits[:, None], scored.embeddings[:, None])
