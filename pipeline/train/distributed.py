"""DistributedDataParallel set-up and teardown for the training loop, whatever the method.

``torchrun --nproc_per_node=N stages/train.py`` starts N processes; each joins the process
group that the environment describes (nccl on GPUs, gloo on CPUs). Without ``torchrun``
(``WORLD_SIZE`` unset or 1) there is no process group and every helper here is a no-op,
so single-process code needs no branches. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.devices import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank and world size of the current process group (1 process when none)."""
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), world, local)
    return DistInfo()


def init_distributed_from_env(device_name: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1), else none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist_info()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, "train.device", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    info = dist_info()
    log.info("DDP: rank %d of %d (%s)", info.rank, info.world_size, dist.get_backend())
    return info


def teardown(info: DistInfo) -> None:
    """Wait for every process, then leave the process group (no-op with one process)."""
    if info.enabled:
        dist.barrier()
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """A seed of its own for each process (dropout etc. differ per process)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def wrap(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several processes, else itself."""
    if not info.enabled:
        return model
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def all_reduce(info: DistInfo, *tensors: torch.Tensor) -> None:
    """Sum each tensor over the processes, in place."""
    if info.enabled:
        for t in tensors:
            dist.all_reduce(t)


def all_gather_object(info: DistInfo, obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` with one process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
