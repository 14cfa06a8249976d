"""The Engine: video files (or tensors) in, ranked actions out; a thin façade over two parts.

    VideoLoader (sampling -> decode -> transforms)  ->  Predictor (encoder + classifier)  ->  top-k

:class:`~stdd_fast.video.loader.VideoLoader` decodes ahead of the model (PyAV, or DALI on a GPU);
the predictor (:mod:`stdd_fast.predict`) is PyTorch, ONNX Runtime or TensorRT, built from one
:class:`~stdd_fast.predict.PredictorConfig`; :mod:`stdd_fast.predict.batching` batches the clips of
several videos into one call. A video that fails carries its typed error in its result; the others
are unaffected. Live streams:
:meth:`Engine.stream` (:mod:`stdd_fast.stream`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from stdd_fast.checks import check_int
from stdd_fast.choices import ON_ERRORS
from stdd_fast.classifier import Classifier
from stdd_fast.decisions import check_views
from stdd_fast.errors import ConfigError, StddError, choice_error
from stdd_fast.head import rank_views
from stdd_fast.predict.batching import predict_videos
from stdd_fast.predict.build import build_predictor
from stdd_fast.predict.config import ClassSource, PredictorConfig
from stdd_fast.results import Timings, VideoResult, WindowResult
from stdd_fast.settings import settings
from stdd_fast.stream import Source, StreamConfig, WindowStream
from stdd_fast.terminal import progress_bar
from stdd_fast.video.config import DecodeConfig, SamplingConfig
from stdd_fast.video.loader import VideoInput, VideoLoader


class Engine:
    """STDD zero-shot action recognition on videos and streams.

    weights: a checkpoint, an :class:`STDDModel` or a ``stdd-export`` file; classes / classifier: the
    classes (names, an artifact or a :class:`~stdd_fast.predict.ClassSource`). The rest in config
    objects (``predictor=`` :class:`~stdd_fast.predict.PredictorConfig`, ``sampling=``
    :class:`SamplingConfig` or its mode ``"official"`` | ``"uniform"``, ``decode=`` :class:`DecodeConfig`)
    or as their fields, flat (:mod:`stdd_fast.settings`): ``xprompt`` / ``askg``; ``backend``, ``device``,
    ``dtype``, ``impl``, ``compile``, ``cuda_graphs``, ``batch_clips``, ``memory_budget_mb`` (activations),
    ``quantize``, ``gemm``, ``arch``, ``stca``, ``trust_pickle``; ``num_views``, ``num_frames``,
    ``sampling_rate``, ``target_fps``; ``decode_backend``, ``decode_workers``, ``decode_threads``,
    ``decode_batch``, ``decode_memory_mb``. Defaults: CPU, fp32, the fastest exact backend, the
    official sampling. Results are the same objects for every backend. ``quiet``: no :mod:`~stdd_fast.notices`.
    """

    def __init__(
        self,
        weights: str | Path | torch.nn.Module,
        classes: Sequence[str] | ClassSource | None = None,
        classifier: str | Path | Classifier | None = None,
        *,
        predictor: PredictorConfig | None = None,
        sampling: str | SamplingConfig | None = None,
        decode: DecodeConfig | None = None,
        quiet: bool = False,
        **options,
    ) -> None:
        if isinstance(sampling, str):
            options["sampling_mode"] = sampling
            sampling = None
        if isinstance(classes, ClassSource):
            given_classes = ClassSource.of(classes, classifier)
        else:
            given_classes = None
            options.update({k: v for k, v in (("classes", classes), ("classifier", classifier)) if v is not None})
        chosen = settings(options, predictor=predictor, classes=given_classes, sampling=sampling, decode=decode)
        self.settings = chosen
        self.sampling, self.decode = chosen.sampling, chosen.decode
        self.predictor = build_predictor(
            weights, chosen.classes, config=chosen.predictor, num_frames=chosen.sampling.num_frames, quiet=quiet
        )
        self.loader = VideoLoader(self.sampling, self.decode, self.predictor.image_size, self.predictor.device)
        check_views(self.predictor, self.sampling)

    # what the parts say about themselves
    backend = property(lambda self: self.predictor.backend)
    device = property(lambda self: self.predictor.device)
    dtype = property(lambda self: self.predictor.dtype)
    linear_format = property(lambda self: self.predictor.linear_format)  # "fp8" (dtype="fp8"), "int8" (quantize)
    impl = property(lambda self: self.predictor.impl)
    backend_choice = property(lambda self: self.predictor.backend_choice)
    arch = property(lambda self: self.predictor.arch)
    image_size = property(lambda self: self.predictor.image_size)
    batch_clips = property(lambda self: self.predictor.batch_clips)
    logit_scale = property(lambda self: self.predictor.logit_scale)
    model = property(lambda self: getattr(self.predictor, "model", None))
    decode_backend = property(lambda self: self.decode.backend)
    dali_problem = property(lambda self: self.loader.dali_problem)

    @property
    def classes(self) -> list[str]:
        return list(self.predictor.classes or ())

    @property
    def classifier(self) -> Classifier | None:
        return getattr(self.predictor, "classifier", None)

    def set_classifier(self, classifier: str | Path | Classifier) -> None:
        """Score with another classifier from the next batch or window on (a path or a Classifier; not None)."""
        if classifier is None:  # a running classify or stream would go on without labels
            raise ConfigError("set_classifier(None): an Engine that classifies needs a classifier file or a Classifier")
        classifier = Classifier.load(classifier) if isinstance(classifier, str | Path) else classifier
        check_views(classifier, self.sampling)  # thresholds calibrated for other views are refused, with the reason
        self.predictor.set_classifier(classifier)

    def __repr__(self) -> str:
        s = self.sampling
        linear = f"linear_format={self.linear_format}, " if self.linear_format else ""
        return (
            f"Engine(arch={self.arch.name}, backend={self.backend}, device={self.device}, dtype={self.dtype}, {linear}"
            f"impl={self.impl}, classes={len(self.classes)}, views={s.num_views}, frames={s.num_frames}, "
            f"batch_clips={self.batch_clips}, decode_backend={self.decode_backend})"
        )

    def classify(
        self, videos: VideoInput | Sequence[VideoInput], top_k: int = 5, progress: bool | None = None
    ) -> list[VideoResult]:
        """Rank the classes for each video: one :class:`VideoResult` per input, in input order.

        videos: paths, uint8 frames [V, T, H, W, 3], or normalised float clips [V, T, 3, S, S]
        (a single one is accepted too). A video that fails gets ``result.error`` (a StddError) and
        never stops the others. ``progress``: a tqdm bar (None: when stderr is a terminal).
        """
        return list(self.classify_iter(videos, top_k, progress))

    def classify_iter(self, videos: VideoInput | Sequence[VideoInput], top_k: int = 5, progress: bool | None = None):
        """:meth:`classify` one result at a time, in input order, each as soon as it is ready."""
        if not self.classes:
            raise ConfigError("this Engine has no classifier: build it with classes=[...] or classifier=...")
        check_int("top_k", top_k)
        items = _as_list(videos)
        bar = progress_bar(len(items), progress, "classifying", "video")
        try:
            for p in predict_videos(self.predictor, self.loader.load(items), bar):
                yield self._video_result(p, top_k)
        finally:
            bar.close()

    def _video_result(self, p, top_k: int) -> VideoResult:
        v = p.loaded
        if p.logits is None:
            return VideoResult(v.source, error=v.error, decode_backend=v.backend, decode_note=v.note)
        t0 = time.perf_counter()
        ranked = rank_views(p.logits, top_k)
        detected = p.detected
        return VideoResult(
            source=v.source,
            labels=[p.classes[i] for i in ranked.top],
            scores=ranked.scores,
            probabilities=ranked.probabilities,
            logits=ranked.logits,
            view_scores=ranked.view_scores,
            indices=v.indices,
            timings=Timings(v.decode_s, v.preprocess_s, p.encode_s, time.perf_counter() - t0),
            decode_backend=v.backend,
            decode_note=v.note,
            detected=detected,
        )

    def embed(
        self, videos: VideoInput | Sequence[VideoInput], progress: bool | None = None, on_error: str = "raise"
    ) -> list[torch.Tensor | StddError]:
        """Frame embeddings per video: float32 [V, T, D] on CPU, L2-normalised, in input order.

        ``on_error="raise"`` raises the first failing video's error; ``"return"`` puts the error
        in that video's place.
        """
        if on_error not in ON_ERRORS:
            raise choice_error("on_error", on_error, ON_ERRORS)
        items = _as_list(videos)
        bar = progress_bar(len(items), progress, "embedding", "video")
        out: list[torch.Tensor | StddError] = []
        try:
            for p in predict_videos(self.predictor, self.loader.load(items), bar):
                if p.embeddings is None and on_error == "raise":
                    raise p.loaded.error
                out.append(p.loaded.error if p.embeddings is None else p.embeddings.cpu())
        finally:
            bar.close()
        return out

    def stream(self, source: Source, window: int | str | None = None, stride: int | str = 16, *, name=None, **options):
        """Classify a live stream window by window: a :class:`~stdd_fast.stream.WindowStream` of WindowResults.

        source: a file path, a URL or device PyAV opens, an iterable of (frame uint8 [H, W, 3] RGB,
        timestamp seconds) pairs, or a callable returning one (reconnectable). window: frames per
        window span (None: the model's T frames at its sampling rate; "2s": seconds). stride:
        frames (16) or seconds ("0.5s") between window starts. ``config=`` a :class:`StreamConfig`,
        or its fields as keywords (``top_k``, ``on_backpressure``, ``max_retries``...); ``callback=``.
        """
        return self.stream_many([source], window, stride, names=None if name is None else [name], **options)

    def stream_many(
        self,
        sources: Sequence[Source],
        window: int | str | None = None,
        stride: int | str = 16,
        *,
        config: StreamConfig | None = None,
        callback: Callable[[WindowResult], object] | None = None,
        names: Sequence[str] | None = None,
        **options,
    ) -> WindowStream:
        """Several streams at once, their ready windows scored together in one predictor call.

        Same options as :meth:`stream`; ``names``: one per source (default: the path/URL, or
        ``<stream i>``). A failing stream ends with its error result; the others continue.
        """
        if config is None:
            config = StreamConfig.from_options(window, stride, **options)
        elif options or window is not None or stride != 16:
            raise ConfigError("pass config=StreamConfig(...) or its fields as keywords, not both")
        return WindowStream(self.predictor, self.sampling, sources, config, callback, names)

    def timeline(self, video: str | Path, window: int | str | None = None, stride: int | str = 16, **options):
        """Which action when in one file: a :class:`~stdd_fast.timeline.run.Timeline` of segments, the file cut
        as a stream is (``segments=SegmentConfig(...)``, ``keep_windows=``, ``progress=``, stream options)."""
        from stdd_fast.timeline.run import timeline

        return timeline(self, video, window=window, stride=stride, **options)

    def events(self, sources, window: int | str | None = None, stride: int | str = 16, **options):
        """Live events (:class:`~stdd_fast.events.Event`, open and close) of one source or a list of them, as they
        happen (:func:`stdd_fast.timeline.run.events`; the same segmenter as :meth:`timeline`)."""
        from stdd_fast.timeline.run import events

        many = isinstance(sources, list | tuple)
        return events(self, list(sources) if many else [sources], window=window, stride=stride, **options)


def _as_list(videos: VideoInput | Sequence[VideoInput]) -> list[VideoInput]:
    if isinstance(videos, str | Path | torch.Tensor):
        return [videos]
    return list(videos)
