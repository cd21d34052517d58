"""Optional multi-process (DDP) setup from the torchrun environment.

`WORLD_SIZE > 1` (set by torchrun) initialises a process group (NCCL on CUDA, Gloo on CPU);
otherwise training runs as a single process and none of this costs anything.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup() -> DistInfo:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        logger.info("DDP rank %d/%d on %s", rank, world_size, device)
    return DistInfo(rank, world_size, local_rank, device)


def broadcast(value: object, info: DistInfo) -> object:
    """Rank 0's `value` on every rank (as is without a process group)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(value: object, info: DistInfo) -> list[object]:
    """Every rank's `value`, in rank order ([value] without a process group)."""
    if not info.enabled:
        return [value]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, value)
    return out


def check_in_sync(params: list[torch.Tensor], info: DistInfo, step: int) -> float:
    """The spread of a parameter checksum across ranks (0.0 when in sync); raises when DDP
    replicas diverged, which would otherwise train on silently."""
    if not info.enabled:
        return 0.0
    checksum = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(info.world_size)]
    dist.all_gather(gathered, checksum.to(info.device) if info.device.type == "cuda" else checksum)
    values = [float(g) for g in gathered]
    spread = max(values) - min(values)
    if spread != 0.0:
        raise RuntimeError(
            f"DDP replicas diverged at step {step}: parameter checksums per rank {values}"
        )
    return spread


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
