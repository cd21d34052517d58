"""Read one shard pair (or some of its row groups) from storage, verified against the manifest,
and turn its rows into training samples.

Both loaders use it: the map-style `ShardDataset` (evaluation, sequential reads) and the
streaming `StreamingDataset` (training). Whole files are checked against the manifest's sha256;
a subset of row groups is fetched with ranged reads and each fetched range (row groups and the
Parquet footer) is checked against the per-row-group sha256 the manifest records, so a split
shard is as trustworthy as a whole one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchvision.io import ImageReadMode
from torchvision.io import decode_jpeg as _decode_jpeg

from autoe2e import storage
from autoe2e.data.map_raster import decode_png
from autoe2e.data.schema import EGO_HISTORY_FEATURES, TRAJECTORY_FEATURES
from autoe2e.data.shards import read_parquet_bytes


class ShardIntegrityError(ValueError):
    """A shard's bytes differ from what the manifest recorded."""


def _fixed(column: pa.ChunkedArray, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    values = pc.list_flatten(column.combine_chunks()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=dtype).reshape((len(column), *shape))


def _ragged(column: pa.ChunkedArray, steps: int, dtype: Any) -> list[np.ndarray]:
    """Per-row [steps, V] arrays (V may differ between episodes)."""
    return [np.asarray(row, dtype=dtype).reshape(steps, -1) for row in column.to_pylist()]


def decode_jpegs(blobs: list[bytes]) -> list[torch.Tensor]:
    """JPEG bytes -> [3, H, W] uint8 tensors (channel-first, as the model consumes them).

    torchvision's libjpeg-turbo decoder, one call for the whole list. On the stored 112x64
    frames it gives Pillow's pixels exactly (3,000 frames compared) in about half the time per
    frame (0.077 vs 0.149 ms), because Pillow parses every JPEG header in Python; at 36 frames
    per world-model sample the loader decodes ~1,150 per batch of 32.
    """
    if not blobs:
        return []
    data = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
    return _decode_jpeg(data, mode=ImageReadMode.RGB)


@dataclass
class LoadedShard:
    """Columns of (part of) one shard pair as numpy arrays for fast row access."""

    episode_id: np.ndarray
    timestamp_s: np.ndarray
    cameras: list[list[str]]
    current_ids: list[np.ndarray]
    history_ids: list[np.ndarray]
    history_valid: np.ndarray
    future_ids: list[np.ndarray]
    future_valid: np.ndarray
    ego_history: np.ndarray
    ego_history_valid: np.ndarray
    future_trajectory: np.ndarray
    trajectory_valid: np.ndarray
    map_png: pa.BinaryArray
    map_valid: np.ndarray
    frame_row: dict[int, int]
    jpeg: pa.BinaryArray
    image_size: tuple[int, int]
    map_channels: int
    #: Decoded frames filled on first use ([N, 3, H, W] uint8), or None when they would not
    #: fit the decode budget. Each frame is referenced by up to ~9 samples (current views, 4
    #: history and 4 future 1 Hz steps), so it is decoded once instead of per reference
    #: (benchmarks/dataset_read.py measures the difference).
    decoded: np.ndarray | None = None
    is_decoded: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return len(self.episode_id)

    def _frames(self, rows: list[int]) -> list[np.ndarray]:
        """Decoded frames of these rows; with the cache, each frame is decoded once."""
        cached = self.decoded is not None and self.is_decoded is not None
        missing = sorted({r for r in rows if not (cached and self.is_decoded[r])})
        blobs = [self.jpeg[r].as_py() for r in missing]
        fresh = dict(zip(missing, decode_jpegs(blobs), strict=True))
        if not cached:
            return [fresh[r].numpy() for r in rows]
        for r, image in fresh.items():
            self.decoded[r] = image.numpy()
            self.is_decoded[r] = True
        return [self.decoded[r] for r in rows]

    def _images(self, ids: np.ndarray) -> torch.Tensor:
        """uint8 [..., 3, H, W] (0..255) for frame ids of any shape (-1 -> zeros); the model
        converts to float on its device."""
        height, width = self.image_size
        out = np.zeros((*ids.shape, 3, height, width), dtype=np.uint8)
        wanted = [(pos, self.frame_row[int(i)]) for pos, i in np.ndenumerate(ids) if i >= 0]
        for (pos, _), frame in zip(wanted, self._frames([row for _, row in wanted]), strict=True):
            out[pos] = frame
        return torch.from_numpy(out)

    def item(self, row: int, vocabulary: list[str], world_model_frames: bool) -> dict[str, Any]:
        """Keys: images [V,3,H,W], camera_index [V], history_images [H,V,3,H,W],
        history_valid [H], future_images [F,V,3,H,W], future_valid [F], map_raster [C,R,R],
        map_valid (), ego_history [E,4], ego_history_valid [E], future_trajectory [T,2],
        trajectory_valid [T], episode_id, timestamp_s."""
        cameras = self.cameras[row]
        try:
            camera_index = [vocabulary.index(c) for c in cameras]
        except ValueError as exc:
            raise KeyError(f"sample camera list {cameras} not in vocabulary {vocabulary}") from exc
        item: dict[str, Any] = {
            "images": self._images(self.current_ids[row][0]),
            "camera_index": torch.tensor(camera_index, dtype=torch.int64),
        }
        if world_model_frames:
            item["history_images"] = self._images(self.history_ids[row])
            item["future_images"] = self._images(self.future_ids[row])
        else:
            item["history_images"] = torch.zeros(0)
            item["future_images"] = torch.zeros(0)
        raster = decode_png(self.map_png[row].as_py(), self.map_channels)
        item.update(
            history_valid=torch.from_numpy(self.history_valid[row].copy()),
            future_valid=torch.from_numpy(self.future_valid[row].copy()),
            map_raster=torch.from_numpy(raster.astype(np.float32) / 255.0),
            map_valid=torch.tensor(float(self.map_valid[row]), dtype=torch.float32),
            ego_history=torch.from_numpy(self.ego_history[row].copy()),
            ego_history_valid=torch.from_numpy(self.ego_history_valid[row].copy()),
            future_trajectory=torch.from_numpy(self.future_trajectory[row].copy()),
            trajectory_valid=torch.from_numpy(self.trajectory_valid[row].copy()),
            episode_id=str(self.episode_id[row]),
            timestamp_s=float(self.timestamp_s[row]),
        )
        return item


class ShardReader:
    """Reads the shards one manifest lists (relative paths resolve against its folder)."""

    def __init__(self, manifest: dict[str, Any], root: str, decoded_cache_bytes: int) -> None:
        self.manifest = manifest
        self.root = root
        self.decoded_cache_bytes = decoded_cache_bytes
        dims = manifest["dims"]
        self.dims = (dims["H"], dims["F"], dims["E"], dims["T"])
        self.map_channels = int(dims["C"])
        self.image_size = (int(manifest["image_size"][0]), int(manifest["image_size"][1]))

    def can_split(self, s: int) -> bool:
        """Whether the manifest records row-group hashes for shard `s` (prepared since they
        were added); older manifests are read whole."""
        info = self.manifest["shards"][s]
        return "parts" in info and "frames_parts" in info

    def _whole(self, rel_path: str, sha256: str) -> pa.Table:
        uri = storage.join_uri(self.root, rel_path)
        data = storage.read_bytes(uri)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ShardIntegrityError(
                f"{uri}: sha256 {actual} does not match the manifest ({sha256}); the shard was "
                "modified or partially copied, re-run `autoe2e prepare` into a new location"
            )
        return read_parquet_bytes(data)

    def _groups(self, rel_path: str, parts: dict[str, Any], groups: list[int]) -> pa.Table:
        """Only row groups `groups` of one file: ranged reads of them and of the footer, each
        verified; the rest of the file stays unread (zeros in a sparse buffer)."""
        uri = storage.join_uri(self.root, rel_path)
        footer = parts["footer"]
        size = int(footer["offset"]) + int(footer["length"])
        buffer = bytearray(size)  # calloc'd: untouched pages cost no memory
        for entry in [footer, *(parts["row_groups"][g] for g in groups)]:
            offset, length = int(entry["offset"]), int(entry["length"])
            data = storage.read_range(uri, offset, length)
            actual = hashlib.sha256(data).hexdigest()
            if actual != entry["sha256"]:
                raise ShardIntegrityError(
                    f"{uri}: bytes {offset}..{offset + length} have sha256 {actual}, the "
                    f"manifest says {entry['sha256']}; the shard was modified or partially "
                    "copied, re-run `autoe2e prepare` into a new location"
                )
            buffer[offset : offset + length] = data
        parquet = pq.ParquetFile(pa.BufferReader(pa.py_buffer(buffer)))
        return parquet.read_row_groups(groups)

    def load(self, s: int, row_groups: list[int] | None = None) -> LoadedShard:
        """Shard `s` whole (row_groups None) or only those row groups of its samples file,
        with the frames row groups that hold the frames they reference."""
        info = self.manifest["shards"][s]
        if row_groups is None:
            samples = self._whole(info["path"], info["sha256"])
            frames = self._whole(info["frames_path"], info["frames_sha256"])
        else:
            samples = self._groups(info["path"], info["parts"], row_groups)
            frames = self._groups(
                info["frames_path"],
                info["frames_parts"],
                self._frame_groups(samples, info["frames_parts"]),
            )
        return self._to_loaded(samples, frames)

    @staticmethod
    def _frame_groups(samples: pa.Table, frames_parts: dict[str, Any]) -> list[int]:
        ids = np.concatenate(
            [
                pc.list_flatten(samples.column(name).combine_chunks()).to_numpy()
                for name in ("current_frame_ids", "history_frame_ids", "future_frame_ids")
            ]
        )
        ids = np.unique(ids[ids >= 0])
        out = []
        for g, entry in enumerate(frames_parts["row_groups"]):
            low, high = entry["ids"]
            if np.any((ids >= low) & (ids <= high)):
                out.append(g)
        return out

    def _to_loaded(self, samples: pa.Table, frames: pa.Table) -> LoadedShard:
        h, f, e, t = self.dims
        loaded = LoadedShard(
            episode_id=np.asarray(samples.column("episode_id").to_pylist(), dtype=object),
            timestamp_s=samples.column("timestamp_s").to_numpy(),
            cameras=samples.column("cameras").to_pylist(),
            current_ids=_ragged(samples.column("current_frame_ids"), 1, np.int64),
            history_ids=_ragged(samples.column("history_frame_ids"), h, np.int64),
            history_valid=_fixed(samples.column("history_valid"), (h,), bool),
            future_ids=_ragged(samples.column("future_frame_ids"), f, np.int64),
            future_valid=_fixed(samples.column("future_valid"), (f,), bool),
            ego_history=_fixed(
                samples.column("ego_history"), (e, len(EGO_HISTORY_FEATURES)), np.float32
            ),
            ego_history_valid=_fixed(samples.column("ego_history_valid"), (e,), bool),
            future_trajectory=_fixed(
                samples.column("future_trajectory"), (t, len(TRAJECTORY_FEATURES)), np.float32
            ),
            trajectory_valid=_fixed(samples.column("trajectory_valid"), (t,), bool),
            map_png=samples.column("map_raster_png").combine_chunks(),
            map_valid=samples.column("map_valid").to_numpy(zero_copy_only=False),
            frame_row={int(i): r for r, i in enumerate(frames.column("frame_id").to_numpy())},
            jpeg=frames.column("jpeg").combine_chunks(),
            image_size=self.image_size,
            map_channels=self.map_channels,
        )
        height, width = self.image_size
        if frames.num_rows * height * width * 3 <= self.decoded_cache_bytes:
            loaded.decoded = np.empty((frames.num_rows, 3, height, width), dtype=np.uint8)
            loaded.is_decoded = np.zeros(frames.num_rows, dtype=bool)
        return loaded
