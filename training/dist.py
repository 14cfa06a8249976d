"""torch.distributed set-up for torchrun (ARCHITECTURE §4.9): gloo on CPU, NCCL on CUDA.

Launched by ``torchrun --nproc-per-node N -m stdd_fast.training.train ...``, each process reads
RANK / WORLD_SIZE / LOCAL_RANK from the environment; a plain ``python -m`` run is world size 1 and
initialises nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist

from stdd_fast.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the run: rank, world size, local rank, its device, and whether we own the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(device: str | torch.device | None, local_rank: int, world_size: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={str(device)!r} but CUDA is not available here; use device='cpu'")
        if dev.index is None:  # one GPU per process under torchrun
            dev = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise ConfigError(f"device={str(device)!r}: only 'cpu' and 'cuda' are supported")
    return dev


def init_distributed(device: str | torch.device | None = None) -> DistEnv:
    """Join the torchrun process group if there is one (gloo for CPU, NCCL for CUDA) and pick the device.

    ``device``: None = CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU.
    A process group that already exists (the caller's own launcher) is used as is, and left alone
    by :func:`shutdown`: to run several commands in one torchrun process, create the group once
    yourself (re-creating it in the same processes races on torchrun's rendezvous keys).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if tdist.is_available() and tdist.is_initialized():
        world_size, rank = tdist.get_world_size(), tdist.get_rank()
        return DistEnv(rank, world_size, local_rank, _pick_device(device, local_rank, world_size), False)
    dev = _pick_device(device, local_rank, world_size)
    if world_size == 1:
        return DistEnv(0, 1, 0, dev, False)
    if not tdist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run with a single process")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    tdist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
    return DistEnv(rank, world_size, local_rank, dev, True)


def shutdown(env: DistEnv) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if env.owns_group and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        tdist.barrier()


def all_reduce_sum(env: DistEnv, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (a no-op for one process)."""
    if env.distributed:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor


def all_gather_objects(env: DistEnv, obj: object) -> list[object]:
    """Every process's ``obj`` (picklable), in rank order."""
    if not env.distributed:
        return [obj]
    out: list[object] = [None] * env.world_size
    tdist.all_gather_object(out, obj)
    return out
