"""The PyTorch predictor: an STDD model and its classifier, clips in, logits and frame embeddings out."""

from __future__ import annotations

import torch

from stdd_fast.classifier import Classifier
from stdd_fast.devices import resolve_device, resolve_precision
from stdd_fast.model import STDDModel
from stdd_fast.ops import resolve_impl
from stdd_fast.predict.config import PredictorConfig
from stdd_fast.predict.contract import clips_per_batch
from stdd_fast.predict.cuda_graphs import CudaGraphed, resolve_cuda_graphs
from stdd_fast.predict.scoring import ClassifierSlot, ScoredInTorch
from stdd_fast.text import text_tower_fingerprint


def _eager_first(eager, compiled):
    """``compiled``, after one eager call: the index tables and folded weights are built eagerly, not traced."""
    warmed = []

    def encoder(x: torch.Tensor) -> torch.Tensor:
        if not warmed:
            eager(x)
            warmed.append(True)
        return compiled(x)

    return encoder


class TorchPredictor(ScoredInTorch):
    """Clips [B, T, 3, S, S] -> (logits [B, K] | None, frame embeddings [B, T, D]) with a PyTorch model.

    model: an :class:`STDDModel` (moved to the config's device / dtype in place; its impl, linear format
    and GEMM set from it). classifier: a :class:`Classifier` (None: embeddings only); scores use the
    model's own ``logit_scale``. config: a :class:`~stdd_fast.predict.PredictorConfig` (or its fields
    as keywords): ``dtype="fp8"`` reads ``dtype`` bfloat16 and ``linear_format`` "fp8"; ``cuda_graphs``
    resolves to whether graphs replay (:func:`~stdd_fast.predict.cuda_graphs.resolve_cuda_graphs`);
    ``batch_clips`` None sizes the forward for ``num_frames``-frame clips within the activation budget.
    Thread-safe for calls and for :meth:`set_classifier`: a call scores with the classifier it started with.
    """

    backend = "torch"

    def __init__(
        self,
        model: STDDModel,
        classifier: Classifier | None = None,
        config: PredictorConfig | None = None,
        *,
        num_frames: int = 8,
        **options,
    ) -> None:
        config = PredictorConfig.of(config, **options)
        self.config = config
        self.device = resolve_device(config.device)
        shuffle = model.stca.shuffle if model.stca is not None else None
        self.cuda_graphs = resolve_cuda_graphs(config.cuda_graphs, self.device, config.compile, shuffle)
        self.dtype, self.linear_format = resolve_precision(config.dtype, self.device)
        # the text tower's identity, taken at full precision (a classifier must come from the same tower)
        full_precision = all(p.dtype == torch.float32 for p in model.parameters())
        self.text_tower = text_tower_fingerprint(model) if full_precision else None
        self.visual = model.visual_fingerprint()  # before any cast: the same in fp32 and bf16
        # the linear format last: it checks the impl and the device it will run on
        model = model.to(device=self.device, dtype=self.dtype).eval().set_linear_format(None).set_impl(config.impl)
        self.model = model.set_linear_format(self.linear_format).set_gemm(config.gemm)
        self.impl = resolve_impl(model.impl, self.device)  # what runs ("auto" resolved for the device)
        self.arch = model.arch
        self.image_size = model.arch.image_size
        self.num_frames: int | None = None  # any T
        self.logit_scale = model.logit_scale.detach().float().clone()  # log(tau) of the checkpoint
        self.batch_clips = config.batch_clips or clips_per_batch(
            model.arch, self.dtype, num_frames, config.activation_budget_mb
        )
        self._score_impl = model.impl  # the head's own "auto" keeps the reference einsum (ops.score)
        encoder = model.encode_video
        if config.compile:
            mode = "default" if config.compile is True else config.compile
            encoder = _eager_first(encoder, torch.compile(encoder, mode=mode))
        self._encoder = CudaGraphed(encoder, self.device) if self.cuda_graphs else encoder
        self._slot = ClassifierSlot(self.device, model.arch.embed_dim, self.text_tower, self.logit_scale, self.visual)
        self._slot.set(classifier)

    def _input(self, clips: torch.Tensor) -> torch.Tensor:
        return clips.to(device=self.device, dtype=self.dtype, non_blocking=True)

    def _encode(self, clips: torch.Tensor) -> torch.Tensor:
        return self._encoder(clips)

    def __repr__(self) -> str:
        k = 0 if self.classes is None else len(self.classes)
        linear = f"linear_format={self.linear_format}, " if self.linear_format else ""
        return (
            f"TorchPredictor({self.arch.name}, impl={self.impl}, device={self.device}, dtype={self.dtype}, {linear}"
            f"classes={k}, batch_clips={self.batch_clips})"
        )
