"""The inference engine: video files (or tensors) in, ranked actions out.

It composes the modules, one per stage (ARCHITECTURE §3), and re-implements none:

    video.SamplingConfig.indices -> video.read_clips (PyAV) -> video.preprocess
      -> STDDModel.encode_video -> ops.score -> head.aggregate_views -> top-k

A small thread pool decodes and preprocesses the next videos while the model encodes the current
batch. Clips of several videos are batched together up to a memory budget. A video that fails
carries its typed error in its result; the others are unaffected.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from stdd_fast.checkpoints import load_model
from stdd_fast.classifier import Classifier, build_classifier
from stdd_fast.config import ArchConfig, STCAConfig
from stdd_fast.errors import ConfigError, StddError, VideoError, choice_error
from stdd_fast.head import aggregate_views
from stdd_fast.model import STDDModel
from stdd_fast.ops import score
from stdd_fast.results import Timings, VideoResult
from stdd_fast.text import text_tower_fingerprint
from stdd_fast.video.clips import SamplingConfig, read_clips
from stdd_fast.video.decode import check_backend
from stdd_fast.video.transforms import preprocess

VideoInput = str | Path | torch.Tensor
OnError = Literal["raise", "return"]
ON_ERRORS: tuple[str, ...] = get_args(OnError)
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A model dtype from a torch dtype or its name ("float32", "bf16", ...)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise choice_error("dtype", str(dtype), sorted({str(d) for d in DTYPES.values()}))
        return dtype
    if dtype not in DTYPES:
        raise choice_error("dtype", dtype, list(DTYPES))
    return DTYPES[dtype]


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device that exists here (ConfigError otherwise, naming what is available)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r} is not a device name; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} but CUDA is not available here; use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ConfigError(f"device={device!r}: only 'cpu' and 'cuda' devices are supported")
    return dev


@dataclass
class _Prepared:
    """One video after decoding and transforms: clips float32 [V, T, 3, S, S] on the engine's device."""

    index: int
    source: str
    clips: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    backend: str | None = None
    decode: float = 0.0
    preprocess: float = 0.0
    error: StddError | None = None


class Engine:
    """STDD zero-shot action recognition on videos.

    weights: a checkpoint path (any format :func:`stdd_fast.load_model` reads; ``arch``/``stca``/
    ``trust_pickle`` apply to it) or an already built :class:`STDDModel` (moved to ``device``/``dtype``
    in place).
    Classes: ``classes=[names]`` (template prompts, or the prompts of ``xprompt=`` YAML), or
    ``classifier=`` a saved artifact path or a :class:`Classifier`; none of them gives an engine
    for :meth:`embed` only. The classifier is built once, in fp32, and checked against the model
    (embedding size, text-tower fingerprint). Scores use the checkpoint's own ``logit_scale``.
    ``impl``: the STCA path ("reference" | "fused" | "triton" | "auto").
    Sampling: ``num_views`` x ``num_frames`` at ``sampling_rate`` frames per ``target_fps``,
    ``sampling="official"`` (the released protocol) or ``"uniform"``.
    Throughput: ``decode_workers`` threads decode ahead of the model; ``batch_clips`` clips per
    forward (None: as many as ``memory_budget_mb`` allows by an activation estimate).
    """

    def __init__(
        self,
        weights: str | Path | STDDModel,
        classes: Sequence[str] | None = None,
        classifier: str | Path | Classifier | None = None,
        *,
        xprompt: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        impl: str = "auto",
        arch: str | ArchConfig | None = None,
        stca: STCAConfig | None = STCAConfig(),
        num_views: int = 3,
        num_frames: int = 8,
        sampling_rate: int = 16,
        target_fps: float = 30,
        sampling: str = "official",
        decode_backend: str = "pyav",
        decode_workers: int | None = None,
        decode_threads: int | None = None,
        batch_clips: int | None = None,
        memory_budget_mb: float = 1024.0,
        trust_pickle: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.sampling = SamplingConfig(num_frames, sampling_rate, target_fps, num_views, sampling)
        self.decode_backend = check_backend(decode_backend)
        self.decode_threads = decode_threads
        if decode_workers is None:
            decode_workers = min(4, os.cpu_count() or 1)
        if isinstance(decode_workers, bool) or not isinstance(decode_workers, int) or decode_workers < 1:
            raise ConfigError(f"decode_workers={decode_workers!r}: must be an int >= 1")
        self.decode_workers = decode_workers
        if classifier is not None and (classes is not None or xprompt is not None):
            raise ConfigError("pass classes=/xprompt= (to build a classifier) or classifier=, not both")

        if isinstance(weights, STDDModel):
            model = weights.to(device=self.device).eval()
        elif isinstance(weights, str | Path):
            # fp32 first: the classifier and the text-tower fingerprint are computed at full precision.
            model = load_model(weights, arch=arch, stca=stca, device=self.device, trust_pickle=trust_pickle)
        else:
            raise ConfigError(f"weights must be a checkpoint path or an STDDModel; got {type(weights).__name__}")
        model.set_impl(impl)
        full_precision = all(p.dtype == torch.float32 for p in model.parameters())
        tower = text_tower_fingerprint(model) if full_precision else None
        self.logit_scale = model.logit_scale.detach().float().clone()  # log(tau) of the checkpoint

        if classifier is None and (classes is not None or xprompt is not None):
            classifier = build_classifier(model, list(classes) if classes is not None else None, xprompt=xprompt)
        elif isinstance(classifier, str | Path):
            classifier = Classifier.load(classifier)
        elif classifier is not None and not isinstance(classifier, Classifier):
            raise ConfigError(f"classifier must be a path or a Classifier; got {type(classifier).__name__}")
        if classifier is not None:
            classifier.check_compatible(model.arch.embed_dim, tower)
        self.classifier = classifier
        self._weights = None if classifier is None else classifier.weights.to(self.device, torch.float32)

        self.model = model.to(dtype=self.dtype)
        self.image_size = model.arch.image_size
        self.batch_clips = self._check_batch(batch_clips, memory_budget_mb)

    @property
    def classes(self) -> list[str]:
        return [] if self.classifier is None else list(self.classifier.classes)

    def __repr__(self) -> str:
        k = self.classifier.num_classes if self.classifier is not None else 0
        return (
            f"Engine(arch={self.model.arch.name}, device={self.device}, dtype={self.dtype}, impl={self.model.impl}, "
            f"classes={k}, views={self.sampling.num_views}, frames={self.sampling.num_frames}, "
            f"batch_clips={self.batch_clips})"
        )

    def _check_batch(self, batch_clips: int | None, memory_budget_mb: float) -> int:
        if batch_clips is not None:
            if isinstance(batch_clips, bool) or not isinstance(batch_clips, int) or batch_clips < 1:
                raise ConfigError(f"batch_clips={batch_clips!r}: must be an int >= 1 or None")
            return batch_clips
        if not memory_budget_mb > 0:
            raise ConfigError(f"memory_budget_mb={memory_budget_mb!r}: must be > 0")
        arch = self.model.arch
        tokens, width, heads = arch.tokens_per_frame, arch.vision_width, arch.vision_heads
        # Peak activations of one block per frame: ~12 token-width buffers (residual, QKV, the STCA
        # paths, the 4x MLP hidden) and two attention-probability maps.
        per_frame = tokens * (12 * width + 2 * heads * tokens) * self.dtype.itemsize
        per_clip = per_frame * self.sampling.num_frames
        return max(1, math.floor(memory_budget_mb * 2**20 / per_clip))

    # -- the per-video stage (worker threads) ------------------------------------------------------

    def _prepare(self, index: int, item: VideoInput) -> _Prepared:
        """Decode (files) and transform (uint8 tensors) one video; errors are caught into the result."""
        source = str(item) if isinstance(item, str | Path) else f"<tensor {index}>"
        prep = _Prepared(index, source)
        try:
            t0 = time.perf_counter()
            if isinstance(item, str | Path):
                decoded = read_clips(item, self.sampling, self.decode_backend, self.decode_threads)
                raw, prep.indices, prep.backend = decoded.frames, decoded.indices, self.decode_backend
            elif isinstance(item, torch.Tensor):
                raw, prep.backend = item, "tensor"
            else:
                raise ConfigError(f"videos[{index}]: expected a path or a tensor, got {type(item).__name__}")
            t1 = time.perf_counter()
            prep.clips = self._clips_from(raw, index)
            t2 = time.perf_counter()
            prep.decode, prep.preprocess = t1 - t0, t2 - t1
        except StddError as e:
            prep.error = e
        except Exception as e:  # one bad video never fails the batch: report it as that video's error
            prep.error = VideoError(f"{source}: {type(e).__name__}: {e}")
            prep.error.__cause__ = e
        return prep

    def _clips_from(self, raw: torch.Tensor, index: int) -> torch.Tensor:
        """uint8 frames [V, T, H, W, 3] are transformed; float clips [V, T, 3, S, S] pass through."""
        size = self.image_size
        if raw.dtype == torch.uint8:
            return preprocess(raw, size, device=self.device)  # [V, T, 3, S, S]
        if raw.is_floating_point() and raw.ndim == 5 and tuple(raw.shape[2:]) == (3, size, size):
            return raw
        raise ConfigError(
            f"videos[{index}]: a tensor must be uint8 frames [V, T, H, W, 3] or normalised float clips "
            f"[V, T, 3, {size}, {size}]; got {raw.dtype} {tuple(raw.shape)}"
        )

    # -- the model stage (calling thread) ----------------------------------------------------------

    def _to_model(self, clips: torch.Tensor) -> torch.Tensor:
        """The one place clips change device and dtype."""
        return clips.to(device=self.device, dtype=self.dtype, non_blocking=True)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def _encode(self, group: list[_Prepared]) -> tuple[list[torch.Tensor], list[float]]:
        """Frame embeddings of a group of same-shaped videos, ``batch_clips`` clips per forward.

        Returns per video float32 [V, T, D] and its share of the encode time.
        """
        clips = torch.cat([self._to_model(p.clips) for p in group])  # [sum V, T, 3, S, S]
        self._sync()
        t0 = time.perf_counter()
        chunks = [
            self.model.encode_video(clips[s : s + self.batch_clips]) for s in range(0, clips.shape[0], self.batch_clips)
        ]
        emb = torch.cat(chunks)  # [sum V, T, D]
        self._sync()
        seconds = time.perf_counter() - t0
        sizes = [p.clips.shape[0] for p in group]
        return list(emb.split(sizes)), [seconds * n / clips.shape[0] for n in sizes]

    def _embedded(self, videos: Sequence[VideoInput], progress: bool | None, desc: str) -> Iterator[tuple]:
        """(prepared, embeddings [V, T, D] or None, encode seconds) per video, in completion order."""
        items = list(videos)
        bar = _progress_bar(len(items), progress, desc)
        window = 2 * self.decode_workers  # videos decoded ahead of the model
        pool = ThreadPoolExecutor(max_workers=self.decode_workers, thread_name_prefix="stdd-decode")
        try:
            queue: deque[Future] = deque()
            todo = iter(enumerate(items))

            def submit() -> None:
                for i, item in todo:
                    queue.append(pool.submit(self._prepare, i, item))
                    return

            for _ in range(window):
                submit()
            pending: list[_Prepared] = []
            while queue:
                prep = queue.popleft().result()
                submit()
                if prep.error is not None:
                    bar.update(1)
                    yield prep, None, 0.0
                    continue
                pending.append(prep)
                if sum(p.clips.shape[0] for p in pending) >= self.batch_clips:
                    yield from self._flush(pending, bar)
                    pending = []
            yield from self._flush(pending, bar)
        finally:  # also when the caller stops early: drop queued decodes, close the bar
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()

    def _flush(self, pending: list[_Prepared], bar: object) -> Iterator[tuple]:
        groups: dict[tuple, list[_Prepared]] = {}
        for p in pending:  # clips concatenate only with the same [T, 3, S, S]
            groups.setdefault(tuple(p.clips.shape[1:]), []).append(p)
        for group in groups.values():
            embeddings, seconds = self._encode(group)
            for p, emb, s in zip(group, embeddings, seconds, strict=True):
                p.clips = None  # free the input before the next batch
                bar.update(1)
                yield p, emb, s

    # -- public API ---------------------------------------------------------------------------------

    def classify(
        self,
        videos: VideoInput | Sequence[VideoInput],
        top_k: int = 5,
        progress: bool | None = None,
    ) -> list[VideoResult]:
        """Rank the classes for each video: one :class:`VideoResult` per input, in input order.

        videos: paths, uint8 frames [V, T, H, W, 3], or normalised float clips [V, T, 3, S, S]
        (a single one is accepted too). A video that fails gets ``result.error`` (a StddError) and
        never stops the others. ``progress``: a tqdm bar (None: when many videos and a terminal).
        """
        if self.classifier is None:
            raise ConfigError("this Engine has no classifier: build it with classes=[...] or classifier=...")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k={top_k!r}: must be an int >= 1")
        videos = _as_list(videos)
        names = self.classifier.classes
        k = min(top_k, len(names))
        results: list[VideoResult | None] = [None] * len(videos)
        for prep, emb, encode_s in self._embedded(videos, progress, "classifying"):
            if emb is None:
                results[prep.index] = VideoResult(prep.source, error=prep.error, decode_backend=prep.backend)
                continue
            t0 = time.perf_counter()
            with torch.no_grad():
                view_scores = score(emb, self._weights, self.logit_scale, impl=self.model.impl)  # [V, K]
                logits = aggregate_views(view_scores)  # [K]
                top = logits.topk(k)
            view_scores, logits = view_scores.cpu(), logits.cpu()
            results[prep.index] = VideoResult(
                source=prep.source,
                labels=[names[i] for i in top.indices.tolist()],
                scores=top.values.tolist(),
                logits=logits,
                view_scores=view_scores,
                indices=prep.indices,
                timings=Timings(prep.decode, prep.preprocess, encode_s, time.perf_counter() - t0),
                decode_backend=prep.backend,
            )
        return results

    def embed(
        self,
        videos: VideoInput | Sequence[VideoInput],
        progress: bool | None = None,
        on_error: str = "raise",
    ) -> list[torch.Tensor | StddError]:
        """Frame embeddings per video: float32 [V, T, D] on CPU, L2-normalised, in input order.

        ``on_error="raise"`` raises the first failing video's error; ``"return"`` puts the error
        in that video's place.
        """
        if on_error not in ON_ERRORS:
            raise choice_error("on_error", on_error, ON_ERRORS)
        videos = _as_list(videos)
        out: list[torch.Tensor | StddError | None] = [None] * len(videos)
        for prep, emb, _ in self._embedded(videos, progress, "embedding"):
            if emb is None and on_error == "raise":
                raise prep.error
            out[prep.index] = prep.error if emb is None else emb.cpu()
        return out


def _as_list(videos: VideoInput | Sequence[VideoInput]) -> list[VideoInput]:
    if isinstance(videos, str | Path | torch.Tensor):
        return [videos]
    return list(videos)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, progress: bool | None, desc: str) -> object:
    show = progress if progress is not None else (total >= 8 and sys.stderr.isatty())
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="video")
