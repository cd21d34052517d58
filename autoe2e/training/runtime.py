"""Pieces shared by training and evaluation: dataset construction and precision choice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: (manifest_uri, episodes or None for all, load_world_model_frames) -> dataset with
#: `.episode_ids()` and `.cameras`; the default is autoe2e.data.dataset.ShardDataset.
DatasetFactory = Callable[[str, list[str] | None, bool], Any]


def shard_dataset_factory(manifest_uri: str, episodes: list[str] | None, frames: bool) -> Any:
    from autoe2e.data.dataset import ShardDataset

    return ShardDataset(manifest_uri, episodes=episodes, load_world_model_frames=frames)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None = plain fp32. bf16 needs no loss scaling (its exponent range equals fp32's)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None
