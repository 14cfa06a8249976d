"""Rough durations of the CPU path's one-time setup, said before it starts (:mod:`stdd_fast.notices`).

Scaled from the encoder's matrix work per clip (:func:`stdd_fast.flops.encoder_macs`, fused rewrite) and
the torch threads, from what they took on an Intel Xeon with 2 cores (torch 2.14.1, ONNX Runtime 1.32):
ViT-B/16 at 8 frames (151 GMAC a clip) built its encoder graph, parity check included, in 60 s and
measured the two backends in 19 s; test-tiny (0.07 GMAC) in 6 s and 1 s. Only an order of magnitude:
the notice says "about".
"""

from __future__ import annotations

import torch

from stdd_fast.flops import encoder_macs
from stdd_fast.model import STDDModel

_CORES_MEASURED = 2
# seconds = fixed + per_gmac * GMAC per clip * (2 cores / threads here)
_BUILD = (5.0, 0.37)  # trace, export, onnx checks, the fp32 parity run
_CHOICE = (0.5, 0.13)  # a session, one warm-up and three timed calls per backend


def _gmac(model: STDDModel, num_frames: int) -> float:
    return encoder_macs(model.arch, model.stca, "fused") * num_frames / 1e9


def _scaled(fixed_and_rate: tuple[float, float], model: STDDModel, num_frames: int) -> float:
    fixed, rate = fixed_and_rate
    return fixed + rate * _gmac(model, num_frames) * _CORES_MEASURED / max(1, torch.get_num_threads())


def graph_build_seconds(model: STDDModel, num_frames: int) -> float:
    """Roughly how long exporting and checking ``model``'s encoder graph at ``num_frames`` frames takes here."""
    return _scaled(_BUILD, model, num_frames)


def choice_seconds(model: STDDModel, num_frames: int) -> float:
    """Roughly how long timing the two CPU encoders on one clip takes here (the graph already built)."""
    return _scaled(_CHOICE, model, num_frames)
