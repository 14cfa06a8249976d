"""Shared pieces of the training tests: a tiny seeded checkpoint, a synthetic dataset, a tiny recipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import randomize_

import stdd_fast
from stdd_fast.training.recipe import Recipe
from stdd_fast.training.synthetic import SyntheticDataset, write_synthetic_dataset

REPO = Path(__file__).resolve().parent.parent


def tiny_checkpoint(path: Path, seed: int = 1) -> Path:
    """A test-tiny model with randomised weights (every parameter non-trivial), as stdd_fast safetensors."""
    return stdd_fast.save_checkpoint(randomize_(stdd_fast.create_model("test-tiny"), seed=seed), path)


def tiny_dataset(root: Path, num_classes: int = 4, per_class: int = 2, broken: int = 0) -> SyntheticDataset:
    return write_synthetic_dataset(root, num_classes, per_class, num_frames=24, broken=broken)


def tiny_recipe(ds: SyntheticDataset, checkpoint: Path, output_dir: Path, **changes: object) -> Recipe:
    """A CPU recipe for test-tiny: 4 frames, fp32, no workers, lr 1e-3 (the released LR is far too small here)."""
    fields = {
        "pretrained": str(checkpoint),
        "train_csv": str(ds.csv),
        "prefix": str(ds.prefix),
        "classes": str(ds.classes),
        "num_frames": 4,
        "epochs": 6,
        "batch_size": 4,
        "base_lr": 1e-3,
        "warmup_start_lr": 1e-5,
        "end_lr": 1e-5,
        "warmup_epochs": 1.0,
        "precision": "fp32",
        "num_workers": 0,
        "output_dir": str(output_dir),
        "average_start": 1,
        "log_every": 1,
        "device": "cpu",
    }
    fields.update(changes)
    return Recipe.from_dict(fields)


def run_python(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``python args...`` in a clean single-threaded environment (OMP_NUM_THREADS=1), checked."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
