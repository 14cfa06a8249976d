"""The Triton Python-backend model ``stdd``: encoded video files in, ranked actions out.

Triton's Python backend imports the repository's ``stdd/1/model.py``, a few lines written by
:mod:`stdd_fast.serve.repository` that put this environment's site folders on ``sys.path`` and
re-export :class:`TritonPythonModel` from here. Its ``config.pbtxt`` ``parameters`` are the fields
of :class:`ServingSettings` (weights, classifier artifact, backend, dtype, sampling...).

One execution gets a dynamic batch of requests; each request holds ``VIDEO`` (BYTES [n, 1]: n
video files, any container/codec FFmpeg reads) and optionally ``TOP_K`` (INT32 [n, 1], default 5).
:class:`VideoService` then

1. writes each file to the instance's scratch folder (bounded by ``max_video_mb``) and refuses
   empty ones, videos of fewer than ``min_frames`` frames and videos whose decoding would take more
   than the decode memory budget (read from the header, before any decoding);
2. loads all of them with the :class:`~stdd_fast.video.loader.VideoLoader` (the official
   sampling; PyAV, or DALI on a GPU), decoded ahead on its threads;
3. runs the predictor on the clips of all good videos together
   (:func:`~stdd_fast.predict.batching.predict_videos`: ``batch_clips`` clips a call);
4. ranks each video exactly as :meth:`Engine.classify <stdd_fast.engine.Engine.classify>` does
   (view logits summed, top-k), so ``LABELS`` / ``SCORES`` are its ``labels`` / ``scores``.

A request with a video that failed gets an error response naming the problem; the other requests
of the batch get their results. Nothing here needs Triton except :class:`TritonPythonModel`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import struct
import tempfile
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stdd_fast.checks import check_int, check_number
from stdd_fast.config import ArchConfig
from stdd_fast.decisions import Detection, check_views
from stdd_fast.errors import ConfigError, StddError, VideoError
from stdd_fast.head import rank_views
from stdd_fast.predict.batching import PredictedVideo, predict_videos
from stdd_fast.predict.config import RESOLVED_WHERE_BUILT, PredictorConfig
from stdd_fast.video.config import DecodeConfig, SamplingConfig
from stdd_fast.video.loader import VideoLoader
from stdd_fast.video.pyav import decode_bytes, probe

DEFAULT_TOP_K = 5
INPUT_VIDEO, INPUT_TOP_K = "VIDEO", "TOP_K"
OUTPUT_LABELS, OUTPUT_SCORES, OUTPUT_DETECTED = "LABELS", "SCORES", "DETECTED"
SCRATCH_ENV = "STDD_SERVE_SCRATCH"  # where instances write request files (set by serve.server)


# what the text of a config.pbtxt parameter can hold: these config objects' scalar fields, by section
_SECTIONS = {"predictor": PredictorConfig, "sampling": SamplingConfig, "decode": DecodeConfig}
_NOT_SERVED = {"predictor": ("stca",)}  # an STCAConfig has no one-string form: a checkpoint's own is used


@dataclass(frozen=True)
class ServingSettings:
    """How the ``stdd`` model is built: the ``parameters`` of its config.pbtxt, one string each.

    weights: checkpoint (torch) or exported ``.onnx`` / ``.plan``; a relative path is relative to the
    model's folder. classifier: artifact path ("": the classes baked into an exported graph).
    predictor / sampling / decode: the config objects (parameters ``predictor.device``,
    ``sampling.num_views``...; ``predictor.device`` is the Triton instance's, set per instance).
    max_video_mb: the largest file a request may send. min_frames: fewer frames is an error (None:
    one clip, ``num_frames``; 1 accepts every video, as the official protocol repeats the last frame
    of a short one). cpu_threads: torch threads of a CPU instance (None: torch's default).
    """

    weights: str
    classifier: str = ""
    predictor: PredictorConfig = RESOLVED_WHERE_BUILT
    sampling: SamplingConfig = SamplingConfig()
    decode: DecodeConfig = DecodeConfig()
    max_video_mb: float = 256.0
    min_frames: int | None = None
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.weights, str) or not self.weights:
            raise ConfigError(f"serving weights={self.weights!r}: name a checkpoint or an exported .onnx/.plan file")
        for section, kind in _SECTIONS.items():
            if not isinstance(getattr(self, section), kind):
                raise ConfigError(f"serving {section} must be a {kind.__name__}; got {getattr(self, section)!r}")
        check_int("serving min_frames", self.min_frames, optional=True)
        check_int("serving cpu_threads", self.cpu_threads, optional=True)
        check_number("serving max_video_mb", self.max_video_mb, unit="MiB")

    @property
    def frame_floor(self) -> int:
        """The fewest frames a served video may have."""
        return self.sampling.num_frames if self.min_frames is None else self.min_frames

    def to_parameters(self) -> dict[str, str]:
        """Every setting as a config.pbtxt parameter string (None: "", booleans: "true" / "false")."""
        out = {}
        for owner, prefix in ((self, ""), *((getattr(self, k), f"{k}.") for k in _SECTIONS)):
            for f in dataclasses.fields(owner):
                value = getattr(owner, f.name)
                if f.name in _SECTIONS or f.name in _NOT_SERVED.get(prefix[:-1], ()):
                    continue
                out[prefix + f.name] = _text(value)
        return out

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> ServingSettings:
        """Parse :meth:`to_parameters` strings back (ConfigError naming an unknown or malformed one)."""
        values: dict[str, dict[str, object]] = {"": {}, **{k: {} for k in _SECTIONS}}
        kinds = {"": cls, **_SECTIONS}
        known = set(cls("w").to_parameters())
        unknown = sorted(set(parameters) - known)
        if unknown:
            raise ConfigError(f"config.pbtxt parameters {unknown} are not stdd settings; known: {sorted(known)}")
        for key, text in parameters.items():
            section, _, name = key.rpartition(".")
            values[section][name] = _value(kinds[section], name, text, key)
        sections = {k: kind(**values[k]) for k, kind in _SECTIONS.items()}
        return cls(**values[""], **sections)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return value.name if isinstance(value, ArchConfig) else str(value)


def _value(kind: type, name: str, text: str, key: str) -> object:
    """The value of field ``name`` of ``kind`` written as ``text`` (ConfigError naming ``key`` when malformed)."""
    hint = typing.get_type_hints(kind)[name]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if text == "" and type(None) in options:
        return None
    for option in (o for o in options if o is not type(None)):
        if typing.get_origin(option) is typing.Literal:
            return text  # the config checks it against its choices
        if option is bool and text in ("true", "false"):
            return text == "true"
        if option in (int, float):
            try:
                return option(text)
            except ValueError:
                continue
        if option is str:
            return text
    kinds = " or ".join("none" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"config.pbtxt parameter {key}={text!r}: must be {kinds}")


@dataclass(frozen=True)
class Ranked:
    """One video's top-k: class names, best first, and their scores (``VideoResult.labels`` / ``.scores``); and
    the classes it shows (``VideoResult.detected``; None when the classifier carries no decisions)."""

    labels: list[str]
    scores: list[float]
    detected: list[Detection] | None = None

    def detected_json(self) -> bytes:
        """``DETECTED``: a JSON list of ``{label, score, threshold, confidence}``, ``null`` without decisions."""
        return json.dumps(None if self.detected is None else [d.to_dict() for d in self.detected]).encode()


def rank(p: PredictedVideo, top_k: int) -> Ranked:
    """A video's ranking from its view logits [V, K] (:func:`~stdd_fast.head.rank_views`, as the Engine ranks)."""
    ranked = rank_views(p.logits, top_k)
    return Ranked([p.classes[i] for i in ranked.top], ranked.scores, p.detected)


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


def _as_numpy(tensor, name: str) -> np.ndarray | None:
    """A request input's array (None when absent); ConfigError when its data does not decode as what it declares."""
    if tensor is None:
        return None
    try:
        return tensor.as_numpy()
    except struct.error:  # Triton's BYTES reader: raw bytes, not length-prefixed elements
        why = "its data is not BYTES elements (each is a 4-byte little-endian length, then that many bytes)"
    except ValueError:  # the elements do not fill the shape the request declares
        why = "its data holds another number of elements than its declared shape"
    raise ConfigError(
        f"{name}: {why}; send {INPUT_VIDEO} as BYTES [n, 1] (one video file an element) and {INPUT_TOP_K} as "
        "INT32 [n, 1] (tritonclient's InferInput.set_data_from_numpy writes them so)"
    )


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
        from stdd_fast.predict.build import build_predictor

        self.settings = settings
        device = torch.device(device)
        if device.type == "cpu" and settings.cpu_threads is not None:
            torch.set_num_threads(settings.cpu_threads)  # instances share the cores instead of oversubscribing
        model_dir = Path(model_dir)
        weights = model_dir / settings.weights  # an absolute path stays itself
        classifier = model_dir / settings.classifier if settings.classifier else None
        config = dataclasses.replace(settings.predictor, device=str(device))  # the Triton instance's device
        self.predictor = build_predictor(
            weights, classifier=classifier, config=config, num_frames=settings.sampling.num_frames
        )
        check_views(self.predictor, settings.sampling)
        if not self.predictor.classes:
            raise ConfigError(f"{weights}: the stdd model needs classes: write the repository with a classifier")
        self.loader = VideoLoader(settings.sampling, settings.decode, self.predictor.image_size, self.predictor.device)
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
            self._check_header(path, row)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _check_header(self, path: Path, row: int) -> None:
        """What the file's header and packet index tell, before the request waits for decoding: enough frames,
        and a decode that fits the memory budget (a 200 KB file may claim 8192x8192 frames)."""
        try:
            info = probe(path)
        except StddError as e:
            raise _public(e, path, row) from None
        decode = self.settings.decode
        distinct = torch.unique(self.settings.sampling.indices(info)).numel()
        needed = sum(decode_bytes(info, distinct, decode.threads))
        if needed > decode.frame_budget_mb * 2**20:
            raise VideoError(
                f"{INPUT_VIDEO}[{row}] is a {info.width}x{info.height} video: decoding it needs about "
                f"{needed / 2**20:.0f} MiB, over this server's decode memory budget of {decode.frame_budget_mb:g} MiB "
                "per video (stdd serve --frame-budget-mb)"
            )
        floor = self.settings.frame_floor
        frames = min(info.num_frames, info.indexed_frames)
        if floor > 1 and frames < floor:
            raise VideoError(
                f"{INPUT_VIDEO}[{row}] has {frames} frame(s), fewer than this server's minimum of {floor} "
                f"(one clip of {self.settings.sampling.num_frames} frames; stdd serve --min-frames 1 accepts it)"
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
                read.append(read_request(_as_numpy(videos, INPUT_VIDEO), _as_numpy(top_k, INPUT_TOP_K)))
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
        detected = np.array([[r.detected_json()] for r in answer], dtype=np.object_)  # [n, 1]
        outputs = (OUTPUT_LABELS, labels), (OUTPUT_SCORES, scores), (OUTPUT_DETECTED, detected)
        return pb.InferenceResponse([pb.Tensor(name, value) for name, value in outputs])

    def finalize(self) -> None:
        self.service.close()
