"""The STDD scoring head (STDD-SPEC §3.4) and the test-time view ensemble.

:func:`score` is the PyTorch piece of the ``score`` stem (Triton launcher ``stdd_fast.kernels.score``,
custom op ``stdd_fast::score``); :func:`stdd_fast.ops.score` chooses between them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from stdd_fast.errors import ClassifierError


def _tau(logit_scale: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(logit_scale, dtype=torch.float32).exp()


def score(embeddings: torch.Tensor, weights: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Class logits of clips (the PyTorch piece).

    embeddings: [B, T, D] unit-norm frame embeddings. weights: [K, N, D] prompt-level or [K, D]
    unit-norm text embeddings. logit_scale: log(tau), as stored in CLIP checkpoints.
    With S[b,t,k,n] = tau <f_bt, w_kn>:
      3-D: score = (mean_n max_t S + mean_t max_n S) / 2
      2-D: score = mean_t tau <f_bt, w_k>
    Returns float32 [B, K].
    """
    if embeddings.shape[-1] != weights.shape[-1]:
        raise ClassifierError(
            f"embeddings are {embeddings.shape[-1]}-d but the classifier's are {weights.shape[-1]}-d; "
            "rebuild the classifier with this model"
        )
    f = embeddings.float()
    w = weights.to(device=f.device, dtype=torch.float32)
    tau = _tau(logit_scale).to(f.device)
    if w.ndim == 2:
        return tau * torch.einsum("btd,kd->btk", f, w).mean(1)
    s = tau * torch.einsum("btd,knd->btkn", f, w)  # [B, T, K, N]
    return 0.5 * (s.amax(dim=1).mean(dim=-1) + s.amax(dim=-1).mean(dim=1))


def aggregate_views(view_scores: torch.Tensor) -> torch.Tensor:
    """Sum the logits of a video's views (the released ensemble): [..., V, K] -> [..., K]."""
    return view_scores.sum(dim=-2)


class ViewRanking(NamedTuple):
    """A video's classes ranked from its view logits: what every result type (Engine, server, batch rows) shows."""

    view_scores: torch.Tensor  # [V, K] float32 on the CPU
    logits: torch.Tensor  # [K]: the views summed
    top: list[int]  # the top-k class indices, best first
    scores: list[float]  # their logits
    probabilities: list[float]  # theirs in the mean over views of each view's softmax


def rank_views(view_logits: torch.Tensor, top_k: int) -> ViewRanking:
    """Rank a video's classes from its view logits [V, K]: summed over views (the released ensemble), top-k."""
    view_scores = view_logits.float().cpu()
    logits = aggregate_views(view_scores)
    top = logits.topk(min(top_k, logits.shape[-1]))
    probabilities = view_scores.softmax(-1).mean(0)[top.indices]
    return ViewRanking(view_scores, logits, top.indices.tolist(), top.values.tolist(), probabilities.tolist())
