"""The Triton Python-backend model ``stdd``: encoded video files in, ranked actions out.

Triton's Python backend imports the repository's ``stdd/1/model.py``, a few lines written by
:mod:`stdd_fast.serve.repository` that put this environment's site folders on ``sys.path`` and
re-export :class:`TritonPythonModel` from here. Its ``config.pbtxt`` ``parameters`` are the fields
of :class:`ServingSettings` (weights, classifier artifact, backend, dtype, sampling...).

One execution gets a dynamic batch of requests; each request holds ``VIDEO`` (BYTES [n, 1]: n
video files, any container/codec FFmpeg reads) and optionally ``TOP_K`` (INT32 [n, 1], default 5).
:class:`VideoService` then

1. writes each file to the instance's scratch folder (bounded by ``max_video_mb``) and refuses
   empty ones and videos of fewer than ``min_frames`` frames;
2. loads all of them with the :class:`~stdd_fast.video.loader.VideoLoader` (the official
   sampling; PyAV, or DALI on a GPU), decoded ahead on its threads;
3. runs the predictor on the clips of all good videos together
   (:func:`~stdd_fast.batching.predict_videos`: ``batch_clips`` clips a call);
4. ranks each video exactly as :meth:`Engine.classify <stdd_fast.engine.Engine.classify>` does
   (view logits summed, top-k), so ``LABELS`` / ``SCORES`` are its ``labels`` / ``scores``.

A request with a video that failed gets an error response naming the problem; the other requests
of the batch get their results. Nothing here needs Triton except :class:`TritonPythonModel`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stdd_fast.batching import PredictedVideo, predict_videos
from stdd_fast.choices import BACKENDS, DTYPE_NAMES, IMPLS
from stdd_fast.errors import ConfigError, StddError, VideoError, choice_error
from stdd_fast.head import rank_views
from stdd_fast.video.loader import DecodeConfig, VideoLoader
from stdd_fast.video.pyav import probe
from stdd_fast.video.sampling import SamplingConfig

DEFAULT_TOP_K = 5
INPUT_VIDEO, INPUT_TOP_K = "VIDEO", "TOP_K"
OUTPUT_LABELS, OUTPUT_SCORES = "LABELS", "SCORES"
SCRATCH_ENV = "STDD_SERVE_SCRATCH"  # where instances write request files (set by serve.server)


@dataclass(frozen=True)
class ServingSettings:
    """How the ``stdd`` model is built: the ``parameters`` of its config.pbtxt, one string per field.

    weights: checkpoint (torch) or exported ``.onnx`` / ``.plan``; a relative path is relative to
    the model's folder. classifier: artifact path ("": the classes baked into an exported graph).
    backend: ``build_predictor``'s backend ("": its default). dtype: "auto" = bf16 on a GPU, fp32
    on the CPU. num_frames / sampling_rate / target_fps / num_views / sampling: the
    :class:`SamplingConfig`. batch_clips: clips per predictor call (None: by the memory budget).
    max_video_mb: the largest file a request may send. min_frames: fewer frames is an error (None:
    one clip, ``num_frames``; 1 accepts every video, as the official protocol repeats the last frame
    of a short one). cpu_threads: torch threads of a CPU instance (None: torch's default).
    """

    weights: str
    classifier: str = ""
    backend: str = ""
    dtype: str = "auto"
    impl: str = "auto"
    arch: str = ""
    trust_pickle: bool = False
    num_frames: int = 8
    sampling_rate: int = 16
    target_fps: float = 30.0
    num_views: int = 3
    sampling: str = "official"
    batch_clips: int | None = None
    decode_backend: str = "auto"
    decode_memory_mb: float = 2048.0
    max_video_mb: float = 256.0
    min_frames: int | None = None
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.weights, str) or not self.weights:
            raise ConfigError(f"serving weights={self.weights!r}: name a checkpoint or an exported .onnx/.plan file")
        if self.backend and self.backend not in BACKENDS:
            raise choice_error("backend", self.backend, BACKENDS)
        if self.dtype != "auto" and self.dtype not in DTYPE_NAMES:
            raise choice_error("dtype", self.dtype, ("auto", *DTYPE_NAMES))
        if self.impl not in IMPLS:
            raise choice_error("impl", self.impl, IMPLS)
        self.sampling_config()  # each raises the ConfigError naming its field
        self.decode_config()
        for name in ("batch_clips", "min_frames", "cpu_threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"serving {name}={value!r}: must be an int >= 1 or unset")
        mb = self.max_video_mb
        if isinstance(mb, bool) or not isinstance(mb, int | float) or not (math.isfinite(mb) and mb > 0):
            raise ConfigError(f"serving max_video_mb={mb!r}: must be a finite number of MiB > 0")

    @property
    def frame_floor(self) -> int:
        """The fewest frames a served video may have."""
        return self.num_frames if self.min_frames is None else self.min_frames

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(self.num_frames, self.sampling_rate, self.target_fps, self.num_views, self.sampling)

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(self.decode_backend, memory_budget_mb=self.decode_memory_mb)

    def to_parameters(self) -> dict[str, str]:
        """Every field as a config.pbtxt parameter string (None: "", booleans: "true" / "false")."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        return out

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> ServingSettings:
        """Parse :meth:`to_parameters` strings back (ConfigError naming an unknown or malformed one)."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(parameters) - names)
        if unknown:
            raise ConfigError(f"config.pbtxt parameters {unknown} are not stdd settings; known: {sorted(names)}")
        values = {}
        for name, text in parameters.items():
            kind = hints[name]
            optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
            if optional:
                kind = next(k for k in typing.get_args(kind) if k is not type(None))
            if optional and text == "":
                values[name] = None
            elif kind is bool:
                if text not in ("true", "false"):
                    raise ConfigError(f"config.pbtxt parameter {name}={text!r}: must be 'true' or 'false'")
                values[name] = text == "true"
            elif kind in (int, float):
                try:
                    values[name] = kind(text)
                except ValueError:
                    raise ConfigError(f"config.pbtxt parameter {name}={text!r}: must be {kind.__name__}") from None
            else:
                values[name] = text
        return cls(**values)


@dataclass(frozen=True)
class Ranked:
    """One video's top-k: class names, best first, and their scores (``VideoResult.labels`` / ``.scores``)."""

    labels: list[str]
    scores: list[float]


def rank(p: PredictedVideo, top_k: int) -> Ranked:
    """A video's ranking from its view logits [V, K] (:func:`~stdd_fast.head.rank_views`, as the Engine ranks)."""
    ranked = rank_views(p.logits, top_k)
    return Ranked([p.classes[i] for i in ranked.top], ranked.scores)


def read_request(videos: np.ndarray, top_k: np.ndarray | None) -> tuple[list[bytes], int]:
    """A request's inputs -> (its video files, top-k). videos: object [n, 1] of bytes; top_k: int [n, 1].

    Triton checks the data types and shapes the config declares; this checks the values (ConfigError).
    """
    if videos.ndim != 2 or videos.shape[1] != 1 or videos.shape[0] < 1:
        raise ConfigError(f"{INPUT_VIDEO} must be BYTES [n, 1] (n >= 1 video files); got shape {list(videos.shape)}")
    files = [v if isinstance(v, bytes) else v.encode() if isinstance(v, str) else bytes(v) for v in videos[:, 0]]
    if top_k is None:
        return files, DEFAULT_TOP_K
    values = sorted({int(k) for k in np.asarray(top_k).reshape(-1)})
    if top_k.shape != videos.shape or len(values) != 1:
        raise ConfigError(
            f"{INPUT_TOP_K} must be INT32 [n, 1] like {INPUT_VIDEO} with one value for the request; "
            f"got shape {list(top_k.shape)} with values {values[:5]}"
        )
    if values[0] < 1:
        raise ConfigError(f"{INPUT_TOP_K}={values[0]}: must be >= 1 (how many classes to return per video)")
    return files, values[0]


def _public(error: StddError, path: Path, row: int) -> StddError:
    """The error of VIDEO row ``row``, worded without the scratch file's name (same type)."""
    text = str(error).replace(f"{path}: ", "").replace(str(path), "the video")
    public = type(error)(f"{INPUT_VIDEO}[{row}]: {text}")
    public.__cause__ = error.__cause__
    return public


class VideoService:
    """VideoLoader + Predictor for served requests (no Triton types: tests call it directly).

    ``model_dir``: relative paths of the settings are relative to it. ``device``: where the clips
    and the model go (the Triton instance's device).
    """

    def __init__(self, settings: ServingSettings, model_dir: str | Path, device: torch.device | str = "cpu") -> None:
        from stdd_fast.devices import default_dtype
        from stdd_fast.predictor_factory import build_predictor

        self.settings = settings
        device = torch.device(device)
        if device.type == "cpu" and settings.cpu_threads is not None:
            torch.set_num_threads(settings.cpu_threads)  # instances share the cores instead of oversubscribing
        model_dir = Path(model_dir)
        weights = model_dir / settings.weights  # an absolute path stays itself
        classifier = model_dir / settings.classifier if settings.classifier else None
        keywords = {"backend": settings.backend} if settings.backend else {}
        self.predictor = build_predictor(
            weights, classifier=classifier, device=device,
            dtype=default_dtype(device) if settings.dtype == "auto" else settings.dtype, impl=settings.impl,
            arch=settings.arch or None, trust_pickle=settings.trust_pickle, batch_clips=settings.batch_clips,
            num_frames=settings.num_frames, **keywords,
        )  # fmt: skip
        if not self.predictor.classes:
            raise ConfigError(f"{weights}: the stdd model needs classes: write the repository with a classifier")
        self.loader = VideoLoader(
            settings.sampling_config(), settings.decode_config(), self.predictor.image_size, self.predictor.device
        )
        # under the server's work folder when stdd serve runs it, so a killed instance leaves nothing behind
        self._scratch = Path(tempfile.mkdtemp(prefix="stdd-scratch-", dir=os.environ.get(SCRATCH_ENV) or None))
        self._names = itertools.count()

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _write(self, data: bytes, row: int) -> Path:
        """The file's bytes in the scratch folder, after the checks that need no decoding."""
        limit = self.settings.max_video_mb
        if not data:
            raise VideoError(f"{INPUT_VIDEO}[{row}] is empty (0 bytes): send the bytes of a video file")
        if len(data) > limit * 2**20:
            raise VideoError(
                f"{INPUT_VIDEO}[{row}] is {len(data) / 2**20:.1f} MiB, over this server's limit of {limit:g} MiB "
                "(stdd serve --max-video-mb)"
            )
        path = self._scratch / f"{next(self._names)}.video"
        path.write_bytes(data)
        try:
            self._check_length(path, row)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _check_length(self, path: Path, row: int) -> None:
        floor = self.settings.frame_floor
        if floor <= 1:
            return
        try:
            info = probe(path)
        except StddError as e:
            raise _public(e, path, row) from None
        frames = min(info.num_frames, info.indexed_frames)
        if frames < floor:
            raise VideoError(
                f"{INPUT_VIDEO}[{row}] has {frames} frame(s), fewer than this server's minimum of {floor} "
                f"(one clip of {self.settings.num_frames} frames; stdd serve --min-frames 1 accepts it)"
            )

    def classify(self, requests: Sequence[tuple[Sequence[bytes], int]]) -> list[list[Ranked] | StddError]:
        """Each request's videos ranked (one list per request, one Ranked per video), or its first error.

        requests: (video files, top_k) per request. All good videos of all requests are decoded
        together and share predictor calls.
        """
        answers: list[list[Ranked] | StddError] = [[] for _ in requests]
        written: list[tuple[int, int, Path]] = []  # (request, row, file)
        try:
            for r, (files, _) in enumerate(requests):
                for row, data in enumerate(files):
                    try:
                        written.append((r, row, self._write(data, row)))
                    except StddError as e:
                        answers[r] = e
                        break
            jobs = [job for job in written if not isinstance(answers[job[0]], StddError)]
            for p in predict_videos(self.predictor, self.loader.load([path for _, _, path in jobs])):
                r, row, path = jobs[p.loaded.index]
                if isinstance(answers[r], StddError):
                    continue  # an earlier video of this request failed: the request gets that error
                if p.logits is None:
                    answers[r] = _public(p.loaded.error, path, row)
                else:
                    answers[r].append(rank(p, requests[r][1]))
        finally:
            for _, _, path in written:
                path.unlink(missing_ok=True)
        return answers


class TritonPythonModel:
    """Triton's Python-backend entry points for model ``stdd`` (each instance is a stub process)."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # exists inside Triton's Python-backend stub only

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        settings = ServingSettings.from_parameters(parameters)
        kind, index = args.get("model_instance_kind", "CPU"), args.get("model_instance_device_id", "0")
        device = torch.device(f"cuda:{index}" if kind == "GPU" else "cpu")
        self.service = VideoService(settings, Path(args["model_repository"]), device)

    def execute(self, requests: list) -> list:
        pb = self._pb
        read: list[tuple[list[bytes], int] | StddError] = []
        for request in requests:
            videos, top_k = (pb.get_input_tensor_by_name(request, name) for name in (INPUT_VIDEO, INPUT_TOP_K))
            try:
                if videos is None:  # Triton lets a request with only the optional input through
                    raise ConfigError(f"the request has no {INPUT_VIDEO} input: send the files as BYTES [n, 1]")
                read.append(read_request(videos.as_numpy(), None if top_k is None else top_k.as_numpy()))
            except StddError as e:
                read.append(e)
        answers = iter(self.service.classify([r for r in read if not isinstance(r, StddError)]))
        return [self._response(r if isinstance(r, StddError) else next(answers)) for r in read]

    def _response(self, answer: list[Ranked] | StddError):
        pb = self._pb
        if isinstance(answer, StddError):
            code = getattr(pb.TritonError, "INVALID_ARG", None)
            message = f"{type(answer).__name__}: {answer}"
            error = pb.TritonError(message) if code is None else pb.TritonError(message, code)
            return pb.InferenceResponse(output_tensors=[], error=error)
        labels = np.array([[name.encode() for name in r.labels] for r in answer], dtype=np.object_)  # [n, k]
        scores = np.array([r.scores for r in answer], dtype=np.float32)  # [n, k]
        return pb.InferenceResponse([pb.Tensor(OUTPUT_LABELS, labels), pb.Tensor(OUTPUT_SCORES, scores)])

    def finalize(self) -> None:
        self.service.close()
