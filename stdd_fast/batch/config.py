"""What a corpus job computes and with which resources: one frozen, validated config.

Torch-free: the command line builds and checks it before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from stdd_fast.batch.rows import SCHEMA_VERSION
from stdd_fast.checks import check_int, check_number
from stdd_fast.errors import ConfigError
from stdd_fast.predict.config import RESOLVED_WHERE_BUILT, ClassSource, PredictorConfig
from stdd_fast.settings import settings
from stdd_fast.user_cache import file_sha256
from stdd_fast.video.config import DecodeConfig, SamplingConfig

# Decoding runs in Ray's CPU tasks, with PyAV ("auto" resolves to it there); DALI's NVDEC path
# decodes next to the model inside one process (the Engine), so a CPU task cannot use it.
BATCH_DECODE_CHOICES = ("auto", "pyav")


def absolute(path: str | Path) -> str:
    """A local path made absolute (Ray workers run in other folders); URLs (``scheme://``) as given."""
    text = str(path)
    return text if "://" in text else str(Path(text).absolute())


def _absolute_source(source: ClassSource) -> ClassSource:
    paths = {
        name: absolute(value)
        for name in ("classifier", "xprompt", "askg")
        if isinstance(value := getattr(source, name), str | Path)
    }
    return dataclasses.replace(source, **paths) if paths else source


def _fingerprint(source: object) -> str | None:
    """sha256 of a class source: a file's bytes, or an in-memory classifier's class names and weights."""
    if source is None:
        return None
    if isinstance(source, str | Path):
        return file_sha256(source)
    digest = hashlib.sha256(json.dumps(list(source.classes)).encode())
    digest.update(source.weights.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, init=False)
class BatchConfig:
    """A corpus job: the weights, where the classes come from (``classes``: a
    :class:`~stdd_fast.predict.ClassSource`), the predictor (``predictor``: a
    :class:`~stdd_fast.predict.PredictorConfig`, device and dtype ``"auto"`` by default: resolved on the
    workers), the sampling and decoding (``sampling``, ``decode``), what each row holds, and the Ray
    resources. The config objects' fields are accepted flat too (:mod:`stdd_fast.settings`:
    ``BatchConfig("w.pt", classes=[...], device="cpu", num_views=1)``).

    weights: a checkpoint, or a ``stdd-export`` file (``.onnx`` / ``.plan``, its classes baked in).
    top_k: labels per row; embeddings: also store each video's frame embeddings [V, T, D]. workers:
    inference actors, each holding one predictor, with ``gpus_per_worker`` (None: 1 on CUDA, 0 on the
    CPU) and ``cpus_per_worker`` (None: 1, less when a local machine has fewer CPUs to spare).
    decode_cpus: CPUs per decoding task. max_retries: how often Ray retries a decoding task, restarts
    an actor and retries its calls after a worker process died.
    """

    weights: str
    classes: ClassSource
    predictor: PredictorConfig
    sampling: SamplingConfig
    decode: DecodeConfig
    top_k: int
    embeddings: bool
    workers: int
    gpus_per_worker: float | None
    cpus_per_worker: float | None
    decode_cpus: float
    max_retries: int

    def __init__(
        self,
        weights: str | Path,
        classes: object = None,
        *,
        predictor: PredictorConfig | None = None,
        sampling: SamplingConfig | None = None,
        decode: DecodeConfig | None = None,
        top_k: int = 5,
        embeddings: bool = False,
        workers: int = 1,
        gpus_per_worker: float | None = None,
        cpus_per_worker: float | None = None,
        decode_cpus: float = 1.0,
        max_retries: int = 3,
        **options,
    ) -> None:
        if not isinstance(weights, str | Path):
            raise ConfigError(f"weights must be a path; got {type(weights).__name__}")
        given_classes = classes if isinstance(classes, ClassSource) else None
        if given_classes is None and classes is not None:
            options["classes"] = classes
        chosen = settings(
            options,
            {"predictor": RESOLVED_WHERE_BUILT},
            predictor=predictor,
            classes=given_classes,
            sampling=sampling,
            decode=decode,
        )
        if chosen.decode.backend not in BATCH_DECODE_CHOICES:
            raise ConfigError(
                "decode_backend='dali': stdd batch decodes in Ray CPU tasks with PyAV; DALI's GPU decoding runs "
                "next to the model in one process: use `stdd classify --decode-backend dali` for it"
            )
        source = _absolute_source(chosen.classes)
        if Path(weights).suffix not in (".onnx", ".plan"):
            source.require()
        values = {
            "weights": absolute(weights),
            "classes": source,
            "predictor": chosen.predictor,
            "sampling": chosen.sampling,
            "decode": chosen.decode,
            "top_k": check_int("top_k", top_k),
            "embeddings": embeddings,
            "workers": check_int("workers", workers),
            "gpus_per_worker": check_number("gpus_per_worker", gpus_per_worker, strict=False, optional=True),
            "cpus_per_worker": check_number("cpus_per_worker", cpus_per_worker, optional=True),
            "decode_cpus": check_number("decode_cpus", decode_cpus),
            "max_retries": check_int("max_retries", max_retries, low=0),
        }
        if not isinstance(embeddings, bool):
            raise ConfigError(f"embeddings={embeddings!r}: must be True or False")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def exported(self) -> bool:
        """Whether ``weights`` is a ``stdd-export`` graph (its classes are baked in)."""
        return Path(self.weights).suffix in (".onnx", ".plan")

    def result_settings(self) -> dict:
        """What decides the rows' values: a resumed job must use the same, or its rows would mix two jobs.

        Files are named and fingerprinted (sha256 of their bytes): the same path with new contents (retrained
        weights, a rebuilt classifier) is another job.
        """
        s, c = self.sampling, self.classes
        return {
            "rows": SCHEMA_VERSION,
            "weights": self.weights,
            "weights_sha256": file_sha256(self.weights),
            "classes": list(c.classes) if c.classes is not None else None,
            "classifier": c.classifier if isinstance(c.classifier, str) else None,
            "classifier_sha256": _fingerprint(c.classifier),
            "xprompt": None if c.xprompt is None else str(c.xprompt),
            "xprompt_sha256": _fingerprint(c.xprompt),
            "askg": None if c.askg is None else str(c.askg),
            "askg_sha256": _fingerprint(c.askg),
            "backend": self.predictor.backend,
            "quantize": self.predictor.quantize,
            "dtype": self.predictor.dtype,
            "stca": str(self.predictor.stca),
            "arch": self.predictor.arch if isinstance(self.predictor.arch, str | None) else self.predictor.arch.name,
            "sampling": s.mode,
            "num_views": s.num_views,
            "num_frames": s.num_frames,
            "sampling_rate": s.sampling_rate,
            "target_fps": s.target_fps,
            "top_k": self.top_k,
            "embeddings": self.embeddings,
        }
