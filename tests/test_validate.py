"""Shard validation: pandera (lazy) reports every failure at once, and ids agree with masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from episode_factory import TINY_PREPARE, write_episode

from autoe2e.data import manifest as mf
from autoe2e.data.episode import prepare_episode
from autoe2e.data.validate import ShardValidationError, validate_shard


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, pa.Table]:
    root = tmp_path_factory.mktemp("episodes")
    write_episode(root, "ep", duration_s=6.0)
    prepared = prepare_episode(str(root / "ep"), TINY_PREPARE)
    return prepared.frames, prepared.samples


def _replace(table: pa.Table, name: str, row: int, value) -> pa.Table:
    values = table.column(name).to_pylist()
    values[row] = value
    index = table.schema.get_field_index(name)
    return table.set_column(
        index, table.schema.field(index), pa.array(values, table.schema.field(index).type)
    )


def test_valid_shard_passes(tables) -> None:
    frames, samples = tables
    validate_shard(frames, samples, mf.dims(TINY_PREPARE), "ok")


def test_every_failure_is_reported_at_once(tables) -> None:
    frames, samples = tables
    bad = _replace(samples, "ego_history", 0, [0.0] * 3)  # wrong length
    bad = _replace(bad, "future_trajectory", 2, [0.0] * 5)  # wrong length
    bad = _replace(bad, "map_raster_png", 1, b"")  # empty image bytes
    bad_frames = _replace(frames, "jpeg", 0, b"")
    with pytest.raises(ShardValidationError) as info:
        validate_shard(bad_frames, bad, mf.dims(TINY_PREPARE), "bad-shard")
    message = str(info.value)
    assert "bad-shard" in message
    for column in (
        "samples.ego_history",
        "samples.future_trajectory",
        "samples.map_raster_png",
        "frames.jpeg",
    ):
        assert column in message, column


def test_frame_ids_must_agree_with_masks(tables) -> None:
    frames, samples = tables
    ids = samples.column("history_frame_ids").to_pylist()
    ids[0][0] = -1  # one view of a step says missing while history_valid says present
    bad = _replace(samples, "history_frame_ids", 0, ids[0])
    with pytest.raises(ShardValidationError, match="history_frame_ids: 1 steps disagree"):
        validate_shard(frames, bad, mf.dims(TINY_PREPARE), "mask")
    current = samples.column("current_frame_ids").to_pylist()[3]
    bad = _replace(samples, "current_frame_ids", 3, [-1] * len(current))
    with pytest.raises(ShardValidationError, match="current_frame_ids: 2 missing"):
        validate_shard(frames, bad, mf.dims(TINY_PREPARE), "current")


def test_reference_to_a_missing_frame_fails(tables) -> None:
    frames, samples = tables
    keep = np.asarray(frames.column("frame_id")) != 0
    with pytest.raises(ShardValidationError, match="ids not in frames"):
        validate_shard(frames.filter(pa.array(keep)), samples, mf.dims(TINY_PREPARE), "ref")
