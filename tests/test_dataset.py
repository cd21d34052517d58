"""ShardDataset over real prepared shards: shapes, values, integrity, workers and S3."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from episode_factory import CAMERA_COLOURS, moto_s3, upload_tree, write_episode
from PIL import Image

from autoe2e.config import PrepareConfig
from autoe2e.data.dataset import ShardDataset, ShardIntegrityError
from autoe2e.data.prepare import prepare_dataset
from autoe2e.data.shard_reader import decode_jpegs

CONFIG = PrepareConfig(
    image_width=32,
    image_height=24,
    history_offsets_s=[-2.0, -1.0, 0.0],
    future_offsets_s=[1.0, 2.0],
    ego_history_steps=8,
    trajectory_steps=10,
    map_raster_size=16,
    map_resolution_m=2.0,
)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("episodes")
    write_episode(root, "a", cameras=("front", "left"), duration_s=8.0, speed=5.0)
    write_episode(root, "b", cameras=("front", "left"), duration_s=8.0, with_map=False)
    out = tmp_path_factory.mktemp("dataset")
    prepare_dataset(str(root), str(out), CONFIG)
    return out


def test_item_shapes_dtypes_and_values(dataset_dir: Path) -> None:
    ds = ShardDataset(str(dataset_dir / "manifest.json"))
    assert ds.cameras == ["front", "left"] and ds.episode_ids() == ["a", "b"]
    assert len(ds) == ds.manifest["num_samples"] == 2 * (80 - 20 - 20)
    item = ds[3]
    expected = {
        "images": ((2, 3, 24, 32), torch.uint8),
        "camera_index": ((2,), torch.int64),
        "history_images": ((3, 2, 3, 24, 32), torch.uint8),
        "history_valid": ((3,), torch.bool),
        "future_images": ((2, 2, 3, 24, 32), torch.uint8),
        "future_valid": ((2,), torch.bool),
        "map_raster": ((3, 16, 16), torch.float32),
        "map_valid": ((), torch.float32),
        "ego_history": ((8, 4), torch.float32),
        "future_trajectory": ((10, 2), torch.float32),
        "trajectory_valid": ((10,), torch.bool),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(item[key].shape) == shape and item[key].dtype == dtype, key
    assert item["episode_id"] == "a" and item["timestamp_s"] == pytest.approx(2.3)
    assert item["camera_index"].tolist() == [0, 1]
    # Lower image half holds only the camera's solid colour (the moving square is on top).
    for view, camera in enumerate(ds.cameras):
        colour = item["images"][view, :, 14:].float().mean(dim=(1, 2)).numpy()
        np.testing.assert_allclose(colour, CAMERA_COLOURS[camera], atol=10)
    assert torch.equal(item["history_images"][-1], item["images"])  # offset 0 == current frame
    assert not torch.equal(item["future_images"][0], item["images"])  # the square moved
    np.testing.assert_allclose(item["future_trajectory"][:, 0], 0.5 * np.arange(1, 11), atol=1e-3)
    np.testing.assert_allclose(item["ego_history"][:, 0], 5.0, atol=1e-5)
    assert item["map_valid"] == 1.0 and item["map_raster"].max() == 1.0
    last = ds[len(ds) - 1]
    assert last["episode_id"] == "b" and last["map_valid"] == 0.0 and last["map_raster"].sum() == 0


def test_the_loaders_jpeg_decoder_gives_pillows_pixels(dataset_dir: Path) -> None:
    """The loader decodes with torchvision because it is faster (benchmarks/dataset_read.py);
    a sample must hold exactly the pixels Pillow would give, cached or decoded per use."""
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    blobs = []
    for shard in manifest["shards"]:
        blobs += pq.read_table(dataset_dir / shard["frames_path"])["jpeg"].to_pylist()
    assert len(blobs) > 100
    for blob, decoded in zip(blobs, decode_jpegs(blobs), strict=True):
        with Image.open(io.BytesIO(blob)) as image:
            pillow = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
        assert decoded.dtype == torch.uint8 and np.array_equal(decoded.numpy(), pillow)
    assert decode_jpegs([]) == []
    cached = ShardDataset(str(dataset_dir / "manifest.json"))
    uncached = ShardDataset(str(dataset_dir / "manifest.json"), decoded_cache_bytes=0)
    for index in (0, 7, len(cached) - 1):
        for key in ("images", "history_images", "future_images"):
            assert torch.equal(cached[index][key], uncached[index][key]), (index, key)


def test_episode_filter_and_no_world_model_frames(dataset_dir: Path) -> None:
    ds = ShardDataset(
        str(dataset_dir / "manifest.json"), episodes=["b"], load_world_model_frames=False
    )
    assert ds.episode_ids() == ["b"] and len(ds) == 40
    item = ds[0]
    assert item["episode_id"] == "b" and item["history_images"].numel() == 0
    assert item["future_images"].numel() == 0 and item["images"].shape == (2, 3, 24, 32)
    with pytest.raises(KeyError, match="zzz"):
        ShardDataset(str(dataset_dir / "manifest.json"), episodes=["zzz"])


def test_default_collate_with_a_worker(dataset_dir: Path) -> None:
    ds = ShardDataset(str(dataset_dir / "manifest.json"))
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=1, shuffle=True)
    batches = list(loader)
    assert sum(len(b["episode_id"]) for b in batches) == len(ds)
    assert batches[0]["history_images"].shape == (16, 3, 2, 3, 24, 32)
    assert batches[0]["timestamp_s"].dtype == torch.float64


def test_tampered_shard_is_detected(dataset_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(dataset_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    frames = copy / manifest["shards"][0]["frames_path"]
    data = bytearray(frames.read_bytes())
    data[len(data) // 2] ^= 0xFF
    frames.write_bytes(bytes(data))
    ds = ShardDataset(str(copy / "manifest.json"))  # construction trusts the manifest only
    with pytest.raises(ShardIntegrityError, match="frames.parquet: sha256"):
        ds[0]


def test_s3_prepare_and_read_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "episodes"
    write_episode(local, "s3ep", cameras=("front",), duration_s=6.0)
    with moto_s3(monkeypatch) as bucket:
        upload_tree(local, f"{bucket}/raw")
        result = prepare_dataset(f"{bucket}/raw", f"{bucket}/prepared/v1", CONFIG)
        assert result.published and result.num_samples == 60 - 20 - 20
        assert result.manifest_uri == f"{bucket}/prepared/v1/manifest.json"
        again = prepare_dataset(f"{bucket}/raw", f"{bucket}/prepared/v1", CONFIG)
        assert again.published is False
        ds = ShardDataset(result.manifest_uri)
        item = ds[0]
        assert item["images"].shape == (1, 3, 24, 32) and item["episode_id"] == "s3ep"
        np.testing.assert_allclose(
            item["images"][0, :, 14:].float().mean(dim=(1, 2)).numpy(),
            CAMERA_COLOURS["front"],
            atol=10,
        )
