"""The CPU fast path: the fused STCA encoder graph in ONNX Runtime, the STDD head in PyTorch.

Same contract and results objects as every predictor (:mod:`stdd_fast.predict.contract`), the same
function as the torch path within the tolerance table (fp32 max rel err <= 1e-5 against the
reference, checked when the graph is built). The graph comes from the on-disk cache
(:mod:`stdd_fast.predict.encoder_cache`): built once per weights / STCA schedule / T when this
predictor is made (``setup_note`` says so), never inside a first result's timing. The classifier is
not in the graph, so :meth:`set_classifier` swaps it at once, as on the torch path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stdd_fast.classifier import Classifier
from stdd_fast.errors import ConfigError
from stdd_fast.graphs.encoder import INPUT_NAME, OUTPUT_NAME
from stdd_fast.model import STDDModel
from stdd_fast.predict.config import PredictorConfig
from stdd_fast.predict.contract import clips_per_batch
from stdd_fast.predict.encoder_cache import CachedEncoder, cached_encoder, runtime_graph
from stdd_fast.predict.onnx_session import open_session, session_options
from stdd_fast.predict.scoring import ClassifierSlot, ScoredInTorch
from stdd_fast.text import text_tower_fingerprint


def run_encoder_session(session, clips: torch.Tensor) -> torch.Tensor:
    """Frame embeddings [B, T, D] of clips [B, T, 3, S, S] (float32, CPU) from an encoder-graph session."""
    x = clips.detach().to("cpu", torch.float32).contiguous().numpy()
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])


class OnnxEncoderPredictor(ScoredInTorch):
    """Clips [B, T, 3, S, S] -> (logits [B, K] | None, embeddings [B, T, D]): encoder in ONNX Runtime (CPU).

    model: an fp32 :class:`STDDModel` in eval mode with a deterministic STCA schedule (``none`` or
    ``seeded``); ``num_frames``: T, fixed in the graph. config: the
    :class:`~stdd_fast.predict.PredictorConfig` (``quantize="int8"``: opt-in int8 MatMul weights, not
    exact, its error against fp32 in benchmarks/README.md; ``linear_format`` then reads "int8").
    ``cache_dir``: where graphs are kept (default: the user cache). ``threads``: ONNX Runtime's
    intra-op threads (None: the cores this process may use).
    """

    backend = "onnxruntime"
    impl = "fused"  # the STCA implementation the graph was traced from

    def __init__(
        self,
        model: STDDModel,
        classifier: Classifier | None = None,
        config: PredictorConfig | None = None,
        *,
        num_frames: int = 8,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        **options,
    ) -> None:
        config = PredictorConfig.of(config, **options)
        if config.device not in ("cpu", "auto") or config.impl not in ("auto", "fused"):
            raise ConfigError(
                f"the ONNX Runtime encoder runs the fused graph on the CPU; got device={config.device!r}, "
                f"impl={config.impl!r}: use backend='torch' for those"
            )
        if any(p.dtype != torch.float32 for p in model.parameters()):
            raise ConfigError("the ONNX Runtime CPU path runs fp32 models; cast the model with .float()")
        self.config = config
        self.cache: CachedEncoder = cached_encoder(model, num_frames, cache_dir, quantize=config.quantize)
        runtime = runtime_graph(self.cache)  # optimised once per machine and ONNX Runtime version
        optimised = runtime.path != self.cache.path
        optimising = f"; {runtime.note} in {runtime.seconds:.1f} s" if runtime.built else ""
        self.setup_note = self.cache.describe() + optimising
        self.session = open_session(runtime.path, "cpu", session_options(threads, optimize=not optimised))
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.linear_format = config.quantize
        self.arch, self.image_size, self.num_frames = model.arch, model.arch.image_size, num_frames
        self.logit_scale = model.logit_scale.detach().float().clone()
        self.batch_clips = config.batch_clips or clips_per_batch(
            model.arch, torch.float32, num_frames, config.activation_budget_mb
        )
        self._score_impl = "reference"
        self.visual = model.visual_fingerprint()
        tower = text_tower_fingerprint(model)
        self._slot = ClassifierSlot(self.device, model.arch.embed_dim, tower, self.logit_scale, self.visual)
        self._slot.set(classifier)

    def _input(self, clips: torch.Tensor) -> torch.Tensor:
        return clips.detach().to("cpu", torch.float32).contiguous()

    def _encode(self, clips: torch.Tensor) -> torch.Tensor:
        return run_encoder_session(self.session, clips)

    def __repr__(self) -> str:
        k = 0 if self.classes is None else len(self.classes)
        return f"OnnxEncoderPredictor({self.arch.name}, T={self.num_frames}, classes={k}, graph={self.cache.path})"
