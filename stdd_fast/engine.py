"""The inference engine: video files (or tensors) in, ranked actions out.

It composes the modules, one per stage (ARCHITECTURE §3), and re-implements none:

    video.SamplingConfig.indices -> video.read_clips (PyAV) | video.dali (DALI) -> video.preprocess
      -> STDDModel.encode_video -> ops.score -> head.aggregate_views -> top-k

A small thread pool probes, decodes and preprocesses the next videos while the model encodes the
current batch. With DALI, the pool only probes (PyAV packet index, no decoding) and reads the files;
one dedicated thread runs the DALI pipeline on ``decode_batch`` videos at a time, so the next batch
decodes while the model runs (on a GPU the pipeline also resizes, crops and normalises and hands the
clips over by DLPack). A file DALI cannot decode falls back to PyAV, and its result says why. Clips
of several videos are batched together up to a memory budget. A video that fails carries its typed
error in its result; the others are unaffected. Live streams: :meth:`Engine.stream` (stdd_fast.stream).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from stdd_fast.checkpoints import load_model
from stdd_fast.classifier import Classifier, build_classifier
from stdd_fast.config import ArchConfig, STCAConfig
from stdd_fast.errors import BackendUnavailableError, ConfigError, StddError, VideoError, choice_error
from stdd_fast.head import aggregate_views
from stdd_fast.model import STDDModel
from stdd_fast.ops import score
from stdd_fast.results import Timings, VideoResult, WindowResult
from stdd_fast.stream import Source, StreamConfig, WindowStream, parse_span
from stdd_fast.text import text_tower_fingerprint
from stdd_fast.video.clips import SamplingConfig, read_clips
from stdd_fast.video.decode import check_backend, check_decoder_threads, probe
from stdd_fast.video.transforms import preprocess

VideoInput = str | Path | torch.Tensor
_DALI_BATCH = 8  # default videos per DALI pipeline run
OnError = Literal["raise", "return"]
ON_ERRORS: tuple[str, ...] = get_args(OnError)
Backend = Literal["torch", "onnxruntime", "tensorrt"]
BACKENDS: tuple[str, ...] = get_args(Backend)
# torch.compile's modes (compile=True is "default")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
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
    note: str | None = None  # why PyAV decoded it when DALI was asked for or preferred
    decode: float = 0.0
    preprocess: float = 0.0
    error: StddError | None = None


@dataclass
class _DaliPending:
    """A file routed to DALI: probed and read (``job``), waiting for the next pipeline run."""

    index: int
    source: str
    path: str | Path
    job: object  # video.dali.DaliJob
    probe: float  # seconds spent probing and reading the file


class Engine:
    """STDD zero-shot action recognition on videos.

    weights: a checkpoint path (any format :func:`stdd_fast.load_model` reads; ``arch``/``stca``/
    ``trust_pickle`` apply to it) or an already built :class:`STDDModel` (moved to ``device``/``dtype``
    in place).
    Classes: ``classes=[names]`` (template prompts, or the prompts of ``xprompt=`` YAML), or
    ``classifier=`` a saved artifact path or a :class:`Classifier`; none of them gives an engine
    for :meth:`embed` only. The classifier is built once, in fp32, and checked against the model
    (embedding size, text-tower fingerprint). Scores use the checkpoint's own ``logit_scale``.
    ``impl``: the STCA path ("reference" | "fused" | "triton" | "auto"); ``compile=True`` wraps the
    encoder in ``torch.compile`` (first batch of each shape pays the compilation); a
    ``torch.compile`` mode name (``"max-autotune-no-cudagraphs"``, ...) compiles with that mode.
    ``backend``: ``"torch"`` (weights = a checkpoint or an STDDModel), or ``"onnxruntime"`` /
    ``"tensorrt"`` (weights = a ``stdd-export`` ONNX file / TensorRT plan: the classifier is baked
    in; a ``classifier=`` given is checked against it by fingerprint). Results are the same objects
    for every backend.
    Sampling: ``num_views`` x ``num_frames`` at ``sampling_rate`` frames per ``target_fps``,
    ``sampling="official"`` (the released protocol) or ``"uniform"``.
    Decoding: ``decode_backend="auto"`` uses DALI when the engine runs on a CUDA device, DALI is
    installed and the file's codec is one NVDEC decodes, else PyAV; ``"dali"`` asks for DALI on this
    device (its CPU decoder reads VP8/VP9/MJPEG only; BackendUnavailableError when DALI is missing);
    ``"pyav"`` never uses DALI. Files DALI cannot decode fall back to PyAV with
    ``result.decode_note`` saying why. ``decode_batch`` videos per DALI pipeline run.
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
        decode_backend: str = "auto",
        decode_batch: int = _DALI_BATCH,
        decode_workers: int | None = None,
        decode_threads: int | None = None,
        batch_clips: int | None = None,
        memory_budget_mb: float = 1024.0,
        trust_pickle: bool = False,
        backend: str = "torch",
        compile: bool | str = False,
    ) -> None:
        if backend not in BACKENDS:
            raise choice_error("backend", backend, BACKENDS)
        if not isinstance(compile, bool) and compile not in COMPILE_MODES:
            raise choice_error("compile", compile, (True, False, *COMPILE_MODES))
        self.backend = backend
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.sampling = SamplingConfig(num_frames, sampling_rate, target_fps, num_views, sampling)
        self.decode_backend = check_backend(decode_backend, allow_auto=True)
        if isinstance(decode_batch, bool) or not isinstance(decode_batch, int) or decode_batch < 1:
            raise ConfigError(f"decode_batch={decode_batch!r}: must be an int >= 1")
        self.decode_batch = decode_batch
        # Why DALI is not used for any file of this engine (None: it is, codec permitting).
        self.dali_problem = self._dali_problem()
        self._dali = None  # the DaliDecoder, built on first use
        check_decoder_threads(decode_threads, "decode_threads")
        self.decode_threads = decode_threads
        if decode_workers is None:
            decode_workers = min(4, os.cpu_count() or 1)
        if isinstance(decode_workers, bool) or not isinstance(decode_workers, int) or decode_workers < 1:
            raise ConfigError(f"decode_workers={decode_workers!r}: must be an int >= 1")
        self.decode_workers = decode_workers
        if classifier is not None and (classes is not None or xprompt is not None):
            raise ConfigError("pass classes=/xprompt= (to build a classifier) or classifier=, not both")

        if backend != "torch":
            self._init_exported(weights, classes, classifier, xprompt, num_frames, compile)
        else:
            self._init_torch(weights, classes, classifier, xprompt, impl, arch, stca, trust_pickle, compile)
        self.batch_clips = self._check_batch(batch_clips, memory_budget_mb)

    def _init_torch(self, weights, classes, classifier, xprompt, impl, arch, stca, trust_pickle, compile) -> None:
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
        self._class_names = None if classifier is None else list(classifier.classes)
        self._weights = None if classifier is None else classifier.weights.to(self.device, torch.float32)

        self.model = model.to(dtype=self.dtype)
        self.impl = model.impl
        self.arch = model.arch
        self.image_size = model.arch.image_size
        if compile:
            mode = "default" if compile is True else compile
            self._encoder = torch.compile(model.encode_video, mode=mode)
        else:
            self._encoder = model.encode_video
        self._runner = None

    def _init_exported(self, weights, classes, classifier, xprompt, num_frames, compile) -> None:
        from stdd_fast.config import get_arch
        from stdd_fast.export import open_runner

        if not isinstance(weights, str | Path):
            raise ConfigError(
                f"backend={self.backend!r} takes the path of an exported model; got {type(weights).__name__}"
            )
        if classes is not None or xprompt is not None or compile:
            raise ConfigError(
                f"backend={self.backend!r}: the classifier is baked into {weights}; pass classifier= to check it, "
                "not classes=/xprompt= (and compile= applies to the torch backend only)"
            )
        runner = open_runner(self.backend, weights, device=self.device)
        spec = runner.spec
        if spec.uint8_input or spec.num_frames != num_frames:
            raise ConfigError(
                f"{weights} takes {spec.num_frames}-frame {'uint8' if spec.uint8_input else 'float'} clips; the "
                f"engine feeds {num_frames}-frame CLIP-normalised float clips: re-export with --frames {num_frames} "
                "and without --uint8-input"
            )
        if isinstance(classifier, str | Path):
            classifier = Classifier.load(classifier)
        if classifier is not None:
            spec.check_classifier(classifier)
        self.classifier = classifier
        self._class_names = list(spec.classes)
        self._weights = None
        self.logit_scale = torch.tensor(spec.logit_scale)
        self.model, self.impl, self._encoder, self._runner = None, f"{self.backend}:{spec.impl}", None, runner
        try:
            self.arch = get_arch(spec.arch)
        except ConfigError:  # a custom architecture: the memory estimate below uses B/16's shape
            self.arch = get_arch("ViT-B-16")
        self.image_size = spec.image_size

    @property
    def classes(self) -> list[str]:
        return [] if self._class_names is None else list(self._class_names)

    def __repr__(self) -> str:
        k = len(self.classes)
        return (
            f"Engine(arch={self.arch.name}, backend={self.backend}, device={self.device}, dtype={self.dtype}, "
            f"impl={self.impl}, "
            f"classes={k}, views={self.sampling.num_views}, frames={self.sampling.num_frames}, "
            f"batch_clips={self.batch_clips}, decode_backend={self.decode_backend})"
        )

    def _dali_problem(self) -> str | None:
        if self.decode_backend == "pyav":
            return "decode_backend='pyav'"
        from stdd_fast.video import dali

        if self.decode_backend == "dali":
            problem = dali.device_problem(self.device)
            if problem is not None:
                raise BackendUnavailableError(f"decode_backend='dali': {problem}")
            return None
        # auto on a CPU keeps PyAV: DALI's CPU decoder reads VP8/VP9/MJPEG only and converts YUV to
        # RGB differently from the released loader (video.decode.YUV_TO_RGB).
        if self.device.type != "cuda":
            return f"decode_backend='auto' uses DALI on a CUDA device only (this engine runs on {self.device})"
        return dali.device_problem(self.device)

    def _check_batch(self, batch_clips: int | None, memory_budget_mb: float) -> int:
        if batch_clips is not None:
            if isinstance(batch_clips, bool) or not isinstance(batch_clips, int) or batch_clips < 1:
                raise ConfigError(f"batch_clips={batch_clips!r}: must be an int >= 1 or None")
            return batch_clips
        number = isinstance(memory_budget_mb, int | float) and not isinstance(memory_budget_mb, bool)
        if not (number and math.isfinite(memory_budget_mb) and memory_budget_mb > 0):
            raise ConfigError(f"memory_budget_mb={memory_budget_mb!r}: must be a finite number of MiB > 0")
        arch = self.arch
        tokens, width, heads = arch.tokens_per_frame, arch.vision_width, arch.vision_heads
        # Peak activations of one block per frame: ~12 token-width buffers (residual, QKV, the STCA
        # paths, the 4x MLP hidden) and two attention-probability maps.
        per_frame = tokens * (12 * width + 2 * heads * tokens) * self.dtype.itemsize
        per_clip = per_frame * self.sampling.num_frames
        return max(1, math.floor(memory_budget_mb * 2**20 / per_clip))

    # -- the per-video stage (worker threads) ------------------------------------------------------

    def _prepare(self, index: int, item: VideoInput, note: str | None = None) -> _Prepared | _DaliPending:
        """Decode (files) and transform (uint8 tensors) one video; errors are caught into the result.

        A file DALI will decode comes back as a :class:`_DaliPending` (probed and read, not decoded).
        ``note``: why this file is decoded with PyAV (a DALI failure already happened).
        """
        source = str(item) if isinstance(item, str | Path) else f"<tensor {index}>"
        if note is None and self.decode_backend == "dali":
            note = self.dali_problem  # why the requested DALI is not used here at all (None when it is)
        prep = _Prepared(index, source, note=note)
        try:
            t0 = time.perf_counter()
            if isinstance(item, str | Path) and prep.note is None and self.dali_problem is None:
                pending, prep.note = self._dali_job(index, source, item)
                if pending is not None:
                    pending.probe = time.perf_counter() - t0
                    return pending
            if isinstance(item, str | Path):
                decoded = read_clips(item, self.sampling, "pyav", self.decode_threads)
                raw, prep.indices, prep.backend = decoded.frames, decoded.indices, "pyav"
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
        if not isinstance(item, str | Path) or prep.backend == "dali":
            prep.note = None  # notes explain why a file was not decoded by DALI
        return prep

    def _dali_job(self, index: int, source: str, path: str | Path) -> tuple[_DaliPending | None, str | None]:
        """Probe ``path`` (packet index only) and read it for DALI, or say why PyAV decodes it."""
        from stdd_fast.video import dali

        info = probe(path)
        problem = dali.codec_problem(info, self.device)
        if problem is not None:
            return None, problem
        try:
            job = dali.DaliJob.from_file(path, self.sampling.indices(info), info)
        except VideoError as e:  # e.g. frames missing from a truncated file: PyAV reports it in its words
            return None, f"not decoded with DALI: {e}"
        return _DaliPending(index, source, path, job, 0.0), None

    def _decode_dali(self, pending: list[_DaliPending]) -> list[_Prepared]:
        """One DALI pipeline run over ``pending`` (the DALI thread); failed files are redone with PyAV."""
        from stdd_fast.video import dali

        t0 = time.perf_counter()
        try:
            if self._dali is None:
                # On a GPU the pipeline also resizes, crops and normalises: the fast path.
                size = self.image_size if self.device.type == "cuda" else None
                self._dali = dali.DaliDecoder(self.device, size=size, batch_size=self.decode_batch)
            outputs = self._dali.run([p.job for p in pending])
            self._sync()
        except Exception as e:  # DALI itself broke (not one file): every file of the run goes to PyAV
            outputs = [VideoError(f"{p.source}: {type(e).__name__}: {e}") for p in pending]
        share = (time.perf_counter() - t0) / max(len(pending), 1)
        done = []
        for p, out in zip(pending, outputs, strict=True):
            if isinstance(out, VideoError):
                done.append(self._prepare(p.index, p.path, note=f"DALI failed, decoded with PyAV: {out}"))
                continue
            prep = _Prepared(p.index, p.source, indices=p.job.indices, backend="dali", decode=p.probe + share)
            try:
                t1 = time.perf_counter()
                prep.clips = out if out.is_floating_point() else self._clips_from(out, p.index)
                prep.preprocess = time.perf_counter() - t1
            except StddError as e:
                prep.error = e
            done.append(prep)
        return done

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
    def _forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings [B, T, D] of clips [B, T, 3, S, S], ``batch_clips`` at a time, and, for an exported
        backend, its scores [B, K] (the baked classifier); ``None`` for torch (scored by the caller)."""
        chunks = range(0, clips.shape[0], self.batch_clips)
        if self._runner is None:
            return torch.cat([self._encoder(clips[s : s + self.batch_clips]) for s in chunks]), None
        outputs = [self._runner(clips[s : s + self.batch_clips]) for s in chunks]  # (scores, embeddings) each
        return torch.cat([e for _, e in outputs]), torch.cat([sc for sc, _ in outputs])

    def _scores(self, emb: torch.Tensor, exported: torch.Tensor | None) -> torch.Tensor:
        """Per-view logits [V, K] (float32): the exported graph's, or the STDD head on the classifier."""
        if exported is not None:
            return exported.float()
        return score(emb, self._weights, self.logit_scale, impl=self.impl)

    def _encode(self, group: list[_Prepared]) -> tuple[list[torch.Tensor], list, list[float]]:
        """Frame embeddings of a group of same-shaped videos: per video float32 [V, T, D], its exported
        scores [V, K] (or None) and its share of the encode time."""
        clips = torch.cat([self._to_model(p.clips) for p in group])  # [sum V, T, 3, S, S]
        self._sync()
        t0 = time.perf_counter()
        emb, scores = self._forward(clips)  # [sum V, T, D], [sum V, K] | None
        self._sync()
        seconds = time.perf_counter() - t0
        sizes = [p.clips.shape[0] for p in group]
        per_video_scores = [None] * len(group) if scores is None else list(scores.split(sizes))
        return list(emb.split(sizes)), per_video_scores, [seconds * n / clips.shape[0] for n in sizes]

    def _prepared(self, items: list[VideoInput]) -> Iterator[_Prepared]:
        """Each video decoded and transformed, in completion order, decoded ahead of the consumer.

        The pool runs :meth:`_prepare` about ``2 * decode_workers`` videos ahead. Files routed to DALI
        gather until ``decode_batch`` of them (or the last ones) go to the DALI thread as one run.
        """
        window = 2 * self.decode_workers
        pool = ThreadPoolExecutor(max_workers=self.decode_workers, thread_name_prefix="stdd-decode")
        dali_pool = None
        if self.dali_problem is None:
            dali_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stdd-dali")
        try:
            queue: deque[tuple[bool, Future]] = deque()  # (is a DALI run, future), in submission order
            todo = iter(enumerate(items))

            def submit() -> None:
                for i, item in todo:
                    queue.append((False, pool.submit(self._prepare, i, item)))
                    return

            for _ in range(window):
                submit()
            waiting: list[_DaliPending] = []
            while queue:
                _, future = queue.popleft()
                out = future.result()
                submit()
                for prep in out if isinstance(out, list) else [out]:
                    if isinstance(prep, _DaliPending):
                        waiting.append(prep)
                    else:
                        yield prep
                more_coming = any(not is_dali for is_dali, _ in queue)
                if waiting and (len(waiting) >= self.decode_batch or not more_coming):
                    queue.append((True, dali_pool.submit(self._decode_dali, waiting)))
                    waiting = []
        finally:  # also when the caller stops early: drop queued decodes
            pool.shutdown(wait=True, cancel_futures=True)
            if dali_pool is not None:
                dali_pool.shutdown(wait=True, cancel_futures=True)

    def _embedded(self, videos: Sequence[VideoInput], progress: bool | None, desc: str) -> Iterator[tuple]:
        """(prepared, embeddings [V, T, D] or None, exported scores or None, encode seconds) per video,
        in completion order."""
        items = list(videos)
        bar = _progress_bar(len(items), progress, desc)
        try:
            pending: list[_Prepared] = []
            for prep in self._prepared(items):
                if prep.error is not None:
                    bar.update(1)
                    yield prep, None, None, 0.0
                    continue
                pending.append(prep)
                if sum(p.clips.shape[0] for p in pending) >= self.batch_clips:
                    yield from self._flush(pending, bar)
                    pending = []
            yield from self._flush(pending, bar)
        finally:
            bar.close()

    def _flush(self, pending: list[_Prepared], bar: object) -> Iterator[tuple]:
        groups: dict[tuple, list[_Prepared]] = {}
        for p in pending:  # clips concatenate only with the same [T, 3, S, S]
            groups.setdefault(tuple(p.clips.shape[1:]), []).append(p)
        for group in groups.values():
            embeddings, scores, seconds = self._encode(group)
            for p, emb, sc, s in zip(group, embeddings, scores, seconds, strict=True):
                p.clips = None  # free the input before the next batch
                bar.update(1)
                yield p, emb, sc, s

    @torch.no_grad()
    def _window_logits(self, clips: torch.Tensor) -> torch.Tensor:
        """Logits of single-view clips (stream windows): float32 [B, T, 3, S, S] -> float32 [B, K] on CPU."""
        emb, exported = self._forward(self._to_model(clips))  # [B, T, D]
        # each window is its own single view: its per-view logits are its logits
        return self._scores(emb, exported).cpu()  # [B, K]

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
        if not self.classes:
            raise ConfigError("this Engine has no classifier: build it with classes=[...] or classifier=...")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k={top_k!r}: must be an int >= 1")
        videos = _as_list(videos)
        names = self.classes
        k = min(top_k, len(names))
        results: list[VideoResult | None] = [None] * len(videos)
        for prep, emb, exported, encode_s in self._embedded(videos, progress, "classifying"):
            if emb is None:
                results[prep.index] = VideoResult(
                    prep.source, error=prep.error, decode_backend=prep.backend, decode_note=prep.note
                )
                continue
            t0 = time.perf_counter()
            with torch.no_grad():
                view_scores = self._scores(emb, exported)  # [V, K]
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
                decode_note=prep.note,
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
        for prep, emb, _, _ in self._embedded(videos, progress, "embedding"):
            if emb is None and on_error == "raise":
                raise prep.error
            out[prep.index] = prep.error if emb is None else emb.cpu()
        return out

    def stream(
        self,
        source: Source,
        window: int | str | None = None,
        stride: int | str = 16,
        *,
        top_k: int = 5,
        on_backpressure: str = "block",
        max_pending: int = 8,
        max_retries: int = 3,
        stall_timeout: float = 10.0,
        retry_delay: float = 0.5,
        fps: float | None = None,
        max_delay: float = 0.0,
        realtime: bool = False,
        source_format: str | None = None,
        source_options: dict[str, str] | None = None,
        callback: Callable[[WindowResult], object] | None = None,
        name: str | None = None,
    ) -> WindowStream:
        """Classify a live stream window by window: a :class:`~stdd_fast.stream.WindowStream` of WindowResults.

        source: a file path, a URL or device PyAV opens, an iterable of (frame uint8 [H, W, 3] RGB,
        timestamp seconds) pairs, or a callable returning one (reconnectable). window: frames per
        window span (``None``: the model's T frames at its sampling rate; ``"2s"``: seconds).
        stride: frames (``16``) or seconds (``"0.5s"``) between window starts. Other options:
        :class:`~stdd_fast.stream.StreamConfig`. ``callback(result)`` sees every result;
        ``engine.stream(src, callback=f).run()`` drives it to the end and returns the counters.

        Each window gives ``start_time``, ``end_time``, ``labels``, ``scores``, ``latency``,
        ``error``; a stream that fails for good ends with one result whose ``error`` is a StreamError.
        """
        names = None if name is None else [name]
        return self.stream_many(
            [source],
            window,
            stride,
            top_k=top_k,
            on_backpressure=on_backpressure,
            max_pending=max_pending,
            max_retries=max_retries,
            stall_timeout=stall_timeout,
            retry_delay=retry_delay,
            fps=fps,
            max_delay=max_delay,
            realtime=realtime,
            source_format=source_format,
            source_options=source_options,
            callback=callback,
            names=names,
        )

    def stream_many(
        self,
        sources: Sequence[Source],
        window: int | str | None = None,
        stride: int | str = 16,
        *,
        top_k: int = 5,
        on_backpressure: str = "block",
        max_pending: int = 8,
        max_retries: int = 3,
        stall_timeout: float = 10.0,
        retry_delay: float = 0.5,
        fps: float | None = None,
        max_delay: float = 0.0,
        realtime: bool = False,
        source_format: str | None = None,
        source_options: dict[str, str] | None = None,
        callback: Callable[[WindowResult], object] | None = None,
        names: Sequence[str] | None = None,
    ) -> WindowStream:
        """Several streams at once, their ready windows scored together in one batched model call.

        Same options as :meth:`stream`; ``names``: one per source (default: the path/URL, or
        ``<stream i>``). A failing stream ends with its error result; the others continue.
        """
        config = StreamConfig(
            window=None if window is None else parse_span(window, "window"),
            stride=parse_span(stride, "stride"),
            top_k=top_k,
            on_backpressure=on_backpressure,
            max_pending=max_pending,
            max_retries=max_retries,
            stall_timeout=stall_timeout,
            retry_delay=retry_delay,
            fps=fps,
            max_delay=max_delay,
            realtime=realtime,
            source_format=source_format,
            source_options=dict(source_options or {}),
        )
        return WindowStream(self, sources, config, callback, names)


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
