"""The cost of deciding (:mod:`stdd_fast.decisions`) against scoring alone: the decision line of ``stdd-bench``.

A result's decisions are computed on the host from its logits (calibrated thresholds) or its frame
embeddings (background prompts) after the predictor has scored it, for all clips of a call at once;
this times exactly that (the call's decisions, then each clip's detections, as a stream decides its
windows) for the run's classifier shape, and sets it beside the time the fastest path took to score
the same batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stdd_fast.bench.timing import time_fn
from stdd_fast.classifier import Classifier
from stdd_fast.decisions import QUANTILE_LEVELS, Calibration, Decider
from stdd_fast.prompts import DEFAULT_BACKGROUND


def _deciders(classifier: Classifier, logit_scale: torch.Tensor, seed: int) -> dict[str, Decider]:
    """A decider of each kind for ``classifier``: random but valid thresholds, and the default background set."""
    gen = torch.Generator().manual_seed(seed + 2)
    k = classifier.num_classes
    n = classifier.weights.shape[1] if classifier.weights.ndim == 3 else 1
    quantiles = torch.rand(k, QUANTILE_LEVELS, generator=gen).sort(dim=1).values * 0.6 - 0.3
    calibration = Calibration(quantiles[:, int(0.999 * (QUANTILE_LEVELS - 1))].contiguous(), quantiles)
    background = F.normalize(torch.randn(len(DEFAULT_BACKGROUND), n, classifier.embed_dim, generator=gen), dim=-1)
    return {
        "calibrated thresholds": Decider(classifier.classes, logit_scale, calibration=calibration),
        "background prompts": Decider(classifier.classes, logit_scale, background=background),
    }


def decision_rows(classifier: Classifier, logit_scale: torch.Tensor, batch: int, frames: int, scored: dict | None,
                  warmup: int, iters: int, seed: int) -> list[dict]:  # fmt: skip
    """Per decider kind: milliseconds to decide ``batch`` clips, and the share of ``scored`` (the encoder row
    that scored that batch fastest: its p50) they add."""
    gen = torch.Generator().manual_seed(seed + 3)
    emb = F.normalize(torch.randn(batch, frames, classifier.embed_dim, generator=gen), dim=-1)
    logits = torch.randn(batch, classifier.num_classes, generator=gen) * 10
    rows = []
    for kind, decider in _deciders(classifier, logit_scale, seed).items():

        def decide_all(decider=decider) -> None:
            decider.decisions(logits[:, None], emb[:, None]).per_row(decider.classes)  # a clip = a window

        ms = time_fn(decide_all, torch.device("cpu"), warmup=warmup, iters=max(iters, 5)).median * 1e3
        share = ms / scored["p50_ms"] if scored else None
        rows.append({"decider": kind, "batch": batch, "classes": classifier.num_classes, "p50_ms": ms,
                     "scoring_path": scored and scored["path"], "scoring_ms": scored and scored["p50_ms"],
                     "share_of_scoring": share})  # fmt: skip
    return rows


def format_decisions(rows: list[dict]) -> str:
    """One line: what deciding a batch costs per kind, and its share of scoring that batch."""
    if not rows:
        return ""
    first = rows[0]
    kinds = ", ".join(
        f"{r['decider']} {r['p50_ms']:.3f} ms" + (f" ({r['share_of_scoring']:.3%})" if r["share_of_scoring"] else "")
        for r in rows
    )
    scored = first["scoring_ms"]
    against = f" of scoring it with {first['scoring_path']} ({scored:.1f} ms)" if scored else ""
    return f"deciding B={first['batch']} clips (K={first['classes']}, on the host): {kinds}{against}"
