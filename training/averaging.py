"""Weight averaging over epoch checkpoints (STDD-SPEC §3.8), exported as a checkpoint ``load_model`` reads.

Epoch checkpoints are identified as released: the file of 0-based epoch e has id e+1
(``checkpoint_epoch_000XX.pt``); id 0 is the initial weights (the pretrained CLIP), included only
when given as ``init``. Only the CLIP weights are averaged (the projector and optimizer state are
dropped, as the released tool keeps only ``model.*``).

* ``"swa"``: the element-wise arithmetic mean of ids ``start..end`` (released: 2..22).
* ``"gwa"``: weights ``exp(-(id - mu)^2 / (2 sigma^2))`` over the same ids, normalised (released
  mu 15, sigma 10; with start 0 it includes the initial CLIP).

Sums run in float64 and are cast back to each tensor's dtype.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

import torch

from stdd_fast.checkpoints import read_state_dict, save_checkpoint
from stdd_fast.config import ArchConfig, STCAConfig
from stdd_fast.errors import CheckpointError, ConfigError, choice_error
from stdd_fast.model import STDDModel

Method = Literal["swa", "gwa"]
METHODS: tuple[str, ...] = get_args(Method)
CHECKPOINT_PATTERN = re.compile(r"checkpoint_epoch_(\d+)\.pt$")


def checkpoint_name(epoch_id: int) -> str:
    """File name of the checkpoint with id ``epoch_id`` (= completed epochs), as released."""
    return f"checkpoint_epoch_{epoch_id:05d}.pt"


def epoch_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """The epoch checkpoints of a run directory, by id (1-based epoch)."""
    found = {}
    for p in Path(run_dir).glob("checkpoint_epoch_*.pt"):
        m = CHECKPOINT_PATTERN.search(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def gaussian_weights(ids: Sequence[int], mu: float = 15.0, sigma: float = 10.0) -> list[float]:
    """Normalised Gaussian weights of the checkpoint ids (released ``gwa``)."""
    raw = [math.exp(-((i - mu) ** 2) / (2 * sigma**2)) for i in ids]
    total = sum(raw)
    return [r / total for r in raw]


def average_state_dicts(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """Weighted element-wise average of state dicts with identical keys and shapes (uniform by default)."""
    if not states:
        raise ConfigError("nothing to average: no state dicts given")
    weights = list(weights) if weights is not None else [1.0 / len(states)] * len(states)
    if len(weights) != len(states) or not math.isclose(sum(weights), 1.0, rel_tol=1e-9):
        raise ConfigError(f"averaging weights must be one per checkpoint and sum to 1; got {weights}")
    keys = list(states[0])
    out = {}
    for k in keys:
        ref = states[0][k]
        if not ref.is_floating_point():
            out[k] = states[-1][k].clone()  # integer buffers are not averaged
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for s, w in zip(states, weights, strict=True):
            acc += w * s[k].double()
        out[k] = acc.to(ref.dtype)
    return out


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    state, info = read_state_dict(path)
    return state, {"arch": info.arch, "stca": info.stca}


def average_checkpoints(
    checkpoints: Mapping[int, str | Path],
    method: str = "swa",
    start: int = 2,
    end: int | None = None,
    mu: float = 15.0,
    sigma: float = 10.0,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Average the checkpoints whose id lies in [start, end] (None: the last id).

    Returns (state dict, meta) with meta ``{"method", "ids", "weights", "arch", "stca"}`` (arch and
    STCA settings from the first of our checkpoints that records them).
    """
    if method not in METHODS:
        raise choice_error("averaging method", method, METHODS)
    if not checkpoints:
        raise CheckpointError("no epoch checkpoints to average")
    end = max(checkpoints) if end is None else end
    ids = [i for i in sorted(checkpoints) if start <= i <= end]
    if not ids:
        raise CheckpointError(
            f"no checkpoint ids in [{start}, {end}] (have {sorted(checkpoints)}); adjust the averaged range"
        )
    weights = [1.0 / len(ids)] * len(ids) if method == "swa" else gaussian_weights(ids, mu, sigma)
    states, meta = [], {"arch": None, "stca": None}
    for i in ids:
        state, info = _read(Path(checkpoints[i]))
        states.append(state)
        for key in ("arch", "stca"):
            if meta[key] is None and info[key] is not None:
                meta[key] = info[key]
    shapes = {k: v.shape for k, v in states[0].items()}
    for i, s in zip(ids, states, strict=True):
        if {k: v.shape for k, v in s.items()} != shapes:
            raise CheckpointError(f"checkpoint id {i} ({checkpoints[i]}) does not match the others' keys or shapes")
    meta.update(method=method, ids=ids, weights=weights)
    return average_state_dicts(states, weights), meta


def export_average(
    run_dir: str | Path,
    out: str | Path | None = None,
    method: str = "swa",
    start: int = 2,
    end: int | None = None,
    mu: float = 15.0,
    sigma: float = 10.0,
    init: str | Path | None = None,
) -> Path:
    """Average a run's epoch checkpoints and save the result as stdd_fast safetensors.

    ``init``: the initial weights, included as id 0 when ``start`` is 0. ``out``: default
    ``<run_dir>/{method}_{start}_{end}.safetensors``. The file loads with :func:`stdd_fast.load_model`.
    """
    checkpoints: dict[int, str | Path] = dict(epoch_checkpoints(run_dir))
    if init is not None:
        checkpoints[0] = init
    state, meta = average_checkpoints(checkpoints, method, start, end, mu, sigma)
    if meta["arch"] is None:
        from stdd_fast.checkpoints import detect_arch

        arch = detect_arch(state, str(run_dir))
    else:
        arch = ArchConfig.from_dict(meta["arch"])
    stca = STCAConfig(**meta["stca"]) if meta["stca"] else STCAConfig()
    with torch.random.fork_rng(devices=[]):  # building the model draws an init we overwrite at once
        model = STDDModel(arch, stca)
    model.load_state_dict(state, strict=True)
    out = Path(out) if out is not None else Path(run_dir) / f"{method}_{meta['ids'][0]}_{meta['ids'][-1]}.safetensors"
    return save_checkpoint(model, out)
