"""Datasets in the official list format, train-time sampling and augmentation as released.

List format (STDD-SPEC §6-7): each CSV row is ``relative/path,label`` (the label an integer index
into an index->class JSON), resolved under a path prefix; the label is the last comma-separated field.

Train-time clip (SPEC §2, PySlowFast's Kinetics train path), drawn per clip in this order:

1. **temporal**: a segment of ``clip_size = ceil(sr·(T−1)/target_fps·fps)`` frames starting at
   ``start ~ U(0, max_start)`` (``max_start = max(N − clip_size, 0)``); T indices spread over
   ``clip_size2 = sr·T/target_fps·fps`` frames from the segment start, clamped to the decoded
   segment (the test path's arithmetic with a random instead of a fixed start, SPEC §6.2);
2. **normalise** with the CLIP mean/std (before resizing, as released);
3. **short side** to ``round(U(lo, hi))`` (released (224, 256); see :meth:`Recipe.jitter_for`),
   bilinear, long side ``floor(long/short·s)``;
4. **random crop** of the model's input size at ``y0 ~ randint(0, H − S)``, ``x0 ~ randint(0, W − S)``
   (PySlowFast's ``np.random.randint`` upper bound is exclusive, so the last offset is never drawn;
   kept as released);
5. **horizontal flip** with probability 0.5.

Every draw comes from a generator seeded by (seed, epoch, clip index), so a clip's augmentation does
not depend on worker count, process count, batch composition or resumption. A video that cannot be
read yields an all-zero clip flagged invalid: the loss gives it weight 0 and the trainer counts it
(the epoch never stops on a bad file).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from stdd_fast.errors import ConfigError
from stdd_fast.video import VideoReader, normalize, official_clip_sizes, resize_short_side


@dataclass(frozen=True)
class VideoItem:
    """One row of a video list: the resolved path and the label index."""

    path: str
    label: int


def read_video_list(csv: str | Path, prefix: str | Path = "", num_classes: int | None = None) -> list[VideoItem]:
    """Rows ``relative/path,label`` of an official list file, paths joined to ``prefix``.

    ``num_classes``: when given, every label must lie in [0, num_classes). Blank lines are skipped;
    a malformed row raises ConfigError naming the file and line.
    """
    csv = Path(csv)
    if not csv.is_file():
        raise ConfigError(f"{csv}: no such video list file")
    items = []
    for lineno, line in enumerate(csv.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        path, sep, label = line.rpartition(",")  # the label is the last field; a path may hold commas
        label = label.strip()
        if not sep or not path.strip() or not label.lstrip("-").isdigit():
            raise ConfigError(f"{csv}:{lineno}: expected 'relative/path,label' with an integer label; got {line!r}")
        label = int(label)
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise ConfigError(
                f"{csv}:{lineno}: label {label} is outside [0, {num_classes}); is the class list the right one?"
            )
        items.append(VideoItem(str(Path(prefix) / path.strip()) if str(prefix) else path.strip(), label))
    if not items:
        raise ConfigError(f"{csv}: the video list is empty")
    return items


# -- train-time sampling and augmentation ----------------------------------------------------------


def clip_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one clip's random draws: a function of (seed, epoch, index) only."""
    mixed = ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def _uniform(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen, dtype=torch.float64).item()


def _randint(gen: torch.Generator, high: int) -> int:
    return int(torch.randint(high, (), generator=gen).item())


def train_frame_indices(
    total_frames: int,
    fps: float,
    num_frames: int,
    sampling_rate: int,
    target_fps: float,
    gen: torch.Generator,
    duration_known: bool = True,
) -> torch.Tensor:
    """Frame indices of one random training clip: LongTensor [num_frames] in [0, total_frames).

    ``duration_known`` False (no stream duration) spreads the T indices over ``clip_size2`` frames
    from a random start in the whole video, as the released whole-video fallback does.
    """
    if total_frames < 1:
        raise ConfigError(f"cannot sample a clip from a video of {total_frames} frames")
    clip_size, clip_size2 = official_clip_sizes(fps, num_frames, sampling_rate, target_fps)
    if duration_known:
        max_start = max(total_frames - clip_size, 0.0)
        start = _uniform(gen, 0.0, max_start)
        first = math.ceil(start)
        last = min(math.floor(start + clip_size - 1), total_frames - 1)
        # PySlowFast keeps the frame after the segment end too (SPEC §6.2, the buffer_size=0 loop)
        n_dec = last - first + 1 + (1 if last + 1 < total_frames else 0)
        span = torch.linspace(0, clip_size2 - 1, num_frames, dtype=torch.float32)
        return first + torch.clamp(span, 0, n_dec - 1).long()
    max_start = max(total_frames - clip_size2, 0.0)
    start = _uniform(gen, 0.0, max_start)
    span = torch.linspace(start, start + clip_size2 - 1, num_frames, dtype=torch.float32)
    return torch.clamp(span, 0, total_frames - 1).long()


def augment_clip(
    frames: torch.Tensor,
    size: int,
    jitter: tuple[int, int],
    hflip: bool,
    gen: torch.Generator,
) -> torch.Tensor:
    """Released train-time spatial augmentation: uint8 [T, H, W, 3] -> float32 [T, 3, size, size].

    CLIP normalisation, short side to round(U(jitter)), random ``size`` crop, horizontal flip (p 0.5).
    """
    x = normalize(frames).permute(0, 3, 1, 2)  # [T, 3, H, W]
    short = round(_uniform(gen, *jitter))
    x = resize_short_side(x, short)
    h, w = x.shape[-2:]
    if not (h == size and w == size):
        y0 = _randint(gen, h - size) if h > size else 0
        x0 = _randint(gen, w - size) if w > size else 0
        x = x[..., y0 : y0 + size, x0 : x0 + size]
    if hflip and _uniform(gen) < 0.5:
        x = x.flip(-1)
    return x.contiguous()


class TrainClips(Dataset):
    """Random training clips of a video list. Index with ``(index, epoch)`` (what the sampler yields).

    Returns a dict: ``clip`` float32 [T, 3, S, S], ``label`` int, ``index`` int, ``valid`` bool,
    ``error`` str ("" when valid).
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        image_size: int,
        num_frames: int = 8,
        sampling_rate: int = 16,
        target_fps: float = 30.0,
        jitter: tuple[int, int] | None = None,
        hflip: bool = True,
        seed: int = 0,
    ) -> None:
        self.items = list(items)
        self.image_size = image_size
        self.num_frames = num_frames
        self.sampling_rate = sampling_rate
        self.target_fps = target_fps
        self.jitter = jitter if jitter is not None else (image_size, round(image_size * 256 / 224))
        if self.jitter[0] < image_size:
            raise ConfigError(f"jitter={self.jitter}: the short side must be at least the crop size {image_size}")
        self.hflip = hflip
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int, epoch: int) -> torch.Tensor:
        """The augmented clip of item ``index`` in ``epoch``: float32 [T, 3, S, S] (raises on a bad video)."""
        item = self.items[index]
        gen = clip_generator(self.seed, epoch, index)
        with VideoReader(item.path) as reader:
            info = reader.info
            idx = train_frame_indices(
                info.num_frames,
                info.fps,
                self.num_frames,
                self.sampling_rate,
                self.target_fps,
                gen,
                info.duration_known,
            )
            frames = reader.read(idx)  # [T, H, W, 3] uint8
        return augment_clip(frames, self.image_size, self.jitter, self.hflip, gen)

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.items[index]
        try:
            clip, error = self.load(index, epoch), ""
        except Exception as e:  # any failure of one file (decode, format, size) skips that clip only
            size = self.image_size
            clip, error = torch.zeros(self.num_frames, 3, size, size), f"{item.path}: {type(e).__name__}: {e}"
        return {"clip": clip, "label": item.label, "index": index, "valid": not error, "error": error}


def collate_clips(batch: list[dict]) -> dict:
    """Stack a list of :class:`TrainClips` samples: clips [B, T, 3, S, S], labels/index [B], valid [B] bool."""
    return {
        "clips": torch.stack([b["clip"] for b in batch]),
        "labels": torch.tensor([b["label"] for b in batch], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
        "valid": torch.tensor([b["valid"] for b in batch], dtype=torch.bool),
        "errors": [b["error"] for b in batch if b["error"]],
    }


class StepSampler(Sampler):
    """This process's share of each optimizer step, as ``(index, epoch)`` keys, in step order.

    Per epoch the dataset is permuted by a generator seeded with (seed, epoch); each optimizer
    step takes the next ``global_batch`` indices (the remainder is dropped, as the released train
    loader does). Micro-batch ``a`` (of ``grad_accum``) of rank ``r`` is the slice
    ``[(a·world + r)·micro, +micro)`` of the step, so every step sees the same clips whatever the
    split over processes and accumulation, and its loss averages over the same global batch.
    """

    def __init__(
        self, size: int, global_batch: int, world_size: int = 1, rank: int = 0, grad_accum: int = 1, seed: int = 0
    ) -> None:
        if global_batch % (world_size * grad_accum):
            raise ConfigError(
                f"batch_size={global_batch} is not divisible by world_size x grad_accum = "
                f"{world_size} x {grad_accum}; pick a global batch that splits evenly"
            )
        if size < global_batch:
            raise ConfigError(
                f"the training list has {size} videos, fewer than one global batch of {global_batch}; lower batch_size"
            )
        self.size = size
        self.global_batch = global_batch
        self.world_size = world_size
        self.rank = rank
        self.grad_accum = grad_accum
        self.micro = global_batch // (world_size * grad_accum)
        self.seed = seed
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.grad_accum * self.micro

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=gen).tolist()
        for step in range(self.steps_per_epoch):
            chunk = order[step * self.global_batch : (step + 1) * self.global_batch]
            for a in range(self.grad_accum):
                start = (a * self.world_size + self.rank) * self.micro
                for i in chunk[start : start + self.micro]:
                    yield (i, self.epoch)


def build_train_loader(
    dataset: TrainClips,
    sampler: StepSampler,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader of micro-batches over ``sampler``; it draws nothing from the global torch RNG."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=sampler.micro,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_clips,
        pin_memory=pin_memory,
        drop_last=False,
        persistent_workers=num_workers > 0,
        # Its own generator: the worker base seed must not consume the global RNG, whose draws
        # belong to the train-mode STCA masks (and make resumption exact).
        generator=torch.Generator().manual_seed(sampler.seed),
    )
