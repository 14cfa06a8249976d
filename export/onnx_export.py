"""ONNX export of an STDD model with its classifier baked in, checked and verified after writing.

The exporter call and why it is the dynamo one: :mod:`stdd_fast.graphs.trace`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import stdd_fast
from stdd_fast.classifier import Classifier
from stdd_fast.decisions import check_calibrated_for
from stdd_fast.deps import require
from stdd_fast.errors import (
    ConfigError,
    GraphCheckError,
    ParityError,
    choice_error,
)
from stdd_fast.export.graph import (
    CLIP_MEAN,
    CLIP_STD,
    ExportGraph,
    check_exportable,
    to_precision,
    warm_up,
)
from stdd_fast.export.parity import ParityReport, compare, random_frames
from stdd_fast.graphs.checks import TENSORRT_OPSET_RANGE, GraphReport, check_graph
from stdd_fast.graphs.spec import (
    METADATA_KEY,
    ExportSpec,
    classifier_fingerprint,
    precision_of,
)
from stdd_fast.graphs.trace import DEFAULT_OPSET, EXPORT_IMPLS, MIN_OPSET, prepare_model, save_proto, torch_export
from stdd_fast.model import STDDModel

log = logging.getLogger("stdd_fast.export")


@dataclass(frozen=True)
class ExportResult:
    """An exported ONNX file and what was verified about it (``parity`` is None when not verified)."""

    path: Path
    spec: ExportSpec
    graph: GraphReport
    parity: ParityReport | None


def _min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(0, -2), b.double().flatten(0, -2)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item()


def _baked_decisions(classifier: Classifier, visual: str) -> dict | None:
    """The classifier's calibrated thresholds as the export spec carries them (None: it has none); refused when
    they were calibrated with another model, or when it decides by background prompts (scored in PyTorch)."""
    if classifier.background_weights is not None and classifier.calibration is None:
        raise ConfigError(
            "the classifier decides by background prompts, which an exported graph does not score: calibrate it "
            "(stdd calibrate) and export the calibrated classifier, whose thresholds travel in the export"
        )
    c = classifier.calibration
    if c is None:
        return None
    check_calibrated_for(classifier, visual)
    return {"thresholds": c.thresholds.tolist(), "quantiles": c.quantiles.tolist(), "provenance": c.provenance}


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".data")):
        p.unlink(missing_ok=True)


def export_and_verify(
    model: STDDModel,
    classifier: Classifier,
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    *,
    num_frames: int = 8,
    uint8_input: bool = False,
    batch: int = 2,
    opset: int = DEFAULT_OPSET,
    impl: str = "reference",
    verify: bool = True,
    parity_clips: int = 2,
    seed: int = 0,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> ExportResult:
    """:func:`export_onnx`, returning the graph and parity reports as well as the path."""
    precision = precision_of(dtype)
    torch_dtype = {"float32": torch.float32, "float16": torch.float16}[precision]
    require("onnx")
    if verify:
        require("onnxruntime")  # before a long export that could not be verified
    check_exportable(model, classifier)
    if impl not in EXPORT_IMPLS:
        raise choice_error("export impl (Triton kernels cannot be traced)", impl, EXPORT_IMPLS)
    lo, hi = MIN_OPSET, TENSORRT_OPSET_RANGE[1]
    if not (isinstance(opset, int) and lo <= opset <= hi):
        raise ConfigError(f"opset={opset!r}: use {lo}..{hi} (LayerNormalization needs 17; TensorRT parses up to {hi})")
    if not (isinstance(num_frames, int) and num_frames >= 1):
        raise ConfigError(f"num_frames={num_frames!r}: must be an int >= 1 (8 for the released models)")
    if not (isinstance(batch, int) and batch >= 2):
        raise ConfigError(f"batch={batch!r}: the example batch must be >= 2 (with 1 the batch axis is specialised)")
    if not (isinstance(parity_clips, int) and parity_clips >= 1):
        raise ConfigError(f"parity_clips={parity_clips!r}: must be an int >= 1")
    path = Path(path)

    work = prepare_model(model, "reference")
    device = work.visual.conv1.weight.device
    visual = work.visual_fingerprint()
    calibration = _baked_decisions(classifier, visual)
    spec = ExportSpec(
        arch=work.arch.name,
        num_frames=num_frames,
        image_size=work.arch.image_size,
        embed_dim=work.arch.embed_dim,
        classes=tuple(classifier.classes),
        classifier_fingerprint=classifier_fingerprint(classifier),
        classifier_shape=tuple(classifier.weights.shape),
        logit_scale=float(work.logit_scale.detach()),
        input_layout="uint8" if uint8_input else "float",
        precision=precision,
        mean=tuple(mean) if uint8_input else (0.0, 0.0, 0.0),
        std=tuple(std) if uint8_input else (1.0, 1.0, 1.0),
        stca=None if work.stca is None else dataclasses.asdict(work.stca),
        impl=impl,
        opset=opset,
        stdd_fast_version=stdd_fast.__version__,
        torch_version=torch.__version__,
        visual_fingerprint=visual,
        calibration=calibration,
    )
    graph = ExportGraph(work, classifier.weights, spec.logit_scale, uint8_input, mean, std).eval()

    frames = reference = None
    if verify:
        # The float32 reference path first: it is what the graph must match, and its forward
        # also fills STCA's index caches with real tensors before tracing.
        frames = random_frames(spec.input_shape(parity_clips), uint8_input, seed, device)
        with torch.no_grad():
            reference = tuple(t.cpu() for t in graph(frames))
    else:
        warm_up(graph, num_frames)
    if impl != "reference":
        work.set_impl(impl)
        warm_up(graph, num_frames)
    to_precision(work, torch_dtype)

    example = torch.zeros(spec.input_shape(batch), dtype=spec.input_dtype, device=device)
    start = time.perf_counter()
    program = torch_export(graph, example, opset)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()
    proto.producer_name, proto.producer_version = "stdd_fast", stdd_fast.__version__
    save_proto(proto, path)
    del program, proto
    log.info("exported %s (%s, %s input) in %.1f s", path, precision, spec.input_layout, time.perf_counter() - start)

    parity = None
    try:
        graph_report = check_graph(path, spec)
        log.info(graph_report.summary())
        if verify:
            from stdd_fast.predict.onnx_runner import OnnxRuntimeRunner

            runner = OnnxRuntimeRunner(path, device="cpu")
            got = runner(frames)
            consistency = 1.0
            if parity_clips > 1:
                # the batch axis is dynamic: one clip alone must give what it gives in the batch
                single = runner(frames[:1])
                consistency = min(_min_cosine(a, b[:1]) for a, b in zip(single, got, strict=True))
            parity = compare(got, reference, precision, "onnxruntime", batch_consistency=consistency)
            log.info(parity.summary())
            parity.raise_if_failed()
    except (GraphCheckError, ParityError):
        _remove(path)
        raise
    return ExportResult(path=path, spec=spec, graph=graph_report, parity=parity)


def export_onnx(
    model: STDDModel,
    classifier: Classifier,
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    *,
    num_frames: int = 8,
    uint8_input: bool = False,
    batch: int = 2,
    opset: int = DEFAULT_OPSET,
    impl: str = "reference",
    verify: bool = True,
    parity_clips: int = 2,
    seed: int = 0,
) -> Path:
    """Export ``model`` + ``classifier`` to an ONNX file and verify it; returns ``path``.

    Graph: input ``frames`` [B, T, 3, S, S] CLIP-normalised (``dtype``), or with ``uint8_input``
    [B, T, S, S, 3] uint8 RGB normalised inside the graph; outputs ``scores`` float32 [B, K] and
    ``embeddings`` float32 [B, T, D]. B is dynamic, T = ``num_frames`` and S = the arch's image size
    are static. The classifier weights and tau = exp(model.logit_scale) are constants; the STCA
    window schedule (``none`` or ``seeded`` shuffle) is baked in as index constants.

    ``dtype``: ``torch.float32`` or ``torch.float16`` (LayerNorm statistics and scoring stay
    float32). ``impl``: the STCA path traced (``"reference"`` or ``"fused"``).

    After writing: :func:`check_graph` (onnx checker, TensorRT op set, static shapes) and, with
    ``verify``, ONNX Runtime against the float32 torch reference on ``parity_clips`` random clips
    (and one clip alone); the tolerance table applies (cosine >= 0.99999 fp32, >= 0.999 fp16, same
    top-1). A failed check removes the file and raises GraphCheckError / ParityError.
    Raises ConfigError for models that cannot be exported deterministically (train mode,
    ``shuffle="official"``).
    """
    return export_and_verify(
        model,
        classifier,
        path,
        dtype,
        num_frames=num_frames,
        uint8_input=uint8_input,
        batch=batch,
        opset=opset,
        impl=impl,
        verify=verify,
        parity_clips=parity_clips,
        seed=seed,
    ).path
