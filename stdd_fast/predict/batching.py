"""Loaded videos through a predictor: their clips gathered into batched calls, the outputs split back.

A video's V views are V clips. Clips of consecutive videos go into one predictor call until it
holds ``predictor.batch_clips`` of them (only clips of the same shape share a call); each video
then gets its rows of the logits and embeddings and its share of the call's time. A video that
failed to load passes through with its error and costs no call; one whose outputs are NaN or Inf
gets a :class:`NonFiniteError` instead of results. Videos come out in the order they went in.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from stdd_fast.decisions import Detection
from stdd_fast.devices import synchronize
from stdd_fast.errors import NonFiniteError
from stdd_fast.numerics import all_finite
from stdd_fast.predict.contract import Predictor
from stdd_fast.terminal import progress_bar
from stdd_fast.video.loader import LoadedVideo


@dataclass
class PredictedVideo:
    """One video after the predictor: logits [V, K] (None without a classifier), embeddings [V, T, D].

    classes: the names the logits belong to; detected: the classes the video shows by the classifier it was
    scored with (:mod:`stdd_fast.decisions`; None: it makes no decisions). encode_s: this video's share (by
    clips) of its call. ``logits`` / ``embeddings`` are None when the video failed (``loaded.error``).
    """

    loaded: LoadedVideo
    logits: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    classes: tuple[str, ...] | None = None
    encode_s: float = 0.0
    detected: list[Detection] | None = None


def _decide(prediction, scored: list[PredictedVideo]) -> None:
    """Set each scored video's detections: those of as many views decided at once (a few host operations)."""
    if prediction.decider is None or prediction.logits is None:
        return
    by_views: dict[int, list[PredictedVideo]] = {}
    for p in scored:
        by_views.setdefault(p.logits.shape[0], []).append(p)
    for same in by_views.values():
        decided = prediction.decider.decisions(
            torch.stack([p.logits for p in same]), torch.stack([p.embeddings for p in same])
        )
        for p, found in zip(same, decided.per_row(prediction.classes), strict=True):
            p.detected = found


def predict_videos(predictor: Predictor, videos: Iterable[LoadedVideo], progress=None) -> Iterator[PredictedVideo]:
    """Each loaded video with its predictor outputs, in order. ``progress``: a bar with ``update(n)``."""
    bar = progress if progress is not None else progress_bar(None, False, "", "video")
    pending: list[LoadedVideo] = []
    clips = 0
    for loaded in videos:
        pending.append(loaded)
        clips += 0 if loaded.error is not None else loaded.clips.shape[0]
        if clips >= predictor.batch_clips:
            yield from _flush(predictor, pending, bar)
            pending, clips = [], 0
    yield from _flush(predictor, pending, bar)


def _flush(predictor: Predictor, pending: list[LoadedVideo], bar) -> Iterator[PredictedVideo]:
    done: dict[int, PredictedVideo] = {id(v): PredictedVideo(v) for v in pending if v.error is not None}
    groups: dict[tuple, list[LoadedVideo]] = {}
    for v in pending:  # clips concatenate only with the same [T, 3, S, S]
        if v.error is None:
            groups.setdefault(tuple(v.clips.shape[1:]), []).append(v)
    for group in groups.values():
        clips = torch.cat([v.clips for v in group])  # [sum V, T, 3, S, S]
        synchronize(predictor.device)
        t0 = time.perf_counter()
        prediction = predictor.predict(clips)
        synchronize(predictor.device)
        seconds = time.perf_counter() - t0
        sizes = [v.clips.shape[0] for v in group]
        logits = [None] * len(group) if prediction.logits is None else prediction.logits.split(sizes)
        scored = []
        for v, emb, lg, n in zip(group, prediction.embeddings.split(sizes), logits, sizes, strict=True):
            v.clips = None  # free the input before the next batch
            if not all_finite(emb, lg):
                v.error = NonFiniteError(f"{v.source}: the model produced NaN/Inf scores or embeddings for it")
                done[id(v)] = PredictedVideo(v)
                continue
            scored.append(PredictedVideo(v, lg, emb, prediction.classes, seconds * n / clips.shape[0]))
        _decide(prediction, scored)
        done.update((id(p.loaded), p) for p in scored)
    for v in pending:
        bar.update(1)
        yield done[id(v)]
