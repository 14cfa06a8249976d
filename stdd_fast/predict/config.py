"""Every predictor setting in one frozen, validated object, and where a predictor's classes come from.

:class:`PredictorConfig` is what the Engine, ``stdd batch``, ``stdd serve``, the bench and every
command hold and pass on; nothing restates its fields. :class:`ClassSource` is the one place that
says which of ``classes`` / ``classifier`` / ``xprompt`` / ``askg`` names the classes. Both are
torch-free: the command line builds and checks them before anything heavy is imported, and Ray
sends them to its workers as they are (``device="auto"`` and ``dtype="auto"`` resolve where the
predictor is built).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stdd_fast.checks import check_choice, check_int, check_number
from stdd_fast.choices import BACKENDS, COMPILE_MODES, DTYPE_NAMES, GEMMS, IMPLS, QUANTIZE, Backend, Impl
from stdd_fast.config import ArchConfig, STCAConfig
from stdd_fast.errors import ConfigError

FROM_CHECKPOINT = "checkpoint"  # stca=: the STCA settings the checkpoint recorded (default STCAConfig() if none)
EXPORTED_RUNTIMES = {".onnx": "onnxruntime", ".plan": "tensorrt"}  # stdd-export files, by suffix: their runtime
CUDA_GRAPHS = (True, False, "auto")
PREDICTOR_ALIASES = {"memory_budget_mb": "activation_budget_mb"}  # the names the flat API has used
_EXPORTED_ONLY = ("onnxruntime", "tensorrt")


def exported_runtime(weights: object) -> str | None:
    """The runtime of a ``stdd-export`` file (``"onnxruntime"`` / ``"tensorrt"``), None for anything else."""
    return EXPORTED_RUNTIMES.get(Path(weights).suffix) if isinstance(weights, str | Path) else None


def dtype_name(dtype: object) -> str:
    """A dtype as its name: ``torch.bfloat16`` -> ``"bfloat16"``; names ("bf16", "fp8", "auto") as given."""
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def device_name(device: object) -> str:
    """A device as its name: ``torch.device("cuda", 1)`` -> ``"cuda:1"``; names as given."""
    return device if isinstance(device, str) else str(device)


@dataclass(frozen=True)
class PredictorConfig:
    """How clips become scores: the backend and everything it runs with.

    backend: ``"auto"`` (the fastest exact path for the device; an exported file: its runtime),
    ``"torch"``, ``"onnxruntime"`` or ``"tensorrt"``. device: ``"cpu"``, ``"cuda[:N]"`` or ``"auto"``.
    dtype: a dtype or its name, ``"auto"`` (bf16 on a GPU, fp32 on the CPU) or ``"fp8"`` (bf16 weights,
    the STCA blocks' linear layers as e4m3 GEMMs: opt-in, not exact, the torch backend). impl: the STCA
    implementation (``"auto"``: triton on CUDA, fused on the CPU). compile: ``torch.compile`` the encoder
    (True or a mode name). cuda_graphs: replay the encoder from CUDA graphs (``"auto"``: on CUDA where
    shapes and the schedule are fixed). batch_clips: clips per forward (None: as many as
    ``activation_budget_mb`` of activations allows). quantize: ``"int8"`` MatMul weights in ONNX
    Runtime (CPU, opt-in, not exact). gemm: what the triton path's linear layers run (``"auto"``: the
    process default, ``STDD_GEMM``, cuBLAS unless set; ``"cublas"``; ``"triton"``: the Triton GEMM with
    its epilogue). arch / stca / trust_pickle: how a checkpoint loads (the architecture checked against
    it; the STCA settings, default those it recorded; whether code-running pickles may load).
    """

    backend: Backend = "auto"
    device: str = "cpu"
    dtype: str = "float32"
    impl: Impl = "auto"
    compile: bool | str = False
    cuda_graphs: bool | str = "auto"
    batch_clips: int | None = None
    activation_budget_mb: float = 1024.0
    quantize: str | None = None
    gemm: str = "auto"
    arch: str | ArchConfig | None = None
    stca: STCAConfig | str | None = FROM_CHECKPOINT
    trust_pickle: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", device_name(self.device))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        check_choice("backend", self.backend, BACKENDS)
        if not self.device or not (self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda")):
            raise ConfigError(f"device={self.device!r} is not a device name; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
        check_choice("dtype", self.dtype, ("auto", *DTYPE_NAMES))
        check_choice("impl", self.impl, IMPLS)
        check_choice("compile", self.compile, (True, False, *COMPILE_MODES))
        check_choice("cuda_graphs", self.cuda_graphs, CUDA_GRAPHS)
        check_int("batch_clips", self.batch_clips, optional=True)
        check_number("activation_budget_mb", self.activation_budget_mb, unit="MiB")
        check_choice("quantize", self.quantize, (None, *QUANTIZE))
        check_choice("gemm", self.gemm, ("auto", *GEMMS))
        if self.arch is not None and not isinstance(self.arch, str | ArchConfig):
            raise ConfigError(f"arch={self.arch!r}: name a built-in architecture or pass an ArchConfig")
        if not (self.stca is None or self.stca == FROM_CHECKPOINT or isinstance(self.stca, STCAConfig)):
            raise ConfigError(f"stca={self.stca!r}: pass an STCAConfig, None (plain CLIP) or {FROM_CHECKPOINT!r}")
        check_choice("trust_pickle", self.trust_pickle, (True, False))
        self._check_combination()

    def _check_combination(self) -> None:
        """The settings that cannot go together, each refused with what to change."""
        torch_only = [
            (self.dtype == "fp8", "dtype='fp8' (the STCA blocks' linear layers as fp8 GEMMs in PyTorch)"),
            (bool(self.compile), "compile="),
            (self.cuda_graphs is True, "cuda_graphs=True"),
            (self.impl in ("reference", "triton"), f"impl={self.impl!r}"),
            (self.gemm != "auto", f"gemm={self.gemm!r}"),
        ]
        if self.backend in _EXPORTED_ONLY:
            asked = [what for used, what in torch_only if used]
            if asked:
                raise ConfigError(
                    f"{asked[0]} is a torch option; backend={self.backend!r} runs a graph: use backend='torch' "
                    "(or 'auto')"
                )
        if self.cuda_graphs is True and self.compile == "reduce-overhead":
            raise ConfigError("compile='reduce-overhead' already replays CUDA graphs: drop cuda_graphs=True")
        if self.quantize is not None:
            problem = next(
                (
                    why
                    for bad, why in (
                        (self.backend in ("torch", "tensorrt"), f"backend={self.backend!r}"),
                        (self.device.startswith("cuda"), f"device={self.device!r}"),
                        (self.dtype not in ("auto", "float32", "fp32"), f"dtype={self.dtype!r}"),
                        (any(used for used, _ in torch_only), "a torch-only option"),
                    )
                    if bad
                ),
                None,
            )
            if problem is not None:
                raise ConfigError(
                    f"quantize={self.quantize!r} runs int8 MatMuls in ONNX Runtime on the CPU in fp32, not with "
                    f"{problem}: use device='cpu', fp32 and backend='auto' or 'onnxruntime'"
                )

    @classmethod
    def of(cls, config: PredictorConfig | None = None, **options: Any) -> PredictorConfig:
        """``config`` (default: the defaults) with ``options`` replacing its fields; an unknown one is named."""
        options = {PREDICTOR_ALIASES.get(k, k): v for k, v in options.items()}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(f"unknown predictor option(s) {unknown}; valid: {sorted(fields)}")
        base = config if config is not None else cls()
        if not isinstance(base, cls):
            raise ConfigError(f"predictor= must be a PredictorConfig; got {type(base).__name__}")
        return dataclasses.replace(base, **options) if options else base

    def touches_weights(self) -> list[str]:
        """The loading settings given (``arch`` / ``stca`` / ``trust_pickle``): they apply to checkpoints only."""
        given = [("arch", self.arch is not None), ("stca", self.stca != FROM_CHECKPOINT)]
        return [name for name, set_ in given if set_]


@dataclass(frozen=True)
class ClassSource:
    """Where a predictor's classes come from: at most one of

    * ``classes``: class names (each scored with the 8 STDD templates);
    * ``classifier``: a saved artifact (``stdd build-classifier``) or a :class:`~stdd_fast.Classifier`;
    * ``xprompt``: a ``classes_xprompt_*.yml`` (the ASKG prompt-level classifier), with ``classes`` its
      names when given (else the file's);
    * ``askg``: a ``classes_ASKG_*.yml``, its triples rendered to prompt clauses (``classes`` likewise).

    None of them: embeddings only. :meth:`require` refuses that where classes are needed.
    """

    classes: tuple[str, ...] | None = None
    classifier: str | Path | Any = None
    xprompt: str | Path | None = None
    askg: str | Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.classes, str):
            raise ConfigError(
                f"classes={self.classes!r} is one string: pass a list of names (e.g. {self.classes!r}.split(','))"
            )
        if self.classes is not None:
            if not isinstance(self.classes, Sequence):
                hint = "; a classifier goes in classifier=" if type(self.classes).__name__ == "Classifier" else ""
                raise ConfigError(f"classes must be a list of names; got {type(self.classes).__name__}{hint}")
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.xprompt is not None and self.askg is not None:
            raise ConfigError("pass xprompt= (a classes_xprompt_*.yml) or askg= (a classes_ASKG_*.yml), not both")
        if self.classifier is not None and (self.classes is not None or self.prompts is not None):
            raise ConfigError(
                "classifier= (--classifier) already holds the classes and their prompts: pass it or classes= / "
                "xprompt= / askg= (--classes, --classes-file, --xprompt, --askg), not both"
            )
        for name in ("xprompt", "askg"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str | Path):
                raise ConfigError(f"{name}= must be the path of a YAML file; got {type(getattr(self, name)).__name__}")

    @classmethod
    def of(cls, classes: object = None, classifier: object = None, **options: Any) -> ClassSource:
        """A ClassSource from keywords, or ``classes`` itself when it already is one."""
        if isinstance(classes, cls):
            if classifier is not None or any(v is not None for v in options.values()):
                raise ConfigError("pass a ClassSource or its fields (classes=, classifier=, xprompt=, askg=), not both")
            return classes
        return cls(classes, classifier, **options)

    @property
    def prompts(self) -> str | Path | None:
        """The ASKG / xprompt YAML the classes are described by (None: templates or an artifact)."""
        return self.xprompt if self.xprompt is not None else self.askg

    @property
    def empty(self) -> bool:
        return self.classes is None and self.classifier is None and self.prompts is None

    def require(self, weights: object = None) -> ClassSource:
        """This source, or ConfigError when it names no classes (where scores are needed); ``weights``: an
        exported ``.onnx`` / ``.plan`` scores the classes baked into it, so it needs none."""
        if self.empty and exported_runtime(weights) is None:
            raise ConfigError(
                "no classes: pass classes=[...], classifier=, xprompt= or askg= (on the command line --classes "
                "'a,b,c', --classes-file F, --xprompt YAML, --askg YAML or --classifier ART)"
            )
        return self


# device and dtype "auto": resolved where the predictor is built (a Ray worker, a Triton instance), not where
# the config is written
RESOLVED_WHERE_BUILT = PredictorConfig(device="auto", dtype="auto")
