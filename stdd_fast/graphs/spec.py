"""What an exported graph computes, recorded with it: the export spec.

The spec travels in the ONNX file's ``metadata_props`` (key :data:`METADATA_KEY`, one JSON value)
and in the TensorRT plan's sidecar JSON, so a runner (or a Triton repository writer) knows the class
names, the input layout and which classifier was baked in without loading a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from stdd_fast.classifier import Classifier
from stdd_fast.decisions import Calibration
from stdd_fast.deps import require
from stdd_fast.errors import ClassifierError, ConfigError, choice_error

METADATA_KEY = "stdd_fast.export"
FORMAT_VERSION = 1
INPUT_NAME = "frames"
OUTPUT_NAMES = ("scores", "embeddings")

InputLayout = Literal["float", "uint8"]
INPUT_LAYOUTS: tuple[str, ...] = get_args(InputLayout)
Precision = Literal["float32", "float16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def precision_of(dtype: torch.dtype | str) -> str:
    """The precision name of an export dtype (``torch.float16`` -> ``"float16"``)."""
    name = str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else str(dtype)
    name = {"fp32": "float32", "fp16": "float16", "half": "float16", "float": "float32"}.get(name, name)
    if name not in PRECISIONS:
        raise choice_error("export dtype", dtype, [*PRECISIONS, "(bf16/fp8/int8: see the TensorRT builder)"])
    return name


def classifier_fingerprint(classifier: Classifier) -> str:
    """sha256 (first 16 hex digits) of a classifier's weights, shape and class names: what was baked in."""
    digest = hashlib.sha256()
    weights = classifier.weights.detach().float().cpu().contiguous()
    digest.update(json.dumps([list(weights.shape), list(classifier.classes)]).encode())
    digest.update(weights.numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ExportSpec:
    """The contract of an exported graph.

    Input ``frames``: ``float`` layout [B, T, 3, S, S] CLIP-normalised (dtype = ``precision``), or
    ``uint8`` layout [B, T, S, S, 3] RGB 0..255 (normalised inside the graph with ``mean``/``std``).
    Outputs: ``scores`` float32 [B, K] (STDD-SPEC §3.4 logits, tau baked in) and ``embeddings``
    float32 [B, T, D] (unit-norm frame embeddings). B is dynamic; T and S are fixed at export.
    visual_fingerprint: the model's :meth:`~stdd_fast.model.STDDModel.visual_fingerprint`. calibration: the
    baked classifier's calibrated thresholds, ``{"thresholds": [K], "quantiles": [K][L], "provenance": {...}}``
    (:mod:`stdd_fast.decisions`), or None.
    """

    arch: str
    num_frames: int
    image_size: int
    embed_dim: int
    classes: tuple[str, ...]
    classifier_fingerprint: str
    classifier_shape: tuple[int, ...]
    logit_scale: float
    input_layout: InputLayout = "float"
    precision: Precision = "float32"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    stca: dict | None = None
    impl: str = "reference"
    opset: int = 18
    stdd_fast_version: str = ""
    torch_version: str = ""
    format_version: int = FORMAT_VERSION
    visual_fingerprint: str = ""
    calibration: dict | None = None

    def __post_init__(self) -> None:
        for name in ("classes", "classifier_shape", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.stca is not None:  # as JSON reads it back (tuples -> lists), so specs compare equal
            object.__setattr__(self, "stca", json.loads(json.dumps(self.stca)))
        if self.input_layout not in INPUT_LAYOUTS:
            raise choice_error("input layout", self.input_layout, INPUT_LAYOUTS)
        if self.precision not in PRECISIONS:
            raise choice_error("precision", self.precision, PRECISIONS)
        if len(self.classes) != self.classifier_shape[0]:
            raise ConfigError(f"export spec lists {len(self.classes)} classes for weights {self.classifier_shape}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def decisions(self) -> Calibration | None:
        """The calibrated thresholds baked in with the classifier (None: the export decides nothing)."""
        c = self.calibration
        if c is None:
            return None
        try:
            return Calibration(torch.tensor(c["thresholds"]), torch.tensor(c["quantiles"]), dict(c["provenance"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ClassifierError(f"the export spec's calibration is malformed ({e}); re-export it") from None

    @property
    def uint8_input(self) -> bool:
        return self.input_layout == "uint8"

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype of the ``frames`` input: uint8, or the graph precision."""
        return torch.uint8 if self.uint8_input else _TORCH_DTYPES[self.precision]

    def input_shape(self, batch: int | str = "B") -> tuple:
        """Shape of ``frames`` for ``batch`` clips: [B, T, 3, S, S] (float) or [B, T, S, S, 3] (uint8)."""
        t, s = self.num_frames, self.image_size
        return (batch, t, s, s, 3) if self.uint8_input else (batch, t, 3, s, s)

    def output_shapes(self, batch: int | str = "B") -> dict[str, tuple]:
        """``{"scores": (B, K), "embeddings": (B, T, D)}``."""
        return {"scores": (batch, self.num_classes), "embeddings": (batch, self.num_frames, self.embed_dim)}

    def check_frames(self, frames: torch.Tensor) -> None:
        """Raise ConfigError unless ``frames`` fits the graph input (any batch size >= 1)."""
        expected = self.input_shape()
        ok = frames.ndim == 5 and frames.shape[0] >= 1 and tuple(frames.shape[1:]) == expected[1:]
        if not ok:
            layout = "uint8 RGB frames" if self.uint8_input else "CLIP-normalised float frames"
            raise ConfigError(
                f"this exported graph takes {layout} of shape [{', '.join(map(str, expected))}] (T and image size "
                "fixed at export); "
                f"got {list(frames.shape)}. Re-export with --frames/--uint8-input to change the input"
            )
        if self.uint8_input and frames.dtype != torch.uint8:
            raise ConfigError(f"this exported graph takes uint8 frames; got {frames.dtype}")
        if not self.uint8_input and not frames.is_floating_point():
            raise ConfigError(
                f"this exported graph takes float frames (CLIP-normalised); got {frames.dtype}. "
                "Export with --uint8-input to feed raw uint8 frames"
            )

    def check_classifier(self, classifier: Classifier) -> None:
        """Raise ClassifierError unless ``classifier`` is the one baked into the graph."""
        fp = classifier_fingerprint(classifier)
        if fp != self.classifier_fingerprint:
            raise ClassifierError(
                f"the exported graph has classifier {self.classifier_fingerprint} baked in "
                f"({self.num_classes} classes), the given one is {fp} ({classifier.num_classes} classes); "
                "re-export with this classifier (stdd-export --onnx --classifier ...)"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "export metadata") -> ExportSpec:
        try:
            data = json.loads(text)
            if data.get("format_version") != FORMAT_VERSION:
                raise ConfigError(
                    f"{source}: export spec format {data.get('format_version')!r}, this stdd_fast reads "
                    f"{FORMAT_VERSION}; re-export with this version"
                )
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError, AttributeError, RecursionError) as e:
            raise ConfigError(f"{source}: unreadable stdd_fast export spec ({e})") from None


def read_onnx_spec(path: str | Path) -> ExportSpec:
    """The :class:`ExportSpec` recorded in an exported ONNX file (weights are not loaded)."""
    onnx = require("onnx")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such ONNX file; export one with `stdd-export --onnx`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for a corrupt file
        raise ConfigError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    return spec_from_metadata({p.key: p.value for p in model.metadata_props}, str(path))


def spec_from_metadata(meta: dict[str, str], source: str) -> ExportSpec:
    """The spec from an ONNX metadata map (``metadata_props`` or ORT's ``custom_metadata_map``)."""
    if METADATA_KEY not in meta:
        raise ConfigError(
            f"{source}: no stdd_fast export metadata ({METADATA_KEY!r}); only graphs written by "
            "stdd_fast.export.export_onnx / `stdd-export --onnx` can be served"
        )
    return ExportSpec.from_json(meta[METADATA_KEY], source)
