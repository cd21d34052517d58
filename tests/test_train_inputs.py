"""Bad input to training: each fails with an error naming the input and the fix, before the
first step where it can be known then, and never leaves a partial checkpoint behind."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from episode_factory import TINY_PREPARE, write_episode
from tiny_configs import shard_model_config

from autoe2e import storage
from autoe2e.config import ConfigError, TrainConfig
from autoe2e.data.manifest import ManifestError
from autoe2e.data.prepare import prepare_dataset
from autoe2e.data.shard_reader import ShardIntegrityError
from autoe2e.training import train

TRAIN = TrainConfig(epochs=1, batch_size=4, max_steps=3, checkpoint_every_steps=1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    for i in range(5):
        write_episode(root / "episodes", f"ep{i}", duration_s=5.0, heading=0.3 * i)
    config = dataclasses.replace(TINY_PREPARE, workers=1, shard_target_bytes=1 << 16)
    prepare_dataset(str(root / "episodes"), str(root / "data"), config)
    return root / "data"


@pytest.fixture
def copy(prepared, tmp_path) -> Path:
    shutil.copytree(prepared, tmp_path / "data")
    return tmp_path / "data"


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _no_partial_checkpoints(out: Path) -> None:
    for path in (out / "checkpoints").glob("*"):
        assert path.name.startswith("step-") and path.suffix == ".pt", path
        torch.load(io.BytesIO(path.read_bytes()), weights_only=True)  # complete


def test_missing_shard_names_the_file(copy, tmp_path) -> None:
    info = _manifest(copy)
    (copy / info["shards"][-1]["frames_path"]).unlink()
    out = tmp_path / "out"
    with pytest.raises(storage.StorageError, match="frames.parquet: file does not exist"):
        train(str(copy / "manifest.json"), str(out), shard_model_config(), TRAIN)
    _no_partial_checkpoints(out)


def test_tampered_shard_is_refused(copy, tmp_path) -> None:
    info = _manifest(copy)
    path = copy / info["shards"][0]["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(ShardIntegrityError, match="re-run `autoe2e prepare`"):
        train(str(copy / "manifest.json"), str(out), shard_model_config(), TRAIN)
    _no_partial_checkpoints(out)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("schema_version", "999", "schema_version '999', this code reads"),
        ("contract_version", "999", "contract version '999', this code reads"),
    ],
)
def test_unknown_versions_are_refused(copy, tmp_path, field, value, message) -> None:
    info = _manifest(copy)
    info[field] = value
    (copy / "manifest.json").write_text(json.dumps(info))
    with pytest.raises(ManifestError, match=message):
        train(str(copy / "manifest.json"), str(tmp_path / "out"), shard_model_config(), TRAIN)
    assert not (tmp_path / "out").exists()


def test_config_that_does_not_fit_the_shards_names_every_field(prepared, tmp_path) -> None:
    model = shard_model_config(image_width=64, history_len=4, trajectory_steps=30)
    with pytest.raises(ConfigError) as caught:
        train(str(prepared / "manifest.json"), str(tmp_path / "out"), model, TRAIN)
    text = str(caught.value)
    for expected in (
        "image_width=64 but the shards have 32",
        "history_len=4 but the shards have 2",
        "trajectory_steps=30 but the shards have 20",
    ):
        assert expected in text
    assert "--set" in text and not (tmp_path / "out").exists()


def test_unwritable_checkpoint_location_fails_before_training(prepared, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(storage.StorageError, match=str(blocker)):
        train(str(prepared / "manifest.json"), str(blocker / "out"), shard_model_config(), TRAIN)
