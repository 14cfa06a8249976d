"""The fine-tuning loop: epochs of optimizer steps, checkpoints, resumption, torchrun DDP, averaging.

One optimizer step (STDD-SPEC §2, §9)::

    lr = schedule(epoch + step / steps_per_epoch)                 # per iteration
    for each of grad_accum micro-batches (DDP syncs on the last):
        with autocast(bf16 | fp16):  loss = compute_loss(...)     # train-mode STCA masks
        scaler.scale(loss / grad_accum).backward()
    scaler.unscale_; clip_grad_norm_(1.0); scaler.step; scaler.update

Reproducibility: the data order and every augmentation draw are functions of (seed, epoch, clip
index) (:mod:`.data`); the global torch RNG is drawn only by the train-mode STCA masks, seeded with
``seed`` on every process after the models are built (PySlowFast seeds each process alike). An
epoch checkpoint holds the CLIP weights (loadable by :func:`stdd_fast.load_model`) plus, under
``"training"``, the projector, optimizer, GradScaler, global step and every process's RNG states,
so resuming from it reaches the same weights as the uninterrupted run.

Under torchrun each process takes ``batch_size / (world_size * grad_accum)`` clips of every step and
DDP averages gradients, which is the same global-batch mean as one process. The frozen teacher
(raw CLIP) sits outside the DDP module, so it is neither synchronised nor saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from stdd_fast.checkpoints import FORMAT_TAG
from stdd_fast.classifier import Classifier, build_classifier
from stdd_fast.errors import CheckpointError, ConfigError
from stdd_fast.factory import create_model, load_model
from stdd_fast.model import STDDModel
from stdd_fast.prompts import read_class_names
from stdd_fast.terminal import progress_bar
from stdd_fast.text import text_tower_fingerprint
from stdd_fast.training import dist
from stdd_fast.training.averaging import checkpoint_name, epoch_checkpoints, export_average
from stdd_fast.training.data import StepSampler, TrainClips, build_train_loader, read_video_list
from stdd_fast.training.losses import PROJECTOR_ATTR, attach_projector, compute_loss
from stdd_fast.training.optim import build_optimizer, freeze_for_training
from stdd_fast.training.recipe import Recipe
from stdd_fast.training.schedule import LRSchedule

log = logging.getLogger("stdd_fast.training")
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """What a run produced: its directory, epoch checkpoints, per-epoch and per-log-step metrics, average."""

    output_dir: Path
    checkpoints: list[Path] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    average: Path | None = None

    @property
    def last_checkpoint(self) -> Path | None:
        return self.checkpoints[-1] if self.checkpoints else None


class LossModule(nn.Module):
    """What DDP wraps: ``forward(clips, labels, valid)`` is :func:`compute_loss` with the run's settings.

    The classifier weights and the teacher are plain attributes, outside the module tree: DDP
    neither broadcasts them every step (W is [K, N, D], 183 MB for K400) nor saves them.
    """

    def __init__(
        self, model: STDDModel, weights: torch.Tensor, distill: str, raw_model: STDDModel | None, ratio: float
    ) -> None:
        super().__init__()
        self.model = model
        self.__dict__["classifier_weights"] = weights
        self.__dict__["raw_model"] = raw_model
        self.distill = distill
        self.ratio = ratio

    def forward(self, clips: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        return compute_loss(
            self.model,
            clips,
            labels,
            self.classifier_weights,
            distill=self.distill,
            raw_model=self.raw_model,
            ratio=self.ratio,
            sample_weight=valid.float(),
        )


# -- building blocks --------------------------------------------------------------------------------


def build_models(recipe: Recipe, device: torch.device) -> tuple[STDDModel, STDDModel | None]:
    """The STCA model to train and, for ``distill="paper"``, the frozen teacher (plain CLIP, same init)."""
    if recipe.pretrained is None and recipe.arch is None:
        raise ConfigError(
            "Recipe: set pretrained= (a CLIP or STDD checkpoint path) or, for a random-init smoke run, arch= "
            "(see stdd_fast.list_models())"
        )
    stca = recipe.stca_config()

    def make(stca_cfg):
        if recipe.pretrained is not None:
            return load_model(recipe.pretrained, arch=recipe.arch, stca=stca_cfg, impl=recipe.impl, device=device)
        return create_model(recipe.arch, stca=stca_cfg, impl=recipe.impl, device=device, seed=recipe.init_seed)

    model = make(stca)
    raw = None
    if recipe.distill == "paper":
        raw = make(None).eval()
        raw.requires_grad_(False)
    return model, raw


def build_train_classifier(recipe: Recipe, model: STDDModel, classes: list[str]) -> Classifier:
    """The frozen classifier: loaded from ``recipe.classifier`` or built once from the model's text tower."""
    if recipe.classifier is not None:
        clf = Classifier.load(recipe.classifier)
        if clf.classes != classes:
            raise ConfigError(
                f"{recipe.classifier}: its {clf.num_classes} classes differ from the {len(classes)} of "
                f"{recipe.classes}; build the classifier from the training class list"
            )
        clf.check_compatible(model.arch.embed_dim, text_tower_fingerprint(model))
        return clf
    with torch.no_grad():
        return build_classifier(model, classes, xprompt=recipe.xprompt, askg=recipe.askg, reduce=recipe.text_reduce)


def _rng_state(device: torch.device) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": random.getstate(),
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    random.setstate(state["python"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def read_training_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by the trainer (weights_only load); CheckpointError if it holds no training state."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint to resume from")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is the same user error here
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_TAG or "training" not in ckpt:
        raise CheckpointError(
            f"{path}: not a stdd_fast training checkpoint (no optimizer/RNG state); to start from these weights "
            "use pretrained= instead of resuming"
        )
    return ckpt


def resolve_resume(resume: str | Path | None, output_dir: Path) -> Path | None:
    """``"auto"``: the latest epoch checkpoint in ``output_dir`` (None if there is none); a path passes through."""
    if resume is None:
        return None
    if str(resume) == "auto":
        found = epoch_checkpoints(output_dir)
        return found[max(found)] if found else None
    return Path(resume)


# -- the run ----------------------------------------------------------------------------------------


class Trainer:
    """One fine-tuning run of ``recipe`` in this process (one rank under torchrun). Use :func:`finetune`."""

    def __init__(
        self,
        recipe: Recipe,
        env: dist.DistEnv,
        resume: str | Path | None = None,
        progress: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.recipe = recipe
        self.env = env
        self.device = env.device
        self.progress = progress and env.is_main
        self.out = Path(recipe.output_dir)
        if not recipe.train_csv or not recipe.classes:
            raise ConfigError("Recipe: train_csv= and classes= (an index->class JSON) are needed to train")
        claim_run_folder(self.out, resume, overwrite, remove=env.is_main)  # every rank checks; one removes
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            recipe.save(self.out / "recipe.json")
        dist.barrier(env)
        if recipe.precision == "fp16" and self.device.type == "cpu":
            log.warning("precision=fp16 on CPU: autocast fp16 on CPU is slow; prefer precision=bf16 or fp32")

        self.classes = read_class_names(recipe.classes)
        items = read_video_list(recipe.train_csv, recipe.prefix, len(self.classes))
        self.model, self.raw = build_models(recipe, self.device)
        self.classifier = build_train_classifier(recipe, self.model, self.classes)
        freeze_for_training(self.model)
        if recipe.distill == "paper":
            attach_projector(self.model, seed=recipe.seed)
        self.model.train()
        size = self.model.arch.image_size
        self.dataset = TrainClips(
            items,
            size,
            recipe.num_frames,
            recipe.sampling_rate,
            recipe.target_fps,
            recipe.jitter_for(size),
            recipe.hflip,
            recipe.seed,
        )
        self.sampler = StepSampler(
            len(items), recipe.batch_size, env.world_size, env.rank, recipe.grad_accum, recipe.seed
        )
        self.loader = build_train_loader(
            self.dataset, self.sampler, recipe.num_workers, pin_memory=self.device.type == "cuda"
        )
        self.optimizer = build_optimizer(self.model, recipe.base_lr, recipe.weight_decay, recipe.betas, recipe.eps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=recipe.precision == "fp16")
        self.schedule = LRSchedule.from_recipe(recipe)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]

        self.start_epoch, self.global_step = 0, 0
        self.history: list[dict] = []
        self.steps: list[dict] = []
        _seed_all(recipe.seed)
        path = resolve_resume(resume, self.out)
        if path is not None:
            self._resume(path)

        self.loss_module = LossModule(
            self.model, self.classifier.weights.to(self.device), recipe.distill, self.raw, recipe.distill_ratio
        )
        self.step_module: nn.Module = self.loss_module
        if env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = nn.parallel.DistributedDataParallel(self.loss_module, device_ids=ids)

    # -- checkpoints ------------------------------------------------------------------------------

    def _clip_state(self) -> dict[str, torch.Tensor]:
        prefix = PROJECTOR_ATTR + "."
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items() if not k.startswith(prefix)}

    def save_checkpoint(self, epoch_id: int) -> Path:
        """Write ``checkpoint_epoch_{epoch_id}.pt`` (rank 0) after gathering every process's RNG state."""
        rng = dist.all_gather_objects(self.env, _rng_state(self.device))
        path = self.out / checkpoint_name(epoch_id)
        if self.env.is_main:
            projector = getattr(self.model, PROJECTOR_ATTR, None)
            ckpt = {
                "format": FORMAT_TAG,
                "model": self._clip_state(),
                "arch": self.model.arch.to_dict(),
                "stca": asdict(self.model.stca) if self.model.stca is not None else None,
                "epoch": epoch_id,
                "training": {
                    "global_step": self.global_step,
                    "projector": None if projector is None else projector.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "rng": rng,
                    "world_size": self.env.world_size,
                    "recipe": self.recipe.to_dict(),
                    "history": self.history,
                },
            }
            tmp = path.with_suffix(".pt.tmp")
            torch.save(ckpt, tmp)
            os.replace(tmp, path)  # never leave a half-written checkpoint under the final name
        dist.barrier(self.env)
        return path

    def _resume(self, path: Path) -> None:
        ckpt = read_training_checkpoint(path)
        state = ckpt["training"]
        saved = state.get("recipe", {})
        changed = {
            k: (saved[k], v) for k, v in self.recipe.to_dict().items() if k in saved and saved[k] != v and k != "device"
        }
        if changed:
            log.warning("resuming %s with recipe changes (saved, now): %s", path, changed)
        missing, unexpected = self.model.load_state_dict(ckpt["model"], strict=False)
        missing = [k for k in missing if not k.startswith(PROJECTOR_ATTR + ".")]
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        projector = getattr(self.model, PROJECTOR_ATTR, None)
        if projector is not None and state.get("projector") is not None:
            projector.load_state_dict(state["projector"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state.get("history", []))
        rng = state["rng"]
        if len(rng) == self.env.world_size:
            _set_rng_state(rng[self.env.rank], self.device)
        else:
            # The mask draws cannot continue the saved streams: reseed deterministically instead.
            log.warning(
                "%s was written by %d process(es), this run has %d: RNG streams reseeded, so the STCA masks "
                "differ from an uninterrupted run",
                path,
                len(rng),
                self.env.world_size,
            )
            _seed_all(self.recipe.seed + 1_000 * self.start_epoch + self.env.rank)
        log.info("resumed from %s at epoch %d (step %d)", path, self.start_epoch, self.global_step)

    # -- training ---------------------------------------------------------------------------------

    def _reduce(self, sums: torch.Tensor) -> dict[str, float]:
        total = dist.all_reduce_sum(self.env, sums.clone()).tolist()
        loss, ce, distill, correct, n, skipped = total
        denom = max(n, 1.0)
        return {
            "loss": loss / denom,
            "ce": ce / denom,
            "distill": distill / denom,
            "train_acc": correct / denom,
            "clips": int(n),
            "skipped": int(skipped),
        }

    def train_epoch(self, epoch: int) -> dict:
        """One epoch of optimizer steps; returns its metrics (summed over processes)."""
        r, env = self.recipe, self.env
        amp = AMP_DTYPES[r.precision]
        self.sampler.set_epoch(epoch)
        steps = self.sampler.steps_per_epoch
        batches = iter(self.loader)
        epoch_sums = torch.zeros(6, dtype=torch.float64, device=self.device)
        window = torch.zeros_like(epoch_sums)
        errors: list[str] = []
        bar = progress_bar(steps, bool(self.progress), f"epoch {epoch + 1}/{r.epochs}", "step")
        t0 = time.perf_counter()
        lr = 0.0
        for step in range(steps):
            lr = self.schedule(epoch + step / steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            for micro in range(r.grad_accum):
                batch = next(batches)
                errors.extend(batch["errors"])
                clips = batch["clips"].to(self.device, non_blocking=True)
                labels = batch["labels"].to(self.device, non_blocking=True)
                valid = batch["valid"].to(self.device, non_blocking=True)
                last = micro == r.grad_accum - 1
                sync = contextlib.nullcontext() if last or not env.distributed else self.step_module.no_sync()
                with sync:
                    with self._autocast(amp):
                        out = self.step_module(clips, labels, valid)
                    self.scaler.scale(out["loss"] / r.grad_accum).backward()
                n = valid.sum().double()
                correct = ((out["logits"].argmax(-1) == labels) & valid).sum().double()
                losses = [out[k].detach().double() * n for k in ("loss", "ce", "distill")]
                window += torch.stack([*losses, correct, n, (~valid).sum().double()])
            if r.clip_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, r.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            if (step + 1) % r.log_every == 0 or step == steps - 1:
                epoch_sums += window
                entry = {"epoch": epoch + 1, "step": step + 1, "global_step": self.global_step, "lr": lr}
                entry.update(self._reduce(window))
                self.steps.append(entry)
                self._log_line(entry)
                window.zero_()
            bar.update(1)
        bar.close()
        metrics = {"epoch": epoch + 1, "lr": lr, "seconds": time.perf_counter() - t0}
        metrics.update(self._reduce(epoch_sums))
        all_errors = [e for part in dist.all_gather_objects(env, errors) for e in part]
        if all_errors and env.is_main:
            log.warning("epoch %d: skipped %d unreadable clip(s), e.g. %s", epoch + 1, len(all_errors), all_errors[0])
        metrics["skipped_videos"] = sorted(set(all_errors))[:20]
        return metrics

    def _autocast(self, amp: torch.dtype | None) -> contextlib.AbstractContextManager:
        if amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=amp)

    def _log_line(self, entry: dict) -> None:
        if self.env.is_main:
            with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def fit(self) -> TrainResult:
        """Train from ``start_epoch`` to ``recipe.epochs``, checkpointing; then average if configured."""
        r = self.recipe
        result = TrainResult(self.out, history=self.history, steps=self.steps)
        for epoch in range(self.start_epoch, r.epochs):
            metrics = self.train_epoch(epoch)
            self.history.append(metrics)
            (log.info if self.env.is_main else log.debug)(
                "epoch %d/%d: loss %.4f (ce %.4f, distill %.4f), train acc %.3f, %d clips, %d skipped, %.1fs",
                epoch + 1,
                r.epochs,
                metrics["loss"],
                metrics["ce"],
                metrics["distill"],
                metrics["train_acc"],
                metrics["clips"],
                metrics["skipped"],
                metrics["seconds"],
            )
            if (epoch + 1) % r.checkpoint_period == 0 or epoch + 1 == r.epochs:
                result.checkpoints.append(self.save_checkpoint(epoch + 1))
        if r.average != "none":
            result.average = self._average()
        return result

    def _average(self) -> Path | None:
        r = self.recipe
        path = None
        if self.env.is_main:
            init = r.pretrained if r.average_start == 0 else None
            try:
                path = export_average(
                    self.out, None, r.average, r.average_start, r.average_end, r.gwa_mu, r.gwa_sigma, init=init
                )
                log.info("weight average (%s) written to %s", r.average, path)
            except CheckpointError as e:
                log.warning("no weight average written: %s", e)
        dist.barrier(self.env)
        return path


def claim_run_folder(out: Path, resume: str | Path | None, overwrite: bool, remove: bool = True) -> None:
    """A run folder that already holds a run is resumed or overwritten only when asked; never silently restarted.

    ``overwrite`` (with ``remove``) deletes the files a run writes (epoch checkpoints, the log, weight
    averages) first.
    """
    if resume is not None or not out.is_dir():
        return
    checkpoints = epoch_checkpoints(out)
    log_file = out / "train_log.jsonl"
    if not checkpoints and not log_file.exists():
        return
    if not overwrite:
        raise ConfigError(
            f"{out} already holds a run ({len(checkpoints)} epoch checkpoint(s), train_log.jsonl: "
            f"{log_file.exists()}); pass --resume auto to continue it, --overwrite to start over in it, or choose "
            "another output_dir="
        )
    if remove:
        averages = [*out.glob("swa_*.safetensors"), *out.glob("gwa_*.safetensors")]
        for path in [*checkpoints.values(), log_file, *averages]:
            path.unlink(missing_ok=True)


def finetune(
    recipe: Recipe, resume: str | Path | None = None, progress: bool = False, overwrite: bool = False
) -> TrainResult:
    """Run ``recipe`` (in every process under torchrun). ``resume``: a training checkpoint path, or
    ``"auto"`` for the latest one in ``recipe.output_dir`` (starting fresh when there is none).
    ``overwrite``: start over in an ``output_dir`` that holds a run (otherwise that is a ConfigError)."""
    env = dist.init_distributed(recipe.device)
    try:
        return Trainer(recipe, env, resume, progress, overwrite).fit()
    finally:
        dist.shutdown(env)
