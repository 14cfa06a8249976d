"""Parity of an exported graph with the torch reference (the tolerance table, :mod:`stdd_fast.numerics`).

Measures, over random clips: the smallest cosine similarity between matching rows of the scores
[B, K] and of the frame embeddings [B*T, D], the largest absolute errors, and top-1 agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stdd_fast.errors import ParityError
from stdd_fast.numerics import COSINE_MIN, min_cosine


@dataclass(frozen=True)
class ParityReport:
    """Measured agreement of a backend with the torch reference on ``clips`` random clips.

    ``top1_ties``: clips whose top-1 differs only between classes the reference scores within the
    measured error of each other (a numerical tie, not a disagreement).
    """

    backend: str
    precision: str
    clips: int
    min_cosine_scores: float
    min_cosine_embeddings: float
    max_abs_err_scores: float
    max_abs_err_embeddings: float
    top1_agree: int
    top1_ties: int
    cosine_min: float
    batch_consistency: float = 1.0

    @property
    def ok(self) -> bool:
        return (
            min(self.min_cosine_scores, self.min_cosine_embeddings, self.batch_consistency) >= self.cosine_min
            and self.top1_agree + self.top1_ties == self.clips
        )

    def summary(self) -> str:
        return (
            f"parity {self.backend} vs torch reference ({self.precision}, {self.clips} random clips): "
            f"min cosine scores {self.min_cosine_scores:.7f}, embeddings {self.min_cosine_embeddings:.7f} "
            f"(need >= {self.cosine_min}); max abs err scores {self.max_abs_err_scores:.2e}, embeddings "
            f"{self.max_abs_err_embeddings:.2e}; top-1 agreement {self.top1_agree}/{self.clips}"
            + (f" (+{self.top1_ties} numerical ties)" if self.top1_ties else "")
            + (f"; batch-1 vs batched cosine {self.batch_consistency:.7f}" if self.batch_consistency < 1.0 else "")
        )

    def raise_if_failed(self) -> ParityReport:
        if not self.ok:
            raise ParityError(
                f"the exported graph does not match the torch reference: {self.summary()}. "
                "Check the export precision and the model's STCA mode, or report a bug with this line"
            )
        return self


def compare(
    actual: tuple[torch.Tensor, torch.Tensor],
    expected: tuple[torch.Tensor, torch.Tensor],
    precision: str,
    backend: str,
    batch_consistency: float = 1.0,
) -> ParityReport:
    """Compare (scores [B, K], embeddings [B, T, D]) of a backend with the reference's."""
    (s, e), (rs, re) = (t.detach().cpu().double() for t in actual), (t.detach().cpu().double() for t in expected)
    if s.shape != rs.shape or e.shape != re.shape:
        raise ParityError(
            f"{backend} returned scores {list(s.shape)} / embeddings {list(e.shape)}, the reference "
            f"{list(rs.shape)} / {list(re.shape)}"
        )
    finite = bool(torch.isfinite(s).all() and torch.isfinite(e).all())
    err_s = (s - rs).abs().amax(dim=-1) if finite else torch.full((s.shape[0],), float("inf"))  # [B]
    top_ref, top_act = rs.argmax(-1), s.argmax(-1)  # [B]
    agree = top_ref == top_act
    # The backend's pick is a numerical tie if the reference scores it within this clip's error.
    gap = rs.gather(1, top_ref[:, None])[:, 0] - rs.gather(1, top_act[:, None])[:, 0]
    ties = ~agree & (gap <= 2 * err_s)
    return ParityReport(
        backend=backend,
        precision=precision,
        clips=s.shape[0],
        min_cosine_scores=min_cosine(s, rs) if finite else float("-inf"),
        min_cosine_embeddings=min_cosine(e, re) if finite else float("-inf"),
        max_abs_err_scores=err_s.max().item(),
        max_abs_err_embeddings=(e - re).abs().max().item() if finite else float("inf"),
        top1_agree=int(agree.sum()),
        top1_ties=int(ties.sum()),
        cosine_min=COSINE_MIN[precision],
        batch_consistency=batch_consistency,
    )


def random_frames(spec_input_shape: tuple, uint8: bool, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Fresh random clips for a parity run: uint8 0..255, or standard normal (CLIP-normalised scale)."""
    gen = torch.Generator().manual_seed(seed)
    if uint8:
        return torch.randint(0, 256, spec_input_shape, generator=gen, dtype=torch.uint8).to(device)
    return torch.randn(spec_input_shape, generator=gen).to(device)
