"""The small stateful parts of a training run that are neither model nor optimizer nor loader.

Each follows torch's `Stateful` protocol (`state_dict()` / `load_state_dict()`), so the
checkpoint manager saves and restores every part of a run the same way.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from autoe2e.training import distributed


@dataclass
class Progress:
    """Where the run is: what a resumed run needs to continue the same schedule."""

    step: int = 0
    epoch: int = 0
    #: batches of `epoch` this rank's loader has delivered (the loader state holds the rest)
    epoch_batches: int = 0
    #: world_size x loader workers the epoch order was made for
    global_workers: int = 1
    #: training time already spent (the schedule's time-budget progress counts it)
    elapsed_s: float = 0.0
    skipped_steps: int = 0
    best_ade: float = float("inf")
    best_metrics: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        self.best_metrics = dict(self.best_metrics)


def _local_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(internal), gauss],
    }


def _set_local_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class RNGState:
    """Every RNG (torch, CUDA, numpy, python) of every rank.

    `state_dict()` gathers all ranks' states (a collective: every rank calls it, rank 0 writes
    them), and each rank restores its own, so a resumed multi-GPU run draws the same random
    numbers as an uninterrupted one on every rank, not just on rank 0.
    """

    def __init__(self, info: distributed.DistInfo) -> None:
        self.info = info

    def state_dict(self) -> dict[str, Any]:
        return {"ranks": distributed.all_gather_objects(_local_rng(), self.info)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranks = state["ranks"]
        if len(ranks) == self.info.world_size:
            _set_local_rng(ranks[self.info.rank])
        else:  # another world size: the ranks' streams cannot all continue; rank 0's is kept
            _set_local_rng(ranks[0])
