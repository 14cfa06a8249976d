"""Building a predictor from what a user has: a checkpoint or a model, an exported file, class names.

:func:`build_predictor` is what the Engine, the command line, Ray actors and the Triton server
model call; the predictor it returns is the contract of :mod:`stdd_fast.predictor`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from stdd_fast.choices import BACKENDS
from stdd_fast.classifier import Classifier, build_classifier
from stdd_fast.config import ArchConfig
from stdd_fast.cuda_graphs import resolve_cuda_graphs
from stdd_fast.devices import resolve_device, resolve_precision
from stdd_fast.errors import ConfigError, choice_error
from stdd_fast.factory import FROM_CHECKPOINT, StcaChoice, load_model
from stdd_fast.model import STDDModel
from stdd_fast.predictor import Predictor


def _classifier(
    model: STDDModel | None,
    classes: Sequence[str] | None,
    classifier: str | Path | Classifier | None,
    xprompt: str | Path | None,
    askg: str | Path | None,
) -> Classifier | None:
    """The classifier the arguments name: loaded, or built with the fp32 model's text tower."""
    if classifier is not None and (classes is not None or xprompt is not None or askg is not None):
        raise ConfigError("pass classes=/xprompt=/askg= (to build a classifier) or classifier=, not both")
    if isinstance(classifier, str | Path):
        return Classifier.load(classifier)
    if classifier is not None and not isinstance(classifier, Classifier):
        raise ConfigError(f"classifier must be a path or a Classifier; got {type(classifier).__name__}")
    if classifier is None and (classes is not None or xprompt is not None or askg is not None):
        if isinstance(classes, str):
            raise ConfigError(f"classes={classes!r} is one string: pass a list of names (e.g. {classes!r}.split(','))")
        names = list(classes) if classes is not None else None
        return build_classifier(model, names, xprompt=xprompt, askg=askg)
    return classifier


def auto_backend(model: STDDModel, device: torch.device, dtype: torch.dtype, impl: str, compile, cuda_graphs) -> tuple:
    """``(backend, why)`` that ``backend="auto"`` means here.

    On the CPU, ``"fastest"``: the faster of the fused encoder in PyTorch and in ONNX Runtime, measured
    once per machine (:mod:`stdd_fast.cpu_choice`); ONNX Runtime needs fp32, a deterministic STCA
    schedule, onnx/onnxruntime, and no torch-only option (an explicit ``impl``, ``compile``,
    ``cuda_graphs``), else torch with the reason. ``STDD_BACKEND=torch|onnxruntime`` pins one. On a
    GPU the torch path (Triton kernels) is the fast one.
    """
    from stdd_fast.deps import available

    pinned = os.environ.get("STDD_BACKEND", "")
    if pinned:
        if pinned not in ("torch", "onnxruntime"):
            raise ConfigError(f"STDD_BACKEND={pinned!r}: use 'torch' or 'onnxruntime' (or unset it for auto)")
        return pinned, f"STDD_BACKEND={pinned}"
    if device.type != "cpu":
        return "torch", f"auto on {device}: the torch path"
    blockers = [
        (dtype != torch.float32, f"dtype {dtype} (the ONNX Runtime path runs fp32)"),
        (impl != "auto", f"impl={impl!r} was asked for"),
        (bool(compile) or cuda_graphs is True, "compile=/cuda_graphs= are torch options"),
        (model.stca is not None and model.stca.shuffle == "official", "a random STCA schedule"),
        (not all(available(m) for m in ("onnx", "onnxscript", "onnxruntime")), "onnx/onnxruntime are not installed"),
    ]
    why = next((reason for blocked, reason in blockers if blocked), None)
    if why is not None:
        return "torch", f"auto on the CPU: torch, because {why}"
    return "fastest", "auto on the CPU"


def build_predictor(
    weights: str | Path | STDDModel,
    classes: Sequence[str] | None = None,
    classifier: str | Path | Classifier | None = None,
    *,
    xprompt: str | Path | None = None,
    askg: str | Path | None = None,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    impl: str = "auto",
    arch: str | ArchConfig | None = None,
    stca: StcaChoice = FROM_CHECKPOINT,
    trust_pickle: bool = False,
    compile: bool | str = False,
    cuda_graphs: bool | str = "auto",
    batch_clips: int | None = None,
    memory_budget_mb: float = 1024.0,
    num_frames: int = 8,
    quantize: str | None = None,
) -> Predictor:
    """A predictor for ``weights``; ``predictor.backend_choice`` says which backend ran and why.

    ``backend="auto"`` (default): :func:`auto_backend` (an exported ``.onnx`` / ``.plan``: its runtime).
    ``"torch"``: weights = a checkpoint path (any format
    :func:`stdd_fast.load_model` reads; ``arch`` / ``stca`` / ``trust_pickle`` apply) or an :class:`STDDModel`
    (moved to ``device`` / ``dtype`` in place); the classes come from ``classes=`` (template prompts, or the
    prompts of ``xprompt=`` / ``askg=`` YAML), or ``classifier=`` (a saved artifact or a Classifier), built once
    in fp32 and checked against the model; none of them: embeddings only. ``"onnxruntime"`` / ``"tensorrt"``
    with a ``stdd-export`` file (``.onnx`` / ``.plan``): the classifier is baked in (a ``classifier=`` given is
    checked against it). ``"onnxruntime"`` with a checkpoint or model: the encoder runs in ONNX Runtime from the
    graph cache (CPU, fp32) and the classes are scored in PyTorch
    (:class:`~stdd_fast.export.encoder_predictor.OnnxEncoderPredictor`). ``num_frames``: the clip length the
    memory budget is sized for (torch takes any T). ``dtype="fp8"``: bf16 weights with the STCA blocks' linear
    layers as fp8 GEMMs (:mod:`stdd_fast.fp8`; opt-in, inference only): the torch backend only (``"auto"`` picks it).
    """
    if backend not in BACKENDS:
        raise choice_error("backend", backend, BACKENDS)
    resolve_cuda_graphs(cuda_graphs, torch.device("cpu"), compile, None)  # the value is checked for every backend
    precision = dtype  # as given: TorchPredictor takes "fp8" too
    device, (dtype, linear_format) = resolve_device(device), resolve_precision(dtype)
    exported_file = isinstance(weights, str | Path) and Path(weights).suffix in (".onnx", ".plan")
    if backend == "auto" and exported_file:  # an exported file runs in its own runtime
        backend = "onnxruntime" if Path(weights).suffix == ".onnx" else "tensorrt"
    if linear_format is not None and backend in ("onnxruntime", "tensorrt"):
        raise ConfigError(
            f"dtype={precision!r} runs the STCA blocks' linear layers as {linear_format} GEMMs in PyTorch, which "
            f"backend={backend!r} cannot: use backend='torch' (or 'auto') with a checkpoint or a model"
        )
    if (backend in ("onnxruntime", "tensorrt") and exported_file) or backend == "tensorrt":
        from stdd_fast.export.predictor import ExportedPredictor

        if not isinstance(weights, str | Path):
            raise ConfigError(f"backend={backend!r} takes the path of an exported model; got {type(weights).__name__}")
        if classes is not None or xprompt is not None or askg is not None or compile or cuda_graphs is True:
            raise ConfigError(
                f"backend={backend!r}: the classifier is baked into {weights}; pass classifier= to check it, not "
                "classes=/xprompt=/askg= (and compile=/cuda_graphs= apply to the torch backend only)"
            )
        if isinstance(classifier, str | Path):
            classifier = Classifier.load(classifier)
        exported = ExportedPredictor(backend, weights, device, classifier, batch_clips, memory_budget_mb)
        if exported.num_frames != num_frames:
            raise ConfigError(
                f"{weights} takes {exported.num_frames}-frame clips; {num_frames} frames were asked for: re-export "
                f"with --frames {num_frames} or sample {exported.num_frames} frames"
            )
        exported.backend_choice = f"backend={backend!r}: the exported graph {weights}"
        return exported

    from stdd_fast.torch_predictor import TorchPredictor

    if exported_file:
        raise ConfigError(f"{weights} is an exported graph: pass backend='onnxruntime' (.onnx) or 'tensorrt' (.plan)")
    if isinstance(weights, STDDModel):
        model = weights.to(device=device).eval()
    elif isinstance(weights, str | Path):
        # fp32 first: the classifier and the text-tower fingerprint are computed at full precision
        model = load_model(weights, arch=arch, stca=stca, device=device, trust_pickle=trust_pickle)
    else:
        raise ConfigError(f"weights must be a checkpoint path or an STDDModel; got {type(weights).__name__}")
    clf = _classifier(model, classes, classifier, xprompt, askg)
    choice = f"backend={backend!r}"
    if backend == "auto" and linear_format is not None:
        backend, choice = "torch", f"auto with dtype={precision!r}: torch (fp8 swaps the fused block's linear piece)"
    if backend == "auto":
        backend, choice = auto_backend(model, device, dtype, impl, compile, cuda_graphs)
    if backend == "fastest":
        from stdd_fast.cpu_choice import fastest_cpu_predictor

        if quantize is not None:  # int8 runs in ONNX Runtime only: nothing to choose
            backend, choice = "onnxruntime", "auto on the CPU with quantize: ONNX Runtime"
        else:

            def build(name: str) -> Predictor:
                return build_predictor(
                    model, classifier=clf, backend=name, device=device, dtype=dtype, impl=impl,
                    batch_clips=batch_clips, memory_budget_mb=memory_budget_mb, num_frames=num_frames,
                )  # fmt: skip

            return fastest_cpu_predictor(model, num_frames, build)
    if quantize is not None and backend != "onnxruntime":
        raise ConfigError(
            f"quantize={quantize!r} runs on the ONNX Runtime CPU path, not on {backend} ({choice}); use device='cpu' "
            "and fp32 with backend='auto' or 'onnxruntime'"
        )
    if backend == "onnxruntime":
        from stdd_fast.export.encoder_predictor import OnnxEncoderPredictor

        if impl not in ("auto", "fused") or compile or cuda_graphs is True or device.type != "cpu":
            raise ConfigError(
                "backend='onnxruntime' on a checkpoint runs the fused encoder on the CPU, without "
                "compile=/cuda_graphs=; use backend='torch' for those"
            )
        predictor = OnnxEncoderPredictor(
            model,
            clf,
            num_frames=num_frames,
            batch_clips=batch_clips,
            memory_budget_mb=memory_budget_mb,
            quantize=quantize,
        )
        predictor.backend_choice = choice
        return predictor
    predictor = TorchPredictor(
        model,
        clf,
        impl=impl,
        device=device,
        dtype=precision,
        compile=compile,
        cuda_graphs=cuda_graphs,
        batch_clips=batch_clips,
        memory_budget_mb=memory_budget_mb,
        num_frames=num_frames,
    )
    predictor.backend_choice = choice
    return predictor
