"""Map-style torch Dataset over a published manifest.

Readers trust only the manifest: the sample index is built from its per-episode counts (no shard
is opened at construction), and every shard file is checked against the manifest's sha256 when
it is loaded, so a tampered or half-copied shard fails loudly instead of training on garbage.
Shards are loaded lazily per process (DataLoader workers each open their own storage client)
and a few are kept in a small LRU cache; windows are assembled from the shared frame table.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from autoe2e import storage
from autoe2e.data import manifest as mf
from autoe2e.data.map_raster import decode_png
from autoe2e.data.schema import EGO_HISTORY_FEATURES, TRAJECTORY_FEATURES
from autoe2e.data.shards import read_parquet_bytes

logger = logging.getLogger(__name__)


class ShardIntegrityError(ValueError):
    """A shard's bytes differ from what the manifest recorded."""


@dataclass
class _LoadedShard:
    """Columns of one shard pair as numpy arrays for fast row access."""

    episode_id: np.ndarray
    timestamp_s: np.ndarray
    cameras: list[list[str]]
    current_ids: list[np.ndarray]
    history_ids: list[np.ndarray]
    history_valid: list[np.ndarray]
    future_ids: list[np.ndarray]
    future_valid: list[np.ndarray]
    ego_history: np.ndarray
    ego_history_valid: np.ndarray
    future_trajectory: np.ndarray
    trajectory_valid: np.ndarray
    map_png: pa.BinaryArray
    map_valid: np.ndarray
    frame_row: dict[int, int]
    jpeg: pa.BinaryArray
    #: Decoded frames filled on first use ([N, 3, H, W] uint8), or None when the shard's decoded
    #: size exceeds the cache budget. Each frame is referenced by up to ~9 windows (current
    #: views, 4 history and 4 future 1 Hz steps), so it is decoded once instead of per reference
    #: (benchmarks/dataset_read.py measures the difference).
    decoded: np.ndarray | None = None
    is_decoded: np.ndarray | None = None


def _fixed(column: pa.ChunkedArray, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    values = pc.list_flatten(column.combine_chunks()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=dtype).reshape((len(column), *shape))


def _ragged(column: pa.ChunkedArray, steps: int, dtype: Any) -> list[np.ndarray]:
    """Per-row [steps, V] arrays (V may differ between episodes)."""
    return [np.asarray(row, dtype=dtype).reshape(steps, -1) for row in column.to_pylist()]


def _decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> [3, H, W] uint8 (channel-first, as the model consumes it)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


class ShardDataset(torch.utils.data.Dataset):
    """One item per 10 Hz sample of the selected episodes (see `__getitem__` for keys)."""

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
        self.decoded_cache_bytes = decoded_cache_bytes
        self._root = storage.parent_uri(manifest_uri)
        dims = self.manifest["dims"]
        self._h, self._f, self._e, self._t = dims["H"], dims["F"], dims["E"], dims["T"]
        self._channels = dims["C"]
        self.image_size = tuple(self.manifest["image_size"])
        counts = {e["episode_id"]: int(e["num_samples"]) for e in self.manifest["episodes"]}
        if episodes is not None:
            unknown = sorted(set(episodes) - set(counts))
            if unknown:
                raise KeyError(
                    f"episodes {unknown} are not in {manifest_uri}; known: {sorted(counts)}"
                )
        wanted = set(counts) if episodes is None else set(episodes)
        # (shard index, row) per item, from manifest counts: shards hold whole episodes in order.
        index: list[tuple[int, int]] = []
        self._episode_ids: list[str] = []
        for s, shard in enumerate(self.manifest["shards"]):
            row = 0
            for episode_id in shard["episodes"]:
                n = counts[episode_id]
                if episode_id in wanted:
                    index.extend((s, r) for r in range(row, row + n))
                    self._episode_ids.append(episode_id)
                row += n
            if row != int(shard["num_rows"]):
                raise ValueError(
                    f"manifest {manifest_uri}: shard {shard['path']} lists {row} samples by "
                    f"episode but num_rows={shard['num_rows']}; re-run `autoe2e prepare`"
                )
        self._index = np.asarray(index, dtype=np.int64).reshape(-1, 2)
        self._cache: OrderedDict[int, _LoadedShard] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # workers load their own shards
        return state

    def episode_ids(self) -> list[str]:
        return list(self._episode_ids)

    def __len__(self) -> int:
        return len(self._index)

    def _read_verified(self, rel_path: str, sha256: str) -> bytes:
        uri = storage.join_uri(self._root, rel_path)
        data = storage.read_bytes(uri)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ShardIntegrityError(
                f"{uri}: sha256 {actual} does not match the manifest ({sha256}); the shard was "
                "modified or partially copied, re-run `autoe2e prepare` into a new location"
            )
        return data

    def _shard(self, s: int) -> _LoadedShard:
        if s in self._cache:
            self._cache.move_to_end(s)
            return self._cache[s]
        info = self.manifest["shards"][s]
        samples = read_parquet_bytes(self._read_verified(info["path"], info["sha256"]))
        frames = read_parquet_bytes(self._read_verified(info["frames_path"], info["frames_sha256"]))
        loaded = _LoadedShard(
            episode_id=np.asarray(samples.column("episode_id").to_pylist(), dtype=object),
            timestamp_s=samples.column("timestamp_s").to_numpy(),
            cameras=samples.column("cameras").to_pylist(),
            current_ids=_ragged(samples.column("current_frame_ids"), 1, np.int64),
            history_ids=_ragged(samples.column("history_frame_ids"), self._h, np.int64),
            history_valid=_fixed(samples.column("history_valid"), (self._h,), bool),
            future_ids=_ragged(samples.column("future_frame_ids"), self._f, np.int64),
            future_valid=_fixed(samples.column("future_valid"), (self._f,), bool),
            ego_history=_fixed(
                samples.column("ego_history"), (self._e, len(EGO_HISTORY_FEATURES)), np.float32
            ),
            ego_history_valid=_fixed(samples.column("ego_history_valid"), (self._e,), bool),
            future_trajectory=_fixed(
                samples.column("future_trajectory"), (self._t, len(TRAJECTORY_FEATURES)), np.float32
            ),
            trajectory_valid=_fixed(samples.column("trajectory_valid"), (self._t,), bool),
            map_png=samples.column("map_raster_png").combine_chunks(),
            map_valid=samples.column("map_valid").to_numpy(zero_copy_only=False),
            frame_row={int(f): i for i, f in enumerate(frames.column("frame_id").to_numpy())},
            jpeg=frames.column("jpeg").combine_chunks(),
        )
        height, width = self.image_size
        per_shard_budget = self.decoded_cache_bytes // self.max_cached_shards
        if frames.num_rows * height * width * 3 <= per_shard_budget:
            loaded.decoded = np.empty((frames.num_rows, 3, height, width), dtype=np.uint8)
            loaded.is_decoded = np.zeros(frames.num_rows, dtype=bool)
        self._cache[s] = loaded
        while len(self._cache) > self.max_cached_shards:
            self._cache.popitem(last=False)
        return loaded

    def _images(self, shard: _LoadedShard, ids: np.ndarray) -> torch.Tensor:
        """uint8 [..., 3, H, W] (0..255) for frame ids of any shape (-1 -> zeros); the model
        converts to float on its device."""
        height, width = self.image_size
        out = np.zeros((*ids.shape, 3, height, width), dtype=np.uint8)
        for pos, frame_id in np.ndenumerate(ids):
            if frame_id < 0:
                continue
            out[pos] = self._frame(shard, shard.frame_row[int(frame_id)])
        return torch.from_numpy(out)

    @staticmethod
    def _frame(shard: _LoadedShard, row: int) -> np.ndarray:
        if shard.decoded is None or shard.is_decoded is None:
            return _decode_jpeg(shard.jpeg[row].as_py())
        if not shard.is_decoded[row]:
            shard.decoded[row] = _decode_jpeg(shard.jpeg[row].as_py())
            shard.is_decoded[row] = True
        return shard.decoded[row]

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Keys: images [V,3,H,W], camera_index [V], history_images [H,V,3,H,W],
        history_valid [H], future_images [F,V,3,H,W], future_valid [F], map_raster [C,R,R],
        map_valid (), ego_history [E,4], ego_history_valid [E], future_trajectory [T,2],
        trajectory_valid [T], episode_id, timestamp_s."""
        if i < 0:
            i += len(self)
        s, row = (int(v) for v in self._index[i])
        shard = self._shard(s)
        cameras = shard.cameras[row]
        try:
            camera_index = [self.cameras.index(c) for c in cameras]
        except ValueError as exc:
            raise KeyError(
                f"sample camera list {cameras} not in vocabulary {self.cameras}"
            ) from exc
        item: dict[str, Any] = {
            "images": self._images(shard, shard.current_ids[row][0]),
            "camera_index": torch.tensor(camera_index, dtype=torch.int64),
        }
        if self.load_world_model_frames:
            item["history_images"] = self._images(shard, shard.history_ids[row])
            item["future_images"] = self._images(shard, shard.future_ids[row])
        else:
            item["history_images"] = torch.zeros(0)
            item["future_images"] = torch.zeros(0)
        raster = decode_png(shard.map_png[row].as_py(), self._channels)
        item.update(
            history_valid=torch.from_numpy(shard.history_valid[row].copy()),
            future_valid=torch.from_numpy(shard.future_valid[row].copy()),
            map_raster=torch.from_numpy(raster.astype(np.float32) / 255.0),
            map_valid=torch.tensor(float(shard.map_valid[row]), dtype=torch.float32),
            ego_history=torch.from_numpy(shard.ego_history[row].copy()),
            ego_history_valid=torch.from_numpy(shard.ego_history_valid[row].copy()),
            future_trajectory=torch.from_numpy(shard.future_trajectory[row].copy()),
            trajectory_valid=torch.from_numpy(shard.trajectory_valid[row].copy()),
            episode_id=str(shard.episode_id[row]),
            timestamp_s=float(shard.timestamp_s[row]),
        )
        return item
