"""`prepare_dataset` on tiny real episodes: samples, shards, manifest, quarantine, idempotence."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from episode_factory import TINY_PREPARE, write_episode

from autoe2e import storage
from autoe2e.config import PrepareConfig
from autoe2e.contract import MAP_KINDS
from autoe2e.data.dataset import ShardDataset
from autoe2e.data.map_raster import decode_png
from autoe2e.data.prepare import PrepareError, prepare_dataset

CONFIG = TINY_PREPARE
RADIUS = 12.0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("episodes")
    write_episode(root, "ep_straight", heading=0.3)
    write_episode(root, "ep_circle", path_kind="circle", radius=RADIUS)
    write_episode(root, "ep_late_nomap", start_times={"left": 1 / 30}, with_map=False)
    out = tmp_path_factory.mktemp("dataset")
    result = prepare_dataset(str(root), str(out), CONFIG)
    manifest = json.loads((out / "manifest.json").read_text())
    return root, out, result, manifest


def _samples(out: Path, manifest: dict):
    tables = [pq.read_table(out / s["path"]) for s in manifest["shards"]]
    frames = [pq.read_table(out / s["frames_path"]) for s in manifest["shards"]]
    return tables, frames


def _episode_rows(table, episode_id: str):
    return table.filter(pc.equal(table.column("episode_id"), episode_id))


def test_manifest_matches_what_was_written(prepared) -> None:
    _, out, result, manifest = prepared
    assert result.published and result.num_episodes == 3 and not result.quarantined
    assert manifest["cameras"] == ["front", "left"]
    total = 0
    for shard in manifest["shards"]:
        for key, digest, size in (
            ("path", "sha256", "bytes"),
            ("frames_path", "frames_sha256", "frames_bytes"),
        ):
            data = (out / shard[key]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard[digest]
            assert len(data) == shard[size]
        samples = pq.read_table(out / shard["path"])
        assert samples.num_rows == shard["num_rows"]
        assert pq.read_metadata(out / shard["frames_path"]).num_rows == shard["num_frames"]
        assert list(dict.fromkeys(samples.column("episode_id").to_pylist())) == shard["episodes"]
        total += shard["num_rows"]
    assert total == manifest["num_samples"] == result.num_samples
    tables, _ = _samples(out, manifest)
    for entry in manifest["episodes"]:
        rows = sum(_episode_rows(t, entry["episode_id"]).num_rows for t in tables)
        assert rows == entry["num_samples"]
        # 10 s at 30 fps -> ticks 0..99; windows need 1 s before and 2 s after the sample.
        # The late camera (starts 1/30 s in) has no frame for tick 0 but one for tick 100.
        late = entry["episode_id"] == "ep_late_nomap"
        assert entry["num_samples"] == (69 if late else 70)
        assert entry["num_samples"] + entry["num_dropped"] == (101 if late else 100)
    # Small shard target: more than one shard, each holding whole episodes.
    episodes = [e for s in manifest["shards"] for e in s["episodes"]]
    assert (
        sorted(episodes)
        == sorted(set(episodes))
        == sorted(e["episode_id"] for e in manifest["episodes"])
    )


def test_numeric_columns_zstd_and_images_uncompressed(prepared) -> None:
    _, out, _, manifest = prepared
    meta = pq.read_metadata(out / manifest["shards"][0]["frames_path"])
    codecs = {
        meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).compression
        for i in range(meta.num_columns)
    }
    assert codecs["jpeg"] == "UNCOMPRESSED" and codecs["frame_time_s"] == "ZSTD"


def test_each_frame_stored_once_per_shard(prepared) -> None:
    _, out, _, manifest = prepared
    tables, frame_tables = _samples(out, manifest)
    for samples, frames in zip(tables, frame_tables, strict=True):
        keys = list(
            zip(
                frames.column("episode_id").to_pylist(),
                frames.column("camera").to_pylist(),
                frames.column("grid_index").to_pylist(),
                strict=True,
            )
        )
        assert len(keys) == len(set(keys))
        ids = set()
        for name in ("current_frame_ids", "history_frame_ids", "future_frame_ids"):
            ids |= set(pc.list_flatten(samples.column(name)).to_pylist())
        assert ids == set(frames.column("frame_id").to_pylist())  # every frame is referenced
        ticks = {
            (e, k)
            for e, k in zip(
                samples.column("episode_id").to_pylist(),
                samples.column("grid_index").to_pylist(),
                strict=True,
            )
        }
        referenced = {(e, k + o) for e, k in ticks for o in (-10, 0, 10, 20)}
        assert frames.num_rows == len(referenced) * 2  # unique ticks x cameras
        times = np.asarray(frames.column("frame_time_s"))
        grid = np.asarray(frames.column("timestamp_s"))
        assert np.abs(times - grid).max() <= 1 / 60 + 1e-6


def _one_episode(out: Path, manifest: dict, episode_id: str):
    tables, _ = _samples(out, manifest)
    for table in tables:
        rows = _episode_rows(table, episode_id)
        if rows.num_rows:
            return rows
    raise AssertionError(episode_id)


def test_future_trajectory_in_ego_frame_on_known_paths(prepared) -> None:
    _, out, _, manifest = prepared
    steps = np.arange(1, 21) * 0.1
    straight = _one_episode(out, manifest, "ep_straight")
    traj = np.asarray(straight.column("future_trajectory")[7].as_py()).reshape(20, 2)
    np.testing.assert_allclose(traj[:, 0], 10.0 * steps, atol=1e-3)  # heading 0.3 rad in world
    np.testing.assert_allclose(traj[:, 1], 0.0, atol=1e-3)
    circle = _one_episode(out, manifest, "ep_circle")
    theta = 10.0 * steps / RADIUS
    expected = np.stack([RADIUS * np.sin(theta), RADIUS * (1 - np.cos(theta))], axis=1)
    for row in range(circle.num_rows):  # includes samples where world yaw wraps past +-pi
        traj = np.asarray(circle.column("future_trajectory")[row].as_py()).reshape(20, 2)
        np.testing.assert_allclose(traj, expected, atol=2e-3)
        ego = np.asarray(circle.column("ego_history")[row].as_py()).reshape(10, 4)
        np.testing.assert_allclose(ego[:, 0], 10.0, atol=1e-5)
        np.testing.assert_allclose(ego[:, 2], 10.0 / RADIUS, atol=1e-5)
    assert circle.column("timestamp_s")[circle.num_rows - 1].as_py() * 10 / RADIUS > np.pi


def test_map_raster_shows_road_ahead(prepared) -> None:
    _, out, _, manifest = prepared
    straight = _one_episode(out, manifest, "ep_straight")
    raster = decode_png(straight.column("map_raster_png")[20].as_py(), len(MAP_KINDS))
    assert raster.shape == (3, 32, 32)
    ego_row = 24  # 1/4 from the bottom
    centre = raster[MAP_KINDS.index("centerline")]
    rows, cols = np.nonzero(centre)
    assert set(cols.tolist()) <= {15, 16} and (rows < ego_row).sum() >= 20
    edges = raster[MAP_KINDS.index("road_edge")]
    _, edge_cols = np.nonzero(edges)
    assert set(edge_cols.tolist()) <= {12, 13, 19, 20}
    assert (edges[:ego_row] > 0).sum() > 2 * (edges[ego_row:] > 0).sum()
    assert straight.column("map_valid")[0].as_py() is True
    nomap = _one_episode(out, manifest, "ep_late_nomap")
    assert nomap.column("map_valid")[0].as_py() is False
    assert decode_png(nomap.column("map_raster_png")[0].as_py(), 3).max() == 0


def test_rerun_is_idempotent_and_changed_parameters_are_refused(prepared) -> None:
    root, out, _, _ = prepared
    before = (out / "manifest.json").read_bytes()
    again = prepare_dataset(str(root), str(out), CONFIG)
    assert again.published is False and again.num_samples == 209
    assert (out / "manifest.json").read_bytes() == before
    changed = PrepareConfig(**{**CONFIG.__dict__, "jpeg_quality": 50})
    with pytest.raises(PrepareError, match=r"different parameters \['jpeg_quality'\]"):
        prepare_dataset(str(root), str(out), changed)


def test_bad_episodes_are_quarantined_and_good_ones_exported(tmp_path: Path) -> None:
    root = tmp_path / "episodes"
    write_episode(root, "good")
    corrupt = write_episode(root, "corrupt_mp4", duration_s=5)
    video = corrupt / "cameras" / "left.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    nan = write_episode(root, "nan_ego", duration_s=5)
    table = pq.read_table(nan / "ego.parquet").to_pydict()
    table["speed_mps"][7] = float("nan")
    pq.write_table(
        pq.read_table(nan / "ego.parquet").from_pydict(
            table, schema=pq.read_schema(nan / "ego.parquet")
        ),
        nan / "ego.parquet",
    )
    (write_episode(root, "missing_cam", duration_s=5) / "cameras" / "front.mp4").unlink()
    write_episode(root, "short_ego", duration_s=5, ego_duration_s=3)
    write_episode(root, "too_short", duration_s=2.5)
    result = prepare_dataset(str(root), str(tmp_path / "out"), CONFIG)
    reasons = {q["episode_id"]: q["reason"] for q in result.quarantined}
    assert sorted(reasons) == ["corrupt_mp4", "missing_cam", "nan_ego", "short_ego", "too_short"]
    assert "left.mp4" in reasons["corrupt_mp4"]
    assert "NaN" in reasons["nan_ego"] and "speed_mps" in reasons["nan_ego"]
    assert "front.mp4 is missing" in reasons["missing_cam"]
    assert "shorter than the video" in reasons["short_ego"]
    assert "too short" in reasons["too_short"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [e["episode_id"] for e in manifest["episodes"]] == ["good"]
    assert manifest["num_samples"] == result.num_samples == 70
    assert {q["episode_id"] for q in manifest["quarantined"]} == set(reasons)


def test_all_quarantined_fails_listing_reasons(tmp_path: Path) -> None:
    root = tmp_path / "episodes"
    write_episode(root, "tiny_a", duration_s=1.0)
    (write_episode(root, "nocam", duration_s=1.0) / "cameras" / "left.mp4").unlink()
    with pytest.raises(PrepareError, match="(?s)every episode.*nocam.*left.mp4.*tiny_a.*short"):
        prepare_dataset(str(root), str(tmp_path / "out"), CONFIG)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_unusable_root_or_output_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="nowhere"):
        prepare_dataset(str(tmp_path / "nowhere"), str(tmp_path / "out"), CONFIG)
    root = tmp_path / "episodes"
    write_episode(root, "one", duration_s=1.0)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(PrepareError, match="blocker/out is not writable"):
        prepare_dataset(str(root), str(blocker / "out"), CONFIG)


def test_sample_stride_keeps_every_nth_tick(tmp_path: Path) -> None:
    root = tmp_path / "episodes"
    write_episode(root, "ep", cameras=("front",), with_map=False)
    config = PrepareConfig(**{**CONFIG.__dict__, "sample_stride": 5})
    result = prepare_dataset(str(root), str(tmp_path / "out"), config, max_workers=1)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    ticks = pq.read_table(tmp_path / "out" / manifest["shards"][0]["path"]).column("grid_index")
    assert ticks.to_pylist() == list(range(10, 80, 5)) and result.num_samples == 14
    assert manifest["episodes"][0]["num_dropped"] == 20 - 14


def test_synthetic_world_episodes_prepare(tmp_path: Path) -> None:
    from autoe2e.config import GenerateConfig
    from autoe2e.synthetic import generate_episodes

    generate_episodes(
        str(tmp_path / "raw"),
        GenerateConfig(
            num_episodes=2,
            duration_s=12.0,
            cameras=["front", "left"],
            image_width=64,
            image_height=48,
        ),
        workers=1,
    )
    result = prepare_dataset(str(tmp_path / "raw"), str(tmp_path / "out"), CONFIG)
    assert result.num_episodes == 2 and result.num_samples > 0 and not result.quarantined


def test_interrupted_run_leaves_no_manifest_and_the_next_run_completes(
    tmp_path: Path, monkeypatch
) -> None:
    root = tmp_path / "episodes"
    write_episode(root, "ep", cameras=("front",), with_map=False)
    out = tmp_path / "out"
    real_write = storage.write_bytes

    def dies_at_the_manifest(uri: str, data: bytes, **kwargs: object) -> bool:
        if uri.endswith("manifest.json"):
            raise OSError("simulated crash before the manifest")
        return real_write(uri, data, **kwargs)

    monkeypatch.setattr(storage, "write_bytes", dies_at_the_manifest)
    with pytest.raises(OSError, match="simulated crash"):
        prepare_dataset(str(root), str(out), CONFIG)
    assert not (out / "manifest.json").exists()  # readers see no dataset at all
    assert list((out / "shards").glob("*.parquet"))  # shards were written first

    monkeypatch.setattr(storage, "write_bytes", real_write)
    result = prepare_dataset(str(root), str(out), CONFIG)
    assert result.published and result.num_samples > 0
    dataset = ShardDataset(result.manifest_uri)  # verifies every shard's sha256 on read
    assert len(dataset) == result.num_samples and dataset[0]["images"].shape[0] == 1


def test_foreign_bytes_under_a_shard_key_are_refused(tmp_path: Path) -> None:
    """Shard writes are create-only: a different object under our key is never overwritten."""
    root = tmp_path / "episodes"
    write_episode(root, "ep", cameras=("front",), with_map=False)
    first = prepare_dataset(str(root), str(tmp_path / "first"), CONFIG)
    shard = json.loads(Path(first.manifest_uri).read_text())["shards"][0]["path"]
    foreign = tmp_path / "out" / shard
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"somebody else's object")
    with pytest.raises(PrepareError, match="already exists with different content"):
        prepare_dataset(str(root), str(tmp_path / "out"), CONFIG)
    assert foreign.read_bytes() == b"somebody else's object"
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_padding_keeps_edge_samples_with_masks(tmp_path: Path) -> None:
    """With pad_incomplete_windows the 10 s episode keeps every tick that has its current views
    and telemetry now and 0.1 s ahead; missing window steps are -1 ids with False masks, and the
    loader turns them into zero images."""
    root = tmp_path / "episodes"
    write_episode(root, "ep", heading=0.0)
    config = PrepareConfig(**{**CONFIG.__dict__, "pad_incomplete_windows": True})
    result = prepare_dataset(str(root), str(tmp_path / "out"), config)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert result.num_samples == 100 and manifest["episodes"][0]["num_dropped"] == 0
    assert manifest["parameters"]["pad_incomplete_windows"] is True
    samples = pq.read_table(tmp_path / "out" / manifest["shards"][0]["path"])
    frames = pq.read_table(tmp_path / "out" / manifest["shards"][0]["frames_path"])
    assert frames.num_rows == 100 * 2  # every tick x camera, each stored once
    rows = {k: i for i, k in enumerate(samples.column("grid_index").to_pylist())}

    def cell(name: str, tick: int) -> np.ndarray:
        return np.asarray(samples.column(name)[rows[tick]].as_py())

    # Start: no history second, ego history is only the current step.
    assert cell("history_valid", 0).tolist() == [False, True]
    assert (cell("history_frame_ids", 0)[:2] == -1).all()
    assert cell("ego_history_valid", 0).tolist() == [False] * 9 + [True]
    # 9.9 s: future frames and all but the first trajectory step are past the recording.
    assert cell("future_valid", 99).tolist() == [False, False]
    assert (cell("future_frame_ids", 99) == -1).all()
    assert cell("trajectory_valid", 99).tolist() == [True] + [False] * 19
    assert (cell("future_trajectory", 99)[2:] == 0).all()
    assert cell("future_trajectory", 99)[0] == pytest.approx(1.0, abs=1e-3)  # 10 m/s x 0.1 s
    # 8 s: +1 s exists, +2 s (tick 100) does not; the trajectory ends exactly at 10 s.
    assert cell("future_valid", 80).tolist() == [True, False]
    assert cell("trajectory_valid", 80).all()
    # In the middle nothing is padded.
    for name in ("history_valid", "future_valid", "ego_history_valid", "trajectory_valid"):
        assert cell(name, 50).all()

    dataset = ShardDataset(str(tmp_path / "out" / "manifest.json"))
    first = dataset[rows[0]]
    assert first["history_valid"].tolist() == [False, True]
    assert int(first["history_images"][0].sum()) == 0 and int(first["history_images"][1].sum()) > 0
    assert first["ego_history_valid"].tolist() == [False] * 9 + [True]
    assert torch.equal(first["history_images"][1], first["images"])  # offset 0 is the current view

    # The model and both losses take padded samples: finite, and the masked steps count for
    # nothing (changing the target there changes no loss).
    from tiny_configs import tiny_model_config
    from torch.utils.data import DataLoader, Subset

    from autoe2e.model import AutoE2E
    from autoe2e.training.losses import jepa_l1, trajectory_l1

    cfg = tiny_model_config(
        image_height=24,
        image_width=32,
        map_raster_size=32,
        ego_history_steps=10,
        trajectory_steps=20,
        history_len=2,
        future_steps=2,
    )
    model = AutoE2E(cfg).eval()
    batch = next(iter(DataLoader(Subset(dataset, [rows[0], rows[80], rows[99]]), batch_size=3)))
    with torch.no_grad():
        out = model(batch)
        targets = model.jepa_targets(batch["future_images"])
    traj = trajectory_l1(out.trajectory, batch["future_trajectory"], batch["trajectory_valid"])
    jepa = jepa_l1(out.jepa_prediction, targets, batch["future_valid"])
    assert torch.isfinite(traj) and torch.isfinite(jepa)
    moved = batch["future_trajectory"].clone()
    moved[~batch["trajectory_valid"]] = 1e3
    assert torch.equal(trajectory_l1(out.trajectory, moved, batch["trajectory_valid"]), traj)


def test_padding_off_drops_and_counts_the_same_edges(tmp_path: Path) -> None:
    root = tmp_path / "episodes"
    write_episode(root, "ep", heading=0.0)
    prepare_dataset(str(root), str(tmp_path / "out"), CONFIG)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = manifest["episodes"][0]
    assert entry["num_samples"] == 70 and entry["num_dropped"] == 30
    assert entry["drop_reasons"] == {"frames_missing": 30}
    samples = pq.read_table(tmp_path / "out" / manifest["shards"][0]["path"])
    for name in ("history_valid", "future_valid", "ego_history_valid", "trajectory_valid"):
        assert all(pc.list_flatten(samples.column(name)).to_pylist())


def test_row_groups_follow_the_byte_target(tmp_path: Path) -> None:
    """Row groups are sized in bytes (pyarrow only takes a row count): with a 64 KiB target
    both files split into several groups, none far above the target."""
    root = tmp_path / "episodes"
    write_episode(root, "ep", duration_s=30.0)
    target = 1 << 16
    config = PrepareConfig(**{**CONFIG.__dict__, "row_group_target_bytes": target})
    prepare_dataset(str(root), str(tmp_path / "out"), config)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for key in ("path", "frames_path"):
        meta = pq.read_metadata(tmp_path / "out" / manifest["shards"][0][key])
        sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
        assert len(sizes) >= 2, (key, sizes)
        assert max(sizes) <= 1.25 * target, (key, sizes)
        assert sum(sizes[:-1]) / len(sizes[:-1]) >= 0.5 * target, (key, sizes)


def test_only_usable_ticks_are_converted_and_they_cover_every_stored_frame(tmp_path: Path) -> None:
    from autoe2e.data.episode import usable_ticks
    from autoe2e.data.telemetry import EgoTrack

    root = tmp_path / "episodes"
    write_episode(root, "ep", duration_s=12.0)
    track = EgoTrack.from_table(pq.read_table(root / "ep" / "ego.parquet"))
    # 2.9 s of ego history and 3 s of trajectory: the first and last seconds serve no sample.
    base = PrepareConfig(**{**CONFIG.__dict__, "ego_history_steps": 30, "trajectory_steps": 30})
    for pad in (False, True):
        config = PrepareConfig(**{**base.__dict__, "pad_incomplete_windows": pad})
        out = tmp_path / f"out-{pad}"
        prepare_dataset(str(root), str(out), config)
        manifest = json.loads((out / "manifest.json").read_text())
        ticks = pq.read_table(out / manifest["shards"][0]["frames_path"]).column("grid_index")
        lo, hi = usable_ticks(track, config)
        assert lo <= min(ticks.to_pylist()) and max(ticks.to_pylist()) <= hi
        if not pad:
            assert (lo, hi) == (18, 111)  # ticks 0..17 and 112..119 are matched, not converted
