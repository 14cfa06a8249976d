"""The rows of a corpus job: what the decoding stage hands on, and the results table, one row per video.

Results (Parquet), in this order:

=================  ====================  ===================================================================
column             type                  value
=================  ====================  ===================================================================
``path``           string                the video (absolute path), the table's key
``labels``         list<string>          the top-k classes, best first (empty when the video failed)
``scores``         list<float32>         their logits, summed over the views (:class:`~stdd_fast.VideoResult`)
``probabilities``  list<float32>         their probabilities, the mean over views of each view's softmax
``error_type``     string                the error's class (``VideoError``, ``NonFiniteError``...); null: ok
``error``          string                its message, naming the file; null when the video worked
``decode_backend`` string                which decoder read it (``pyav``); null when it could not be opened
``backend``        string                the predictor that scored it (``torch``, ``onnxruntime``, ``tensorrt``)
``linear_format``  string                its linear layers' format when not the model's dtype (``int8``,
                                         ``fp8``); null otherwise, and for a video the predictor never saw
``detected``       list<string>          the classes the video shows (:mod:`stdd_fast.decisions`), best
                                         confidence first; null when the classifier carries no decisions
``confidences``    list<float32>         their confidences, in the same order; null likewise
``decode_s``       float64               seconds probing and decoding
``preprocess_s``   float64               seconds resizing, cropping, normalising
``encode_s``       float64               its share (by clips) of the predictor call it ran in
``embeddings``     list<float32>         only with ``embeddings=True``: the frame embeddings [V, T, D],
                                         flattened row-major (the field's metadata ``shape`` says
                                         ``[V, T, D]``); null when the video failed
=================  ====================  ===================================================================

The values are the Engine's: ``Engine.classify`` on the same file gives the same labels and, on a
CPU, the same float32 scores.
"""

from __future__ import annotations

import json

import numpy as np

from stdd_fast.deps import require

TIMES = ("decode_s", "preprocess_s", "encode_s")
SCHEMA_VERSION = 3  # 2: backend and linear_format columns; 3: detected and confidences


def result_schema(embeddings_shape: tuple[int, int, int] | None = None):
    """The results table's ``pyarrow.Schema``; ``embeddings_shape`` (V, T, D) adds the embeddings column."""
    pa = require("pyarrow")
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("scores", pa.list_(pa.float32())),
        pa.field("probabilities", pa.list_(pa.float32())),
        pa.field("error_type", pa.string()),
        pa.field("error", pa.string()),
        pa.field("decode_backend", pa.string()),
        pa.field("backend", pa.string()),
        pa.field("linear_format", pa.string()),
        pa.field("detected", pa.list_(pa.string())),
        pa.field("confidences", pa.list_(pa.float32())),
        *(pa.field(name, pa.float64()) for name in TIMES),
    ]
    if embeddings_shape is not None:
        meta = {"shape": json.dumps(list(embeddings_shape))}
        fields.append(pa.field("embeddings", pa.list_(pa.float32()), metadata=meta))
    return pa.schema(fields)


def decoded_row(loaded, num_frames: int, image_size: int) -> dict:
    """A :class:`~stdd_fast.video.loader.LoadedVideo` as a Ray row: clips float32 [V, T, 3, S, S] (V = 0 when it
    failed, so the column keeps one rank), its error's type and message, the decoder and the seconds."""
    failed = loaded.error is not None
    empty = np.zeros((0, num_frames, 3, image_size, image_size), np.float32)
    return {
        "path": loaded.source,
        "clips": empty if failed else loaded.clips.numpy(),
        "error_type": type(loaded.error).__name__ if failed else None,
        "error": str(loaded.error) if failed else None,
        "decode_backend": loaded.backend,
        "decode_s": loaded.decode_s,
        "preprocess_s": loaded.preprocess_s,
    }


def text(value: object) -> str | None:
    """A string cell of a Ray numpy batch (a block whose cells were all None comes back as NaN)."""
    return value if isinstance(value, str) else None


def failed_row(path: str, error_type: str, error: str, decode_backend: str | None, seconds: tuple) -> dict:
    return {
        "path": path,
        "labels": [],
        "scores": [],
        "probabilities": [],
        "error_type": error_type,
        "error": error,
        "decode_backend": decode_backend,
        "backend": None,
        "linear_format": None,
        "detected": None,
        "confidences": None,
        **dict(zip(TIMES, seconds, strict=True)),
    }


def ranked_row(predicted, top_k: int, seconds: tuple, embeddings: bool, predictor) -> dict:
    """A video's results from its :class:`~stdd_fast.predict.batching.PredictedVideo`, ranked as ``Engine.classify``
    ranks them (:func:`~stdd_fast.head.rank_views`); float32 values, exactly the Engine's."""
    from stdd_fast.head import rank_views

    ranked = rank_views(predicted.logits, top_k)
    detected = predicted.detected
    row = {
        "path": predicted.loaded.source,
        "labels": [predicted.classes[i] for i in ranked.top],
        "scores": np.asarray(ranked.scores, np.float32),
        "probabilities": np.asarray(ranked.probabilities, np.float32),
        "error_type": None,
        "error": None,
        "decode_backend": predicted.loaded.backend,
        "backend": predictor.backend,
        "linear_format": predictor.linear_format,
        "detected": None if detected is None else [d.label for d in detected],
        "confidences": None if detected is None else np.asarray([d.confidence for d in detected], np.float32),
        **dict(zip(TIMES, seconds, strict=True)),
    }
    if embeddings:
        row["embeddings"] = predicted.embeddings.float().cpu().numpy().ravel()  # [V * T * D]
    return row


def table(rows: list[dict], schema):
    """The rows as a ``pyarrow.Table`` of ``schema`` (typed explicitly: a block of only failures keeps its types)."""
    pa = require("pyarrow")
    if "embeddings" in schema.names:
        rows = [{"embeddings": None, **r} for r in rows]
    return pa.Table.from_pylist(rows, schema=schema)
