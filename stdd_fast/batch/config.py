"""What a corpus job computes and with which resources: one frozen, validated config.

Torch-free: the command line builds and checks it before anything heavy is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from stdd_fast.choices import BACKENDS, DTYPE_NAMES, IMPLS, SAMPLING_MODES, Backend, Impl, SamplingMode
from stdd_fast.errors import ConfigError, choice_error

# Decoding runs in Ray's CPU tasks, with PyAV ("auto" resolves to it there); DALI's NVDEC path
# decodes next to the model inside one process (the Engine), so a CPU task cannot use it.
BATCH_DECODE_CHOICES = ("auto", "pyav")


def absolute(path: str | Path) -> str:
    """A local path made absolute (Ray workers run in other folders); URLs (``scheme://``) as given."""
    text = str(path)
    return text if "://" in text else str(Path(text).absolute())


def _positive(name: str, value: object, integer: bool, optional: bool = False) -> None:
    if value is None and optional:
        return
    kinds = int if integer else int | float
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        what = "an int >= 1" if integer else "a finite number > 0"
        raise ConfigError(f"{name}={value!r}: must be {what}" + (" or None" if optional else ""))


@dataclass(frozen=True)
class BatchConfig:
    """A corpus job: the predictor (as :func:`~stdd_fast.predictor_factory.build_predictor` takes it), the
    sampling and decoding (as :class:`~stdd_fast.Engine`), what each row holds, and the Ray resources.

    weights: a checkpoint, or a ``stdd-export`` file (``.onnx`` / ``.plan``, with ``backend=
    "onnxruntime"`` / ``"tensorrt"``); classes / classifier / xprompt / askg: the class source
    (exported files have theirs baked in). backend: as ``build_predictor`` takes it ("auto": the
    fastest exact path on the workers' device, as an Engine there would choose). device: ``"auto"`` (CUDA
    when the Ray cluster has GPUs), ``"cpu"`` or ``"cuda"``, resolved for the workers, not the driver;
    dtype ``"auto"``: bf16 on CUDA, float32 on the CPU. top_k: labels per row; embeddings: also store
    each video's frame embeddings [V, T, D]. workers: inference actors, each holding one predictor,
    with ``gpus_per_worker`` (None: 1 on CUDA, 0 on the CPU) and ``cpus_per_worker`` (None: 1, less
    when a local machine has fewer CPUs to spare). decode_cpus: CPUs per decoding task. max_retries:
    how often Ray retries a decoding task, restarts an actor and retries its calls after a worker
    process died.
    """

    weights: str
    classes: tuple[str, ...] | None = None
    classifier: str | None = None
    xprompt: str | None = None
    askg: str | None = None
    backend: Backend = "auto"
    device: str = "auto"
    dtype: str = "auto"
    impl: Impl = "auto"
    arch: str | None = None
    trust_pickle: bool = False
    sampling: SamplingMode = "official"
    num_views: int = 3
    num_frames: int = 8
    sampling_rate: int = 16
    target_fps: float = 30
    decode_backend: str = "auto"
    decode_memory_mb: float = 2048.0
    batch_clips: int | None = None
    memory_budget_mb: float = 1024.0
    top_k: int = 5
    embeddings: bool = False
    workers: int = 1
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    decode_cpus: float = 1.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.weights, str | Path):
            raise ConfigError(f"weights must be a path; got {type(self.weights).__name__}")
        object.__setattr__(self, "weights", absolute(self.weights))
        for name in ("classifier", "xprompt", "askg"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, absolute(getattr(self, name)))
        if isinstance(self.classes, str):
            raise ConfigError(f"classes={self.classes!r} is one string: pass a list of names")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        for name, value, valid in (
            ("backend", self.backend, BACKENDS),
            ("impl", self.impl, IMPLS),
            ("sampling mode", self.sampling, SAMPLING_MODES),
            ("dtype", self.dtype, ("auto", *DTYPE_NAMES)),
            ("batch decode_backend", self.decode_backend, BATCH_DECODE_CHOICES),
        ):
            if value not in valid:
                if name == "batch decode_backend" and value == "dali":
                    raise ConfigError(
                        "decode_backend='dali': stdd batch decodes in Ray CPU tasks with PyAV; DALI's GPU decoding "
                        "runs next to the model in one process: use `stdd classify --decode-backend dali` for it"
                    )
                raise choice_error(name, value, valid)
        if self.device != "auto" and not str(self.device).startswith(("cpu", "cuda")):
            raise ConfigError(f"device={self.device!r}: use 'auto', 'cpu' or 'cuda'")
        if not self.exported and not (self.classes or self.classifier or self.xprompt or self.askg):
            raise ConfigError("no classes: pass classes=[...], classifier=, xprompt= or askg= (or --classes ...)")
        for name in ("num_views", "num_frames", "sampling_rate", "top_k", "workers"):
            _positive(name, getattr(self, name), integer=True)
        _positive("batch_clips", self.batch_clips, integer=True, optional=True)
        for name in ("target_fps", "decode_memory_mb", "memory_budget_mb", "decode_cpus"):
            _positive(name, getattr(self, name), integer=False)
        _positive("cpus_per_worker", self.cpus_per_worker, integer=False, optional=True)
        gpus = self.gpus_per_worker
        if gpus is not None and (
            isinstance(gpus, bool) or not isinstance(gpus, int | float) or not (math.isfinite(gpus) and gpus >= 0)
        ):
            raise ConfigError(f"gpus_per_worker={gpus!r}: must be a number >= 0 (a fraction shares a GPU) or None")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries={self.max_retries!r}: must be an int >= 0")

    @property
    def exported(self) -> bool:
        """Whether ``weights`` is a ``stdd-export`` graph (its classes are baked in)."""
        return Path(self.weights).suffix in (".onnx", ".plan")

    def result_settings(self) -> dict:
        """What decides the rows' values: a resumed job must use the same, or its rows would mix two jobs."""
        return {
            "weights": self.weights,
            "classes": list(self.classes) if self.classes is not None else None,
            "classifier": self.classifier,
            "xprompt": self.xprompt,
            "askg": self.askg,
            "backend": self.backend,
            "arch": self.arch,
            "sampling": self.sampling,
            "num_views": self.num_views,
            "num_frames": self.num_frames,
            "sampling_rate": self.sampling_rate,
            "target_fps": self.target_fps,
            "top_k": self.top_k,
            "embeddings": self.embeddings,
        }
