"""The CPU fast path: the fused STCA encoder in ONNX Runtime, the STDD head in PyTorch.

Same contract and results objects as every predictor (:mod:`stdd_fast.predictor`), the same
function as the torch path within the tolerance table (fp32 max rel err <= 1e-5 against the
reference, checked when the graph is built). The graph comes from the on-disk cache
(:mod:`stdd_fast.export.encoder_cache`): built once per weights / STCA schedule / T, in
``setup_seconds`` when this predictor was made, never inside a first result's timing. The
classifier is not in the graph, so :meth:`set_classifier` swaps it at once, as on the torch path.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from stdd_fast.classifier import Classifier
from stdd_fast.deps import require
from stdd_fast.errors import ConfigError
from stdd_fast.export.encoder import INPUT_NAME, OUTPUT_NAME
from stdd_fast.export.encoder_cache import CachedEncoder, cached_encoder
from stdd_fast.model import STDDModel
from stdd_fast.predictor import Prediction, check_clips
from stdd_fast.scoring import ClassifierSlot, ScoresWithSlot
from stdd_fast.text import text_tower_fingerprint
from stdd_fast.torch_predictor import check_batch_clips, clips_per_batch


def session_options(threads: int | None = None):
    """ONNX Runtime options of the fast path: every graph optimisation; ``threads`` intra-op threads (None: cores)."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    # no busy-waiting between calls: decoding threads, the torch head and other paths share these cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxEncoderPredictor(ScoresWithSlot):
    """Clips [B, T, 3, S, S] -> (logits [B, K] | None, embeddings [B, T, D]): encoder in ONNX Runtime (CPU).

    model: an fp32 :class:`STDDModel` in eval mode with a deterministic STCA schedule (``none`` or
    ``seeded``); ``num_frames``: T, fixed in the graph. ``cache_dir``: where graphs are kept
    (default: :func:`~stdd_fast.export.encoder_cache.default_cache_dir`). ``threads``: ONNX
    Runtime's intra-op threads (None: the cores this process may use). ``quantize="int8"``: opt-in
    int8 weights for the MatMuls (not exact: its error against fp32 is in benchmarks/README.md).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model: STDDModel,
        classifier: Classifier | None = None,
        *,
        num_frames: int = 8,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        batch_clips: int | None = None,
        memory_budget_mb: float = 1024.0,
        quantize: str | None = None,
    ) -> None:
        ort = require("onnxruntime")
        if any(p.dtype != torch.float32 for p in model.parameters()):
            raise ConfigError("the ONNX Runtime CPU path runs fp32 models; cast the model with .float()")
        self.cache: CachedEncoder = cached_encoder(model, num_frames, cache_dir, quantize=quantize)
        self.setup_seconds = self.cache.seconds
        self.session = ort.InferenceSession(
            str(self.cache.path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.arch, self.image_size, self.num_frames = model.arch, model.arch.image_size, num_frames
        self.impl = "onnxruntime:fused" + ("" if quantize is None else f":{quantize}")
        self.logit_scale = model.logit_scale.detach().float().clone()
        self.batch_clips = check_batch_clips(batch_clips) or clips_per_batch(
            model.arch, torch.float32, num_frames, memory_budget_mb
        )
        self._slot = ClassifierSlot(self.device, model.arch.embed_dim, text_tower_fingerprint(model))
        self._slot.set(classifier)

    @torch.no_grad()
    def predict(self, clips: torch.Tensor) -> Prediction:
        check_clips(clips, self.image_size, self.num_frames)
        head = self._slot.head  # this call's classifier, whatever set_classifier does meanwhile
        x = clips.detach().to("cpu", torch.float32).contiguous()
        chunks = range(0, x.shape[0], self.batch_clips)
        emb = torch.cat(
            [torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: x[s : s + self.batch_clips].numpy()})[0])
             for s in chunks]
        )  # fmt: skip
        return Prediction(head.score(emb, self.logit_scale, "reference"), emb, head.classes)

    def __call__(self, clips: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        prediction = self.predict(clips)
        return prediction.logits, prediction.embeddings

    def __repr__(self) -> str:
        k = 0 if self.classes is None else len(self.classes)
        return f"OnnxEncoderPredictor({self.arch.name}, T={self.num_frames}, classes={k}, graph={self.cache.path})"
