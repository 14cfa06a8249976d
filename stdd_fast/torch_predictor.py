"""The PyTorch predictor: an STDD model and its classifier, clips in, logits and frame embeddings out."""

from __future__ import annotations

import math

import torch

from stdd_fast.choices import COMPILE_MODES
from stdd_fast.classifier import Classifier
from stdd_fast.config import ArchConfig
from stdd_fast.cuda_graphs import CudaGraphed, resolve_cuda_graphs
from stdd_fast.devices import resolve_precision
from stdd_fast.errors import ConfigError, choice_error
from stdd_fast.model import STDDModel
from stdd_fast.predictor import Prediction, check_clips
from stdd_fast.scoring import ClassifierSlot, ScoresWithSlot
from stdd_fast.text import text_tower_fingerprint


def clips_per_batch(arch: ArchConfig, dtype: torch.dtype, num_frames: int, memory_budget_mb: float) -> int:
    """How many clips of ``num_frames`` frames one forward may take within ``memory_budget_mb`` of activations."""
    number = isinstance(memory_budget_mb, int | float) and not isinstance(memory_budget_mb, bool)
    if not (number and math.isfinite(memory_budget_mb) and memory_budget_mb > 0):
        raise ConfigError(f"memory_budget_mb={memory_budget_mb!r}: must be a finite number of MiB > 0")
    tokens, width, heads = arch.tokens_per_frame, arch.vision_width, arch.vision_heads
    # Peak activations of one block per frame: ~12 token-width buffers (residual, QKV, the STCA
    # paths, the 4x MLP hidden) and two attention-probability maps.
    per_frame = tokens * (12 * width + 2 * heads * tokens) * dtype.itemsize
    return max(1, math.floor(memory_budget_mb * 2**20 / (per_frame * num_frames)))


def check_batch_clips(batch_clips: object) -> int | None:
    if batch_clips is not None and (
        isinstance(batch_clips, bool) or not isinstance(batch_clips, int) or batch_clips < 1
    ):
        raise ConfigError(f"batch_clips={batch_clips!r}: must be an int >= 1 or None (from the memory budget)")
    return batch_clips


def _eager_first(eager, compiled):
    """``compiled``, after one eager call: the index tables and folded weights are built eagerly, not traced."""
    warmed = []

    def encoder(x: torch.Tensor) -> torch.Tensor:
        if not warmed:
            eager(x)
            warmed.append(True)
        return compiled(x)

    return encoder


class TorchPredictor(ScoresWithSlot):
    """Clips [B, T, 3, S, S] -> (logits [B, K] | None, frame embeddings [B, T, D]) with a PyTorch model.

    model: an :class:`STDDModel` (moved to ``device`` / ``dtype`` in place; its impl set to ``impl``).
    ``dtype``: a torch dtype or its name, or ``"fp8"`` (bf16 weights, the STCA blocks' linear layers as
    fp8 GEMMs, :mod:`stdd_fast.fp8`: not the reference impl); ``dtype`` then reads bfloat16 and
    ``linear_format`` "fp8" (None otherwise).
    classifier: a :class:`Classifier` (None: embeddings only); scores use the model's own
    ``logit_scale``. ``compile``: ``torch.compile`` the encoder (True = mode "default", or a mode
    name). ``cuda_graphs``: replay the encoder from a CUDA graph per input shape (True: CUDA only;
    ``"auto"``, the default: on CUDA without ``compile`` and with a deterministic STCA schedule,
    :func:`~stdd_fast.cuda_graphs.resolve_cuda_graphs`; the attribute ``cuda_graphs`` says which).
    ``batch_clips`` clips per forward (None: as many as ``memory_budget_mb`` allows for
    ``num_frames``-frame clips); longer inputs run in chunks. Thread-safe for calls and for
    :meth:`set_classifier`: a call scores with the classifier it started with.
    """

    backend = "torch"

    def __init__(
        self,
        model: STDDModel,
        classifier: Classifier | None = None,
        *,
        impl: str = "auto",
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
        compile: bool | str = False,
        cuda_graphs: bool | str = "auto",
        batch_clips: int | None = None,
        memory_budget_mb: float = 1024.0,
        num_frames: int = 8,
    ) -> None:
        if not isinstance(compile, bool) and compile not in COMPILE_MODES:
            raise choice_error("compile", compile, (True, False, *COMPILE_MODES))
        self.device = torch.device(device)
        shuffle = model.stca.shuffle if model.stca is not None else None
        if cuda_graphs is True and compile == "reduce-overhead":
            raise ConfigError("compile='reduce-overhead' already replays CUDA graphs: drop cuda_graphs=True")
        self.cuda_graphs = resolve_cuda_graphs(cuda_graphs, self.device, compile, shuffle)
        dtype, self.linear_format = resolve_precision(dtype)
        self.dtype = dtype
        # the text tower's identity, taken at full precision (a classifier must come from the same tower)
        full_precision = all(p.dtype == torch.float32 for p in model.parameters())
        self.text_tower = text_tower_fingerprint(model) if full_precision else None
        # the linear format last: it checks the impl and the device it will run on
        model = model.to(device=self.device, dtype=dtype).eval().set_linear_format(None).set_impl(impl)
        self.model = model.set_linear_format(self.linear_format)
        self.impl = model.impl
        self.arch = model.arch
        self.image_size = model.arch.image_size
        self.num_frames: int | None = None  # any T
        self.logit_scale = model.logit_scale.detach().float().clone()  # log(tau) of the checkpoint
        self.batch_clips = check_batch_clips(batch_clips) or clips_per_batch(
            model.arch, dtype, num_frames, memory_budget_mb
        )
        encoder = model.encode_video
        if compile:
            encoder = _eager_first(encoder, torch.compile(encoder, mode="default" if compile is True else compile))
        self._encoder = CudaGraphed(encoder, self.device) if self.cuda_graphs else encoder
        self._slot = ClassifierSlot(self.device, model.arch.embed_dim, self.text_tower)
        self._slot.set(classifier)

    @torch.no_grad()
    def predict(self, clips: torch.Tensor) -> Prediction:
        """Logits, embeddings and the class names the logits belong to (one classifier for the whole call)."""
        check_clips(clips, self.image_size, self.num_frames)
        head = self._slot.head  # this call's classifier, whatever set_classifier does meanwhile
        x = clips.to(device=self.device, dtype=self.dtype, non_blocking=True)
        chunks = range(0, x.shape[0], self.batch_clips)
        emb = torch.cat([self._encoder(x[s : s + self.batch_clips]) for s in chunks])  # [B, T, D] float32
        return Prediction(head.score(emb, self.logit_scale, self.impl), emb, head.classes)  # logits [B, K]

    def __call__(self, clips: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        prediction = self.predict(clips)
        return prediction.logits, prediction.embeddings

    def __repr__(self) -> str:
        k = 0 if self.classes is None else len(self.classes)
        linear = f"linear_format={self.linear_format}, " if self.linear_format else ""
        return (
            f"TorchPredictor({self.arch.name}, impl={self.impl}, device={self.device}, dtype={self.dtype}, {linear}"
            f"classes={k}, batch_clips={self.batch_clips})"
        )
