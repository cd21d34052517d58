"""The streaming training loader on real prepared shards: every sample once per epoch, each
shard read once, row-group splitting, equal batches per rank, determinism and exact resume
through torchdata's StatefulDataLoader."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from episode_factory import TINY_PREPARE, write_episode
from torchdata.stateful_dataloader import StatefulDataLoader

from autoe2e import storage
from autoe2e.data.dataset import ShardDataset
from autoe2e.data.prepare import prepare_dataset
from autoe2e.data.shard_reader import ShardIntegrityError
from autoe2e.data.streaming import StreamingShardDataset, plan_epoch

EPISODES = [f"ep{i}" for i in range(6)]


def _prepare(root: Path, **overrides) -> str:
    episodes = root / "episodes"
    for i, name in enumerate(EPISODES):
        write_episode(episodes, name, duration_s=5.0 + i % 3, heading=0.3 * i)
    config = dataclasses.replace(TINY_PREPARE, workers=1, **overrides)
    prepare_dataset(str(episodes), str(root / "out"), config)
    return str(root / "out" / "manifest.json")


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory) -> str:
    """One episode per shard (6 shards)."""
    return _prepare(tmp_path_factory.mktemp("many"), shard_target_bytes=1 << 16)


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory) -> str:
    """All episodes in one shard of several row groups."""
    return _prepare(
        tmp_path_factory.mktemp("one"), shard_target_bytes=1 << 30, row_group_target_bytes=1 << 16
    )


def _keys(batches) -> list[tuple[str, float]]:
    return [
        (e, round(float(t), 3))
        for b in batches
        for e, t in zip(b["episode_id"], b["timestamp_s"], strict=True)
    ]


def _everything(manifest: str, episodes=None) -> Counter:
    ds = ShardDataset(manifest, episodes=episodes, load_world_model_frames=False)
    return Counter((ds[i]["episode_id"], round(ds[i]["timestamp_s"], 3)) for i in range(len(ds)))


def _loader(ds, workers: int) -> StatefulDataLoader:
    return StatefulDataLoader(ds, batch_size=None, num_workers=workers)


@pytest.mark.parametrize("fixture", ["many_shards", "one_shard"])
def test_epoch_serves_every_sample_once_and_reads_each_byte_once(fixture, request) -> None:
    manifest = request.getfixturevalue(fixture)
    ds = StreamingShardDataset(
        manifest, batch_size=5, uneven="none", shuffle_buffer=16, load_world_model_frames=False
    )
    before = storage.bytes_read()
    ds.set_epoch(0)
    served = _keys(_loader(ds, 0))
    read = storage.bytes_read() - before
    assert Counter(served) == _everything(manifest)
    info = json.loads(Path(manifest).read_text())
    size = sum(s["bytes"] + s["frames_bytes"] for s in info["shards"])
    assert size <= read <= 1.05 * size, (read, size)
    # shuffled: not the file order
    assert served != sorted(served)


def test_fewer_shards_than_workers_split_by_row_group(one_shard) -> None:
    info = json.loads(Path(one_shard).read_text())
    assert len(info["shards"]) == 1 and len(info["shards"][0]["parts"]["row_groups"]) >= 2
    ds = StreamingShardDataset(
        one_shard, batch_size=4, uneven="none", num_workers=2, load_world_model_frames=False
    )
    plan = ds.plan(0)
    assert plan.split and all(plan.units[g] for g in range(2))  # no worker idles
    ds.set_epoch(0)
    served = _keys(_loader(ds, 2))
    assert Counter(served) == _everything(one_shard)


def test_split_row_groups_are_verified(tmp_path) -> None:
    manifest = _prepare(tmp_path, shard_target_bytes=1 << 30, row_group_target_bytes=1 << 16)
    info = json.loads(Path(manifest).read_text())
    group = info["shards"][0]["frames_parts"]["row_groups"][1]
    frames = Path(manifest).parent / info["shards"][0]["frames_path"]
    data = bytearray(frames.read_bytes())
    data[group["offset"] + group["length"] // 2] ^= 0xFF
    frames.write_bytes(bytes(data))
    ds = StreamingShardDataset(manifest, batch_size=4, uneven="none", num_workers=2)
    ds.set_epoch(0)
    with pytest.raises(ShardIntegrityError, match="bytes .* have sha256"):
        list(_loader(ds, 2))


@pytest.mark.parametrize("uneven", ["pad", "drop"])
def test_ranks_get_equal_full_batches_of_disjoint_samples(many_shards, uneven) -> None:
    train = EPISODES[:5]
    per_rank = []
    for rank in range(2):
        ds = StreamingShardDataset(
            many_shards, train, batch_size=8, rank=rank, world_size=2, num_workers=2,
            uneven=uneven, load_world_model_frames=False,
        )  # fmt: skip
        ds.set_epoch(1)
        batches = list(_loader(ds, 2))
        assert len(batches) == ds.batches_per_rank(1) > 0
        assert all(len(b["episode_id"]) == 8 for b in batches)
        per_rank.append(_keys(batches))
    plan = ds.plan(1)
    everything = _everything(many_shards, train)
    served = Counter(per_rank[0]) + Counter(per_rank[1])
    if uneven == "drop":
        assert len(per_rank[0]) == len(per_rank[1])
        assert set(served.values()) == {1} and served <= everything
        assert sum(everything.values()) - sum(served.values()) == plan.dropped
    else:
        assert set(everything) == set(served)  # nothing lost
        assert sum(served.values()) - sum(everything.values()) == plan.padded
    # ranks read disjoint shards: a sample a rank did not re-serve itself is only there
    assert not set(per_rank[0]) & set(per_rank[1])


def test_order_is_a_function_of_seed_epoch_and_workers(many_shards) -> None:
    def order(seed: int, epoch: int) -> list[tuple[str, float]]:
        ds = StreamingShardDataset(
            many_shards, batch_size=4, seed=seed, num_workers=2, load_world_model_frames=False
        )
        ds.set_epoch(epoch)
        return _keys(_loader(ds, 2))

    first = order(3, 0)
    assert order(3, 0) == first
    assert order(3, 1) != first and order(4, 0) != first


def test_stateful_loader_resumes_mid_epoch_exactly(many_shards) -> None:
    def fresh() -> tuple:
        ds = StreamingShardDataset(many_shards, batch_size=4, num_workers=2)
        ds.set_epoch(2)
        return ds, StatefulDataLoader(ds, batch_size=None, num_workers=2)

    _, loader = fresh()
    full = list(loader)
    _, loader = fresh()
    it = iter(loader)
    head = [next(it) for _ in range(5)]
    state = loader.state_dict()
    del it
    _, resumed = fresh()
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert _keys(head + tail) == _keys(full)
    for a, b in zip(head + tail, full, strict=True):
        assert torch.equal(a["images"], b["images"]) and torch.equal(
            a["future_images"], b["future_images"]
        )


def test_shards_of_other_splits_are_not_opened(many_shards) -> None:
    info = json.loads(Path(many_shards).read_text())
    ds = StreamingShardDataset(many_shards, ["ep2"], batch_size=2, uneven="none")
    assert [p.shard for p in ds.source.shard_pieces()] == [
        s for s, shard in enumerate(info["shards"]) if "ep2" in shard["episodes"]
    ]
    before = storage.bytes_read()
    ds.set_epoch(0)
    list(_loader(ds, 0))
    (shard,) = [s for s in info["shards"] if "ep2" in s["episodes"]]
    assert storage.bytes_read() - before == shard["bytes"] + shard["frames_bytes"]


def test_plan_counts_balance(many_shards) -> None:
    ds = StreamingShardDataset(many_shards, batch_size=3, num_workers=1)
    plan = plan_epoch(
        ds.source, seed=0, epoch=0, global_workers=4, batch_size=3, shuffle=True, uneven="pad"
    )
    counts = [sum(p.num_samples for p in units) for units in plan.units]
    assert plan.padded == sum(plan.batches_per_worker * 3 - n for n in counts)
    assert sorted(p.shard for units in plan.units for p in units) == list(range(6))
