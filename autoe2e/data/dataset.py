"""Map-style torch Dataset over a published manifest (evaluation and tools; training streams).

Readers trust only the manifest: the sample index is built from its per-episode counts (no shard
is opened at construction), and every shard file is checked against the manifest's sha256 when
it is loaded, so a tampered or half-copied shard fails loudly instead of training on garbage.
Shards are loaded lazily per process (DataLoader workers each open their own storage client)
and a few are kept in a small LRU cache: read in index order, each shard is read once. Shuffled
access would re-read shards over and over; training uses `autoe2e.data.streaming` instead.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from autoe2e import storage
from autoe2e.data import manifest as mf
from autoe2e.data.shard_reader import LoadedShard, ShardIntegrityError, ShardReader

logger = logging.getLogger(__name__)

__all__ = ["ShardDataset", "ShardIntegrityError", "episode_rows"]


def episode_rows(manifest: dict[str, Any], manifest_uri: str) -> list[list[tuple[str, int, int]]]:
    """Per shard: (episode id, first row, end row) of each episode, from manifest counts
    (shards hold whole episodes in order); checked against each shard's num_rows."""
    counts = {e["episode_id"]: int(e["num_samples"]) for e in manifest["episodes"]}
    out = []
    for shard in manifest["shards"]:
        row, spans = 0, []
        for episode_id in shard["episodes"]:
            spans.append((episode_id, row, row + counts[episode_id]))
            row += counts[episode_id]
        if row != int(shard["num_rows"]):
            raise mf.ManifestError(
                f"manifest {manifest_uri}: shard {shard['path']} lists {row} samples by "
                f"episode but num_rows={shard['num_rows']}; re-run `autoe2e prepare`"
            )
        out.append(spans)
    return out


def check_episodes(manifest: dict[str, Any], manifest_uri: str, episodes: list[str]) -> None:
    known = {e["episode_id"] for e in manifest["episodes"]}
    unknown = sorted(set(episodes) - known)
    if unknown:
        raise KeyError(f"episodes {unknown} are not in {manifest_uri}; known: {sorted(known)}")


class ShardDataset(torch.utils.data.Dataset):
    """One item per 10 Hz sample of the selected episodes (keys: `LoadedShard.item`)."""

    def __init__(
        self,
        manifest_uri: str,
        episodes: list[str] | None = None,
        load_world_model_frames: bool = True,
        max_cached_shards: int = 4,
        decoded_cache_bytes: int = 2 << 30,
    ) -> None:
        self.manifest_uri = manifest_uri
        self.manifest: dict[str, Any] = mf.read_manifest(manifest_uri)
        self.cameras: list[str] = list(self.manifest["cameras"])
        self.load_world_model_frames = load_world_model_frames
        self.max_cached_shards = max(1, max_cached_shards)
        self.image_size = tuple(self.manifest["image_size"])
        self._reader = ShardReader(
            self.manifest,
            storage.parent_uri(manifest_uri),
            decoded_cache_bytes // self.max_cached_shards,
        )
        if episodes is not None:
            check_episodes(self.manifest, manifest_uri, episodes)
        wanted = None if episodes is None else set(episodes)
        # (shard index, row) per item, from manifest counts
        index: list[tuple[int, int]] = []
        self._episode_ids: list[str] = []
        for s, spans in enumerate(episode_rows(self.manifest, manifest_uri)):
            for episode_id, start, end in spans:
                if wanted is None or episode_id in wanted:
                    index.extend((s, r) for r in range(start, end))
                    self._episode_ids.append(episode_id)
        self._index = np.asarray(index, dtype=np.int64).reshape(-1, 2)
        self._cache: OrderedDict[int, LoadedShard] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # workers load their own shards
        return state

    def episode_ids(self) -> list[str]:
        return list(self._episode_ids)

    def __len__(self) -> int:
        return len(self._index)

    def _shard(self, s: int) -> LoadedShard:
        if s in self._cache:
            self._cache.move_to_end(s)
            return self._cache[s]
        loaded = self._reader.load(s)
        self._cache[s] = loaded
        while len(self._cache) > self.max_cached_shards:
            self._cache.popitem(last=False)
        return loaded

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        s, row = (int(v) for v in self._index[i])
        return self._shard(s).item(row, self.cameras, self.load_world_model_frames)
