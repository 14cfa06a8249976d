"""The VideoLoader: videos in, model-ready clips out, decoded ahead of the consumer, in input order.

Per video: sampling (:mod:`~stdd_fast.video.sampling`) -> decode (PyAV, or DALI where it can run) ->
transforms (:mod:`~stdd_fast.video.transforms`). A pool of ``workers`` threads probes, decodes and
transforms the next videos while the caller works on the current one. With DALI the pool only
probes (PyAV packet index, no decoding) and reads the files; one dedicated thread runs the DALI
pipeline on ``dali_batch`` videos at a time (on a GPU the pipeline also resizes, crops and
normalises). A file DALI cannot decode is decoded with PyAV, and its result says why. Each video
that fails carries its typed error; the others are unaffected.

Memory per video is bounded before decoding: the distinct sampled frames, as uint8 RGB at the
header's size, and the frames the decoder holds on the way (reference frames, two per frame thread,
in its pixel format: :func:`~stdd_fast.video.pyav.decode_bytes`) must fit
``DecodeConfig.frame_budget_mb`` (frames shared by overlapping views are decoded and transformed
once), and frames become float a chunk at a time. ``workers`` videos decode at once, so a loader
holds at most ``workers`` budgets.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from stdd_fast.devices import synchronize
from stdd_fast.errors import BackendUnavailableError, ConfigError, StddError, VideoError
from stdd_fast.video.config import DecodeConfig, SamplingConfig
from stdd_fast.video.pyav import VideoReader, probe
from stdd_fast.video.transforms import transform_frames

VideoInput = str | Path | torch.Tensor


@dataclass
class LoadedVideo:
    """One video ready for the model: clips float32 [V, T, 3, S, S] on the loader's device, or its error.

    indices: LongTensor [V, T] sampled (None for tensor inputs). backend: "pyav", "dali" or "tensor".
    note: why PyAV decoded a file that DALI was asked for or "auto" would have preferred.
    """

    index: int
    source: str
    clips: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    backend: str | None = None
    note: str | None = None
    decode_s: float = 0.0
    preprocess_s: float = 0.0
    error: StddError | None = None


@dataclass
class _DaliPending:
    """A file routed to DALI: probed and read, waiting for the next pipeline run (its slot gets the result)."""

    index: int
    source: str
    path: str | Path
    job: object  # video.dali.DaliJob
    probe_s: float


class VideoLoader:
    """Turns videos (paths, uint8 frames [V, T, H, W, 3], or float clips [V, T, 3, S, S]) into clips.

    ``sampling``: which frames; ``decode``: how; ``image_size``: the model's input side; ``device``:
    where the clips go (and where DALI decodes). :meth:`load` yields a :class:`LoadedVideo` per input,
    in input order.
    """

    def __init__(
        self,
        sampling: SamplingConfig,
        decode: DecodeConfig,
        image_size: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.sampling, self.decode, self.image_size = sampling, decode, image_size
        self.device = torch.device(device)
        # Why DALI is not used for any file of this loader (None: it is, codec permitting).
        self.dali_problem = self._dali_problem()
        self._dali = None  # the DaliDecoder, built on first use (only ever touched by the DALI thread)

    def _dali_problem(self) -> str | None:
        backend = self.decode.backend
        if backend == "pyav":
            return "decode_backend='pyav'"
        from stdd_fast.video import dali

        if backend == "dali":
            problem = dali.device_problem(self.device)
            if problem is not None:
                raise BackendUnavailableError(f"decode_backend='dali': {problem}")
            return None
        # auto on a CPU keeps PyAV: DALI's CPU decoder reads VP8/VP9/MJPEG only and converts YUV to
        # RGB differently from the released loader (stdd_fast.video.pyav).
        if self.device.type != "cuda":
            return f"decode_backend='auto' uses DALI on a CUDA device only (this engine runs on {self.device})"
        return dali.device_problem(self.device)

    # -- one video ------------------------------------------------------------------------------------

    def load_one(self, index: int, item: VideoInput, note: str | None = None) -> LoadedVideo:
        """Decode (files) and transform (uint8 tensors) one video with PyAV; errors are caught into the result."""
        source = str(item) if isinstance(item, str | Path) else f"<tensor {index}>"
        if note is None and self.decode.backend == "dali" and isinstance(item, str | Path):
            note = self.dali_problem
        loaded = LoadedVideo(index, source, note=note)
        try:
            t0 = time.perf_counter()
            if isinstance(item, str | Path):
                budget = int(self.decode.frame_budget_mb * 2**20)
                with VideoReader(item, threads=self.decode.threads, max_bytes=budget) as reader:
                    loaded.indices = self.sampling.indices(reader.info)
                    frames, inverse = reader.read_distinct(loaded.indices)  # [U, H, W, 3], [V, T]
                loaded.backend = "pyav"
                t1 = time.perf_counter()
                loaded.clips = transform_frames(frames, self.image_size, self.device)[inverse]  # [V, T, 3, S, S]
            elif isinstance(item, torch.Tensor):
                loaded.backend, t1 = "tensor", time.perf_counter()
                loaded.clips = self._clips_from_tensor(item, index)
            else:
                raise ConfigError(f"videos[{index}]: expected a path or a tensor, got {type(item).__name__}")
            loaded.decode_s, loaded.preprocess_s = t1 - t0, time.perf_counter() - t1
        except StddError as e:
            loaded.error = e
        except Exception as e:  # one bad video never fails the others: it is that video's error
            loaded.error = VideoError(f"{source}: {type(e).__name__}: {e}")
            loaded.error.__cause__ = e
        return loaded

    def _clips_from_tensor(self, raw: torch.Tensor, index: int) -> torch.Tensor:
        """uint8 frames [V, T, H, W, 3] are transformed; float clips [V, T, 3, S, S] pass through."""
        size = self.image_size
        if raw.dtype == torch.uint8 and raw.ndim == 5 and raw.shape[-1] == 3:
            v, t, h, w, _ = raw.shape
            return transform_frames(raw.reshape(v * t, h, w, 3), size, self.device).view(v, t, 3, size, size)
        if raw.is_floating_point() and raw.ndim == 5 and tuple(raw.shape[2:]) == (3, size, size):
            return raw
        raise ConfigError(
            f"videos[{index}]: a tensor must be uint8 frames [V, T, H, W, 3] or normalised float clips "
            f"[V, T, 3, {size}, {size}]; got {raw.dtype} {tuple(raw.shape)}"
        )

    def _route(self, index: int, item: VideoInput) -> LoadedVideo | _DaliPending:
        """A file DALI will decode comes back probed and read (pending); everything else is loaded here."""
        if not isinstance(item, str | Path) or self.dali_problem is not None:
            return self.load_one(index, item)
        from stdd_fast.video import dali

        t0 = time.perf_counter()
        try:
            info = probe(item)
            indices = self.sampling.indices(info)
            budget = self.decode.frame_budget_mb * 2**20
            frames_bytes = torch.unique(indices).numel() * info.frame_bytes
            problem = dali.codec_problem(info, self.device)
            if problem is None and max(frames_bytes, Path(item).stat().st_size) > budget:
                # DALI holds the whole file and the decoded frames: PyAV reports the budget in its words
                problem = f"the file or its decoded frames exceed the decode memory budget ({budget / 2**20:g} MiB)"
            if problem is None:
                job = dali.DaliJob.from_file(item, indices, info)
                return _DaliPending(index, str(item), item, job, time.perf_counter() - t0)
        except VideoError as e:  # e.g. frames missing from a truncated file: PyAV reports it in its words
            problem = f"not decoded with DALI: {e}"
        return self.load_one(index, item, note=problem)

    def _decode_dali(self, batch: list[tuple[_DaliPending, Future]]) -> None:
        """One DALI pipeline run (the DALI thread); each slot gets its video, files DALI failed on from PyAV."""
        from stdd_fast.video import dali

        t0 = time.perf_counter()
        try:
            if self._dali is None:
                # On a GPU the pipeline also resizes, crops and normalises: the fast path.
                size = self.image_size if self.device.type == "cuda" else None
                self._dali = dali.DaliDecoder(self.device, size=size, batch_size=self.decode.dali_batch)
            outputs = self._dali.run([p.job for p, _ in batch])
            synchronize(self.device)
        except Exception as e:  # DALI itself broke (not one file): every file of the run goes to PyAV
            outputs = [VideoError(f"{p.source}: {type(e).__name__}: {e}") for p, _ in batch]
        share = (time.perf_counter() - t0) / max(len(batch), 1)
        for (p, slot), out in zip(batch, outputs, strict=True):
            if isinstance(out, VideoError):
                slot.set_result(self.load_one(p.index, p.path, note=f"DALI failed, decoded with PyAV: {out}"))
                continue
            loaded = LoadedVideo(p.index, p.source, indices=p.job.indices, backend="dali", decode_s=p.probe_s + share)
            t1 = time.perf_counter()
            try:
                loaded.clips = out if out.is_floating_point() else self._clips_from_tensor(out, p.index)
            except StddError as e:
                loaded.error = e
            loaded.preprocess_s = time.perf_counter() - t1
            slot.set_result(loaded)

    # -- many videos ---------------------------------------------------------------------------------

    def load(self, videos: Sequence[VideoInput]) -> Iterator[LoadedVideo]:
        """Each video loaded, in input order, about ``2 * workers`` videos decoded ahead of the consumer.

        Files routed to DALI gather until ``dali_batch`` of them (or the head of the line waits on
        them) and go to the DALI thread as one pipeline run. Stopping the iteration early cancels
        the decodes not yet started.
        """
        items = list(videos)
        window = 2 * self.decode.num_workers
        pool = ThreadPoolExecutor(max_workers=self.decode.num_workers, thread_name_prefix="stdd-decode")
        dali_thread = None if self.dali_problem is not None else ThreadPoolExecutor(1, thread_name_prefix="stdd-dali")
        slots: deque[Future] = deque()  # per video, in input order: its LoadedVideo
        unrouted: deque[tuple[Future, Future]] = deque()  # (slot, routing) for videos whose routing is not read
        batch: list[tuple[_DaliPending, Future]] = []
        upcoming = iter(enumerate(items))

        def submit_more() -> None:
            while len(slots) < window:
                nxt = next(upcoming, None)
                if nxt is None:
                    return
                slot: Future = Future()
                slots.append(slot)
                unrouted.append((slot, pool.submit(self._route, *nxt)))

        def flush() -> None:
            if batch:
                dali_thread.submit(self._decode_dali, list(batch))
                batch.clear()

        try:
            submit_more()
            while slots:
                head = slots[0]
                # read routings in order: the head's (waiting for it), then whichever are done
                while unrouted and (unrouted[0][0] is head or unrouted[0][1].done()):
                    slot, routing = unrouted.popleft()
                    routed = routing.result()
                    if isinstance(routed, _DaliPending):
                        batch.append((routed, slot))
                    else:
                        slot.set_result(routed)
                    if len(batch) >= self.decode.dali_batch:
                        flush()
                if not head.done() and (any(s is head for _, s in batch) or not unrouted):
                    flush()  # the head of the line waits on DALI: run what has gathered
                yield slots.popleft().result()
                submit_more()
        finally:  # also when the caller stops early: drop queued decodes
            pool.shutdown(wait=True, cancel_futures=True)
            if dali_thread is not None:
                dali_thread.shutdown(wait=True, cancel_futures=True)
