"""Classes by example: a class described by clips instead of (or besides) words.

A site can teach the engine an action that has no good name by showing it. The example clips go
through the engine (its sampling, its encoder: :meth:`stdd_fast.Engine.embed`), and their frame
embeddings become the class's prompts in the STDD head's prompt-level form: W [K, N, D] holds, for a
class by example, N of its example frames (every view's frames, evenly thinned to at most
:data:`MAX_PROTOTYPES`). The head then scores a video against them as it scores text prompts: for each
of the video's frames its best-matching example frame, and for each example frame its best-matching
video frame (STDD-SPEC §3.4), so a video scores high when it looks like the examples throughout.

Example classes and text classes share one classifier (classes padded to one N by cycling their own
prompts, as the released prompt grid pads ASKG classes). Frame-to-frame similarities run higher than
frame-to-text ones, so the two kinds are not on one scale in a ranking: calibration
(:mod:`stdd_fast.calibrate`) puts them on one, each class's threshold set from the same ordinary
footage, and decisions (``detected``) are what to read from such a classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from stdd_fast.classifier import Classifier
from stdd_fast.errors import ClassifierError, ConfigError, StddError
from stdd_fast.prompts import check_class_names

if TYPE_CHECKING:
    from stdd_fast.engine import Engine

MAX_PROTOTYPES = 64  # example frames kept per class: enough views of an action, bounded head cost


def example_prototypes(engine: Engine, clips: Sequence[str | Path | torch.Tensor], label: str) -> torch.Tensor:
    """The unit-norm frame embeddings of ``clips`` (every view's frames), thinned evenly to MAX_PROTOTYPES: [P, D].

    A clip that cannot be read is a ClassifierError naming it and the class (the classifier would
    silently lose part of the class otherwise).
    """
    if isinstance(clips, str | Path) or not clips:
        raise ConfigError(f"examples of {label!r}: give a list of clips; got {clips!r}")
    frames = []
    for clip, emb in zip(clips, engine.embed(list(clips), on_error="return"), strict=True):
        if isinstance(emb, StddError):
            raise ClassifierError(f"example clip {clip} of class {label!r} failed: {emb}") from emb
        frames.append(emb.reshape(-1, emb.shape[-1]))  # [V*T, D]
    every = torch.cat(frames)
    keep = torch.linspace(0, every.shape[0] - 1, min(MAX_PROTOTYPES, every.shape[0])).round().long()
    return F.normalize(every[keep].float(), dim=-1)


def _cycle(weights: torch.Tensor, n: int) -> torch.Tensor:
    """[N0, D] -> [n, D], cycling the rows (the prompt grid's padding)."""
    index = torch.arange(n) % weights.shape[0]
    return weights[index]


def add_examples(
    engine: Engine, examples: Mapping[str, Sequence[str | Path | torch.Tensor]], classifier: Classifier | None = None
) -> Classifier:
    """A classifier with a class per entry of ``examples`` (``{name: [clips]}``) after the classes of
    ``classifier`` (default: the engine's, or none). The result is prompt level [K, N, D]; a calibration the
    base carried is dropped (new classes need new thresholds); its background descriptions are kept.
    """
    if not examples:
        raise ConfigError("no examples given: pass {'class name': ['clip.mp4', ...]}")
    base = classifier if classifier is not None else engine.classifier
    names = list(examples)
    check_class_names([*(base.classes if base else []), *names], "classes and example classes")
    prototypes = [example_prototypes(engine, examples[name], name) for name in names]
    base_rows = (
        [] if base is None else list((base.weights if base.weights.ndim == 3 else base.weights[:, None]).float())
    )
    rows = [*(r.cpu() for r in base_rows), *prototypes]  # each [N_k, D]
    n = max(r.shape[0] for r in rows)
    weights = torch.stack([_cycle(r, n) for r in rows])  # [K, N, D]
    base_prompts = list(base.prompts) if base is not None and base.prompts else [[]] * len(base_rows)
    prompts = [
        *base_prompts,
        *(
            [f"example frame {i} of {name!r}" for i in range(p.shape[0])]
            for name, p in zip(names, prototypes, strict=True)
        ),
    ]
    prompts = [[row[i % len(row)] for i in range(n)] if row else [] for row in prompts]
    background, bg_weights = (base.background, base.background_weights) if base is not None else ([], None)
    if bg_weights is not None and bg_weights.ndim == 2:
        bg_weights = bg_weights[:, None]  # the prompt-level form of a template average
    sources = {name: [str(c) if isinstance(c, str | Path) else "<tensor>" for c in examples[name]] for name in names}
    return Classifier(
        weights=weights,
        classes=[*(base.classes if base else []), *names],
        prompts=prompts,
        templates=base.templates if base else [],
        source=f"{base.source}+examples" if base else "examples",
        text_tower=base.text_tower if base else "",
        arch=base.arch if base else engine.arch.name,
        logit_scale=base.logit_scale if base else float(engine.logit_scale),
        skipped=base.skipped if base else {},
        background=list(background),
        background_weights=bg_weights,
        examples={**(base.examples if base else {}), **sources},
    )
