"""The training sampler: an epoch's order is a pure function of (seed, epoch), so a resumed run
continues exactly where the interrupted one stopped.

torch's own shuffling draws from one generator that lives across epochs (and DistributedSampler
cannot start mid-epoch); here each epoch permutes with a generator seeded from (seed, epoch),
each rank takes every world_size-th index (padded by re-serving the first ones, as
DistributedSampler does, so every rank has the same number of batches), and `set_epoch(epoch,
skip)` drops the samples a checkpoint says were already consumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    def __init__(
        self, num_samples: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        if num_samples < 1:
            raise ValueError("EpochSampler needs at least one sample")
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.rank, self.world_size = rank, world_size
        #: indices per rank and epoch (the padded share)
        self.per_rank = math.ceil(num_samples / world_size)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Iterate epoch `epoch`, leaving out this rank's first `skip` indices."""
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> list[int]:
        """This rank's full index order for `epoch`."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            indices = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            indices = list(range(self.num_samples))
        padded = self.per_rank * self.world_size
        indices += indices[: padded - len(indices)]
        return indices[self.rank : padded : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip
