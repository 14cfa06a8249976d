"""A predictor from what a user has: weights (a checkpoint, a model or an exported file), classes, a config.

:func:`build_predictor` loads the model, asks :func:`~stdd_fast.predict.choice.choose_backend` which
backend runs it (a record: what and why, never a build), builds that one backend, and hands it the
record as ``predictor.backend_choice``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from stdd_fast import notices
from stdd_fast.classifier import Classifier, build_classifier
from stdd_fast.devices import resolve_device
from stdd_fast.errors import ConfigError
from stdd_fast.factory import load_model
from stdd_fast.model import STDDModel
from stdd_fast.predict.choice import choose_backend, choose_for_exported, exported_runtime
from stdd_fast.predict.config import ClassSource, PredictorConfig
from stdd_fast.predict.contract import Predictor


def load_classifier(source: ClassSource, model: STDDModel | None) -> Classifier | None:
    """The classifier ``source`` names: loaded, taken as given, or built once with the fp32 model's text tower."""
    if isinstance(source.classifier, str | Path):
        return Classifier.load(source.classifier)
    if source.classifier is not None and not isinstance(source.classifier, Classifier):
        raise ConfigError(f"classifier must be a path or a Classifier; got {type(source.classifier).__name__}")
    if source.classifier is not None or (source.classes is None and source.prompts is None):
        return source.classifier
    names = list(source.classes) if source.classes is not None else None
    return build_classifier(model, names, xprompt=source.xprompt, askg=source.askg)


def _model(weights: str | Path | STDDModel, config: PredictorConfig, device: torch.device) -> STDDModel:
    """The fp32 model on ``device`` (the classifier and the text-tower fingerprint are made at full precision)."""
    if isinstance(weights, STDDModel):
        if config.touches_weights():
            raise ConfigError(f"{config.touches_weights()} apply when loading a checkpoint, not to a model object")
        return weights.to(device=device).eval()
    if isinstance(weights, str | Path):
        return load_model(weights, arch=config.arch, stca=config.stca, device=device, trust_pickle=config.trust_pickle)
    raise ConfigError(f"weights must be a checkpoint path, an exported .onnx/.plan or an STDDModel; got {weights!r}")


def check_baked_classes(weights: str | Path, baked: Sequence[str], given: Sequence[str] | None) -> None:
    """An exported graph scores the classes baked into it: class names given beside it (None: none) may only
    repeat them, in order; ConfigError naming the first difference otherwise."""
    if given is None or list(given) == list(baked):
        return
    first = next((i for i, (a, b) in enumerate(zip(given, baked, strict=False)) if a != b), min(len(given), len(baked)))
    theirs = repr(baked[first]) if first < len(baked) else "nothing"
    yours = repr(given[first]) if first < len(given) else "nothing"
    raise ConfigError(
        f"{weights} scores its own {len(baked)} classes, baked in; the {len(given)} given differ at class {first} "
        f"({yours} where the file has {theirs}): drop --classes / classes= to use the file's, or export again"
    )


def _exported(weights: str | Path, source: ClassSource, config: PredictorConfig, num_frames: int) -> Predictor:
    from stdd_fast.predict.exported import ExportedPredictor

    choice = choose_for_exported(config, weights)
    config = dataclasses.replace(config, backend=choice.backend)  # torch-only options are refused here
    if source.prompts is not None:
        raise ConfigError(
            f"{weights} has its classes and their prompts baked in: drop xprompt= / askg= (--xprompt, --askg), or "
            "export again with a classifier built from them"
        )
    given = load_classifier(dataclasses.replace(source, classes=None), None)  # an artifact: checked against it
    predictor = ExportedPredictor(choice.backend, weights, config, classifier=given)
    check_baked_classes(weights, predictor.classes, source.classes)
    if predictor.num_frames != num_frames:
        raise ConfigError(
            f"{weights} takes {predictor.num_frames}-frame clips; {num_frames} frames were asked for: re-export "
            f"with --frames {num_frames} or sample {predictor.num_frames} frames"
        )
    predictor.backend_choice = choice
    return predictor


def build_predictor(
    weights: str | Path | STDDModel,
    classes: Sequence[str] | ClassSource | None = None,
    classifier: str | Path | Classifier | None = None,
    *,
    config: PredictorConfig | None = None,
    num_frames: int = 8,
    xprompt: str | Path | None = None,
    askg: str | Path | None = None,
    quiet: bool = False,
    **options,
) -> Predictor:
    """A predictor for ``weights`` with the classes of ``classes`` / ``classifier`` / ``xprompt`` / ``askg`` (a
    :class:`ClassSource` or its fields; none: embeddings only), run as ``config`` says (a
    :class:`PredictorConfig`, or its fields as keywords: ``backend=``, ``device=``, ``dtype=``...).

    weights: a checkpoint (any format :func:`stdd_fast.load_model` reads), an :class:`STDDModel` (moved to
    the device in place), or a ``stdd-export`` ``.onnx`` / ``.plan`` (its classes baked in; ``classifier=``
    is checked against them). ``num_frames``: the clip length (T of an exported or cached graph; what the
    activation budget is sized for). ``predictor.backend_choice`` says which backend runs and why. One-time
    work (an encoder graph built, the CPU backends measured) is announced on stderr before it starts, unless
    ``quiet`` (or ``STDD_QUIET=1``: :mod:`stdd_fast.notices`).
    """
    config = PredictorConfig.of(config, **options)
    source = ClassSource.of(classes, classifier, xprompt=xprompt, askg=askg)
    with notices.quiet(quiet):
        if exported_runtime(weights) is not None:
            return _exported(weights, source, config, num_frames)
        return _loaded(weights, source, config, num_frames)


def _loaded(
    weights: str | Path | STDDModel, source: ClassSource, config: PredictorConfig, num_frames: int
) -> Predictor:
    """The predictor of a checkpoint or a model: the backend ``choose_backend`` picks, built."""
    device = resolve_device(config.device)
    model = _model(weights, config, device)
    choice = choose_backend(config, model, device, num_frames)
    clf = load_classifier(source, model)
    if choice.backend == "onnxruntime":
        from stdd_fast.predict.onnx_encoder import OnnxEncoderPredictor

        predictor = OnnxEncoderPredictor(model, clf, config, num_frames=num_frames)
    else:
        from stdd_fast.predict.torch_backend import TorchPredictor

        predictor = TorchPredictor(model, clf, config, num_frames=num_frames)
    predictor.backend_choice = choice
    predictor.checkpoint_info = getattr(model, "checkpoint_info", None)  # the file (a name: its sha256), format
    return predictor
