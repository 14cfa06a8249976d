"""The exported function: frames -> (scores, frame embeddings), classifier and tau baked in.

Built only from the public stdd_fast API (``STDDModel.encode_video`` and ``score``), so an exported
graph computes exactly what the torch Engine computes. Export-safety rests on ARCHITECTURE §4.1:
in the deterministic eval modes STCA gathers with static index tables, which the tracer records as
constants (no NonZero, no data-dependent shapes, no randomness in the graph).
"""

from __future__ import annotations

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import convert_weights_to_lp
from torch import nn

from stdd_fast import STDDModel, score
from stdd_fast.classifier import Classifier
from stdd_fast.errors import ConfigError
from stdd_fast.text import text_tower_fingerprint

CLIP_MEAN: tuple[float, float, float] = tuple(OPENAI_DATASET_MEAN)
CLIP_STD: tuple[float, float, float] = tuple(OPENAI_DATASET_STD)


class ExportGraph(nn.Module):
    """``frames -> (scores [B, K] float32, embeddings [B, T, D] float32)`` with W and tau as constants.

    frames: [B, T, 3, S, S] CLIP-normalised float, or with ``uint8_input`` [B, T, S, S, 3] uint8 RGB
    (cast, channel-first and normalised here in float32, before the encoder's own cast).
    """

    def __init__(
        self,
        model: STDDModel,
        weights: torch.Tensor,
        logit_scale: float,
        uint8_input: bool = False,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
    ) -> None:
        super().__init__()
        self.model = model
        self.logit_scale = float(logit_scale)  # a Python float: traced as a constant, exp folded at export
        self.uint8_input = uint8_input
        device = model.visual.conv1.weight.device
        self.register_buffer("weights", weights.detach().float().to(device), persistent=False)  # [K, N, D] | [K, D]
        # (x / 255 - mean) / std as one multiply-add: x * scale + shift, per channel, [3, 1, 1]
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
        self.register_buffer("pixel_scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("pixel_shift", -mean_t / std_t, persistent=False)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.uint8_input:
            x = frames.permute(0, 1, 4, 2, 3).float()  # [B, T, S, S, 3] -> [B, T, 3, S, S]
            frames = x * self.pixel_scale + self.pixel_shift
        emb = self.model.encode_video(frames)  # [B, T, D] float32, unit-norm
        return score(emb, self.weights, self.logit_scale), emb


def check_exportable(model: nn.Module, classifier: Classifier) -> None:
    """Raise ConfigError/ClassifierError if ``model`` cannot be exported deterministically with ``classifier``."""
    if not isinstance(model, STDDModel):
        raise ConfigError(
            f"export_onnx takes an stdd_fast STDDModel (create_model / load_model); got {type(model).__name__}"
        )
    if model.training:
        raise ConfigError(
            "the model is in training mode: its STCA draws random window schedules from the global RNG on "
            "every call, which a graph cannot reproduce; call model.eval() before exporting"
        )
    stca = model.stca
    if stca is not None and stca.shuffle == "official":
        raise ConfigError(
            "STCAConfig(shuffle='official') draws a fresh frame permutation from the global RNG on every call "
            "and cannot be baked into a graph; export with shuffle='none' (default) or shuffle='seeded' "
            "(permutations fixed by seed=, baked into the export)"
        )
    # the text tower that built the classifier must be this model's (fingerprinted at full precision)
    full_precision = all(p.dtype == torch.float32 for p in model.parameters())
    classifier.check_compatible(model.arch.embed_dim, text_tower_fingerprint(model) if full_precision else None)


def to_precision(model: STDDModel, dtype: torch.dtype) -> STDDModel:
    """Cast conv/linear/attention/projection weights to ``dtype`` in place; LayerNorms stay float32.

    open_clip's low-precision layout: with fp32 LayerNorm parameters, stdd_fast's LayerNormFp32
    computes its statistics in float32 (ARCHITECTURE §4.6) and the exported graph keeps that.
    """
    if dtype != torch.float32:
        convert_weights_to_lp(model, dtype)
    return model


@torch.no_grad()
def warm_up(graph: ExportGraph, num_frames: int) -> None:
    """One real forward (batch 1) so STCA's static index tables are built and cached as real tensors.

    The tables are built lazily on the first call; built under the tracer they would be recorded as
    ops (the seeded permutation as a random draw) instead of constants.
    """
    device = graph.weights.device
    s = graph.model.arch.image_size
    shape = (1, num_frames, s, s, 3) if graph.uint8_input else (1, num_frames, 3, s, s)
    dtype = torch.uint8 if graph.uint8_input else graph.model.visual.conv1.weight.dtype
    graph(torch.zeros(shape, dtype=dtype, device=device))
