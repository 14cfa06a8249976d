"""The two Ray Data stages of a corpus job and the predictor they share.

* :class:`DecodeVideos` (CPU tasks): a path row -> its clips, through the VideoLoader (probe, the
  official sampling, PyAV decoding, transforms). A video that fails becomes a row with its typed
  error; the stage never raises.
* :class:`ClassifyVideos` (actors, one predictor each): a batch of decoded rows -> result rows,
  scored as the Engine scores them (:func:`stdd_fast.predict.batching.predict_videos`: the batch's clips in
  one predictor call, split back per video, NaN/Inf as a ``NonFiniteError`` row).

:func:`probe_predictor` builds the predictor once where the actors will run, before the job starts:
a bad checkpoint or class list fails there with its own error, and the facts the job needs (image
size, embedding width, clips per call, the classifier built from the class names) come back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from stdd_fast.batch.config import BatchConfig
from stdd_fast.batch.rows import decoded_row, failed_row, ranked_row, table, text
from stdd_fast.predict.config import ClassSource, PredictorConfig


@dataclass(frozen=True)
class PredictorPlan:
    """What every actor builds: the job, its predictor config resolved for the workers (device, dtype), and the
    classifier the probe built once (None: the job's class source as given, or an exported graph's own)."""

    config: BatchConfig
    predictor: PredictorConfig
    classifier: object = None

    def build(self):
        from stdd_fast.predict.build import build_predictor

        c = self.config
        source = ClassSource(classifier=self.classifier) if self.classifier is not None else c.classes
        return build_predictor(c.weights, source, config=self.predictor, num_frames=c.sampling.num_frames)


@dataclass(frozen=True)
class ProbeFacts:
    """What the job learns from one built predictor."""

    plan: PredictorPlan  # the actors' plan: with the classifier the probe built, when it built one
    image_size: int
    embed_dim: int
    batch_clips: int
    classes: tuple[str, ...]


def probe_predictor(plan: PredictorPlan) -> ProbeFacts:
    """Build the predictor once and run one clip of zeros through it (a Ray task on a worker like the actors)."""
    import torch

    from stdd_fast.decisions import check_views

    predictor = plan.build()
    c = plan.config
    check_views(predictor, c.sampling)
    zeros = torch.zeros(1, c.sampling.num_frames, 3, predictor.image_size, predictor.image_size)
    embed_dim = predictor.predict(zeros).embeddings.shape[-1]
    built = None if c.exported else getattr(predictor, "classifier", None)  # an exported graph has its own
    actors = replace(plan, classifier=built.to("cpu")) if built is not None else plan
    return ProbeFacts(actors, predictor.image_size, int(embed_dim), predictor.batch_clips, tuple(predictor.classes))


class DecodeVideos:
    """Ray Data ``map`` function: ``{"path"}`` -> the decoded row of :func:`~stdd_fast.batch.rows.decoded_row`."""

    def __init__(self, config: BatchConfig, image_size: int) -> None:
        self.config, self.image_size = config, image_size
        self._loader = None  # built in the worker on first use (a loader is not sent around)

    def __call__(self, row: dict) -> dict:
        if self._loader is None:
            from stdd_fast.video.loader import VideoLoader

            c = self.config
            self._loader = VideoLoader(c.sampling, c.decode, self.image_size, "cpu")
        loaded = self._loader.load_one(0, row["path"])  # errors come back in loaded.error
        return decoded_row(loaded, self.config.sampling.num_frames, self.image_size)


class ClassifyVideos:
    """Ray Data ``map_batches`` actor: one predictor; a numpy batch of decoded rows -> a table of result rows."""

    def __init__(self, plan: PredictorPlan, schema, torch_threads: int | None) -> None:
        import torch

        if torch_threads is not None:  # a CPU actor computes with the CPUs Ray gave it, not all of the node's
            torch.set_num_threads(torch_threads)
        self.predictor = plan.build()
        self.config, self.schema = plan.config, schema

    def __call__(self, batch: dict[str, np.ndarray]):
        from stdd_fast.predict.batching import predict_videos

        rows: list[dict | None] = [None] * len(batch["path"])
        ready = []
        for i in range(len(rows)):
            video = _decoded(batch, i)
            if isinstance(video, dict):  # it failed to decode: its row is ready
                rows[i] = video
            else:
                ready.append(video)
        for p in predict_videos(self.predictor, ready):  # the Engine's batching: one call, split per video
            v = p.loaded
            seconds = (v.decode_s, v.preprocess_s, p.encode_s)
            if p.logits is None:  # NaN/Inf outputs: that video's NonFiniteError
                rows[v.index] = failed_row(v.source, type(v.error).__name__, str(v.error), v.backend, seconds)
            else:
                rows[v.index] = ranked_row(p, self.config.top_k, seconds, self.config.embeddings, self.predictor)
        return table(rows, self.schema)


def _decoded(batch: dict[str, np.ndarray], i: int):
    """Row ``i`` of a decoded batch: a LoadedVideo (index ``i``) with its clips, or the row of a failed video."""
    import torch

    from stdd_fast.video.loader import LoadedVideo

    path, backend = str(batch["path"][i]), text(batch["decode_backend"][i])
    decode_s, preprocess_s = float(batch["decode_s"][i]), float(batch["preprocess_s"][i])
    error_type = text(batch["error_type"][i])
    if error_type is not None:
        return failed_row(path, error_type, text(batch["error"][i]), backend, (decode_s, preprocess_s, 0.0))
    # the batch is a read-only view of Ray's object store: the predictor gets its own copy
    clips = torch.from_numpy(np.array(batch["clips"][i], dtype=np.float32))  # [V, T, 3, S, S]
    return LoadedVideo(i, path, clips=clips, backend=backend, decode_s=decode_s, preprocess_s=preprocess_s)
