"""Per-episode staging (the Flyte fan-out path) on tiny real episodes: it publishes exactly what
`prepare_dataset` publishes, re-stages only changed episodes and carries quarantines through."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from episode_factory import TINY_PREPARE, write_episode

from autoe2e.config import PrepareConfig
from autoe2e.data import staging
from autoe2e.data.prepare import PrepareError, prepare_dataset

CONFIG = TINY_PREPARE


def _stage_all(
    root: Path, staging_root: Path, config: PrepareConfig = CONFIG
) -> tuple[staging.EpisodeListing, list[str]]:
    listing = staging.list_episodes(str(root))
    staged = [
        staging.stage_episode(uri, fingerprint, config, str(staging_root))
        for uri, fingerprint in zip(listing.episode_uris, listing.fingerprints, strict=True)
    ]
    return listing, staged


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("episodes")
    write_episode(folder, "ep_a", duration_s=5.0, heading=0.3)
    write_episode(folder, "ep_b", duration_s=5.0, path_kind="circle", radius=12.0)
    # a truncated video: quarantined, not fatal
    broken = write_episode(folder, "ep_broken", duration_s=5.0)
    video = broken / "cameras" / "left.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    return folder


def test_staged_publish_matches_single_process_prepare(root: Path, tmp_path: Path) -> None:
    direct = prepare_dataset(str(root), str(tmp_path / "direct"), CONFIG)
    listing, staged = _stage_all(root, tmp_path / "staging")
    result = staging.publish_staged(
        staged,
        str(tmp_path / "staged"),
        CONFIG,
        inputs_sha256=listing.inputs_sha256,
        episodes_uri=str(root),
    )
    want, got = _manifest(tmp_path / "direct"), _manifest(tmp_path / "staged")
    assert result.published and result.num_samples == direct.num_samples > 0
    # Same shard bytes, same episodes, same quarantine, same dataset identity.
    for key in ("shards", "episodes", "quarantined", "inputs_sha256", "parameters", "num_samples"):
        assert got[key] == want[key], key
    assert [q["episode_id"] for q in got["quarantined"]] == ["ep_broken"]
    assert "left.mp4" in got["quarantined"][0]["reason"]
    assert sorted(e["episode_id"] for e in got["episodes"]) == ["ep_a", "ep_b"]
    # The quarantine is staged as a record, not as tables.
    broken = [Path(s) for s in staged if Path(s).name.startswith("ep_broken-")]
    assert len(broken) == 1 and (broken[0] / staging.QUARANTINE_FILE).is_file()
    assert not (broken[0] / staging.SAMPLES_FILE).exists()

    # The same inputs again publish nothing, and either path recognises the other's dataset.
    again = staging.publish_staged(
        staged, str(tmp_path / "direct"), CONFIG, inputs_sha256=listing.inputs_sha256
    )
    assert again.published is False and again.num_samples == direct.num_samples


def test_rerun_restages_only_the_changed_episode(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(root, raw)
    staging_root = tmp_path / "staging"
    first, staged = _stage_all(raw, staging_root)
    staging.publish_staged(staged, str(tmp_path / "v1"), CONFIG, inputs_sha256=first.inputs_sha256)

    # Rewrite one episode with a different trajectory (new telemetry bytes, same folder name).
    shutil.rmtree(raw / "ep_b")
    write_episode(raw, "ep_b", duration_s=5.0, path_kind="circle", radius=20.0)
    prepared: list[str] = []
    real = staging._prepare_or_quarantine

    def counting(uri: str, config: PrepareConfig):
        prepared.append(Path(uri).name)
        return real(uri, config)

    monkeypatch.setattr(staging, "_prepare_or_quarantine", counting)
    second, restaged = _stage_all(raw, staging_root)

    assert prepared == ["ep_b"]
    changed = {
        Path(u).name: (a, b)
        for u, a, b in zip(first.episode_uris, first.fingerprints, second.fingerprints, strict=True)
        if a != b
    }
    assert list(changed) == ["ep_b"]
    assert second.inputs_sha256 != first.inputs_sha256
    assert [s for s in restaged if s not in staged] == [
        s for s in restaged if Path(s).name.startswith("ep_b-")
    ]
    assert sorted(p.name.split("-")[0] for p in staging_root.iterdir()) == [
        "ep_a",
        "ep_b",
        "ep_b",
        "ep_broken",
    ]

    # Published datasets are immutable: new inputs go to a new location.
    with pytest.raises(PrepareError, match="inputs_sha256"):
        staging.publish_staged(
            restaged, str(tmp_path / "v1"), CONFIG, inputs_sha256=second.inputs_sha256
        )
    result = staging.publish_staged(
        restaged, str(tmp_path / "v2"), CONFIG, inputs_sha256=second.inputs_sha256
    )
    assert result.published
    v1, v2 = _manifest(tmp_path / "v1"), _manifest(tmp_path / "v2")
    by_id = {e["episode_id"]: e for e in v1["episodes"]}
    for entry in v2["episodes"]:
        assert entry == by_id[entry["episode_id"]]  # same sample counts for the same lengths
    assert [s["sha256"] for s in v1["shards"]] != [s["sha256"] for s in v2["shards"]]

    # A different output parameter is a different staging key: everything is prepared again.
    prepared.clear()
    listing = staging.list_episodes(str(raw))
    other = dataclasses.replace(CONFIG, jpeg_quality=CONFIG.jpeg_quality - 10)
    staging.stage_episode(
        listing.episode_uris[0], listing.fingerprints[0], other, str(staging_root)
    )
    assert prepared == ["ep_a"]


def test_missing_staged_result_fails_naming_it(tmp_path: Path) -> None:
    gone = tmp_path / "staging" / "ep_x-0123456789abcdef"
    with pytest.raises(PrepareError, match="ep_x-0123456789abcdef.*incomplete"):
        staging.publish_staged([str(gone)], str(tmp_path / "out"), CONFIG, inputs_sha256="0" * 64)


def test_staging_key_ignores_execution_and_shard_layout() -> None:
    faster = dataclasses.replace(
        CONFIG, workers=5, decode_threads=2, camera_threads=3, shard_target_bytes=9 << 20
    )
    assert staging.staging_key("f", faster) == staging.staging_key("f", CONFIG)
    different = dataclasses.replace(CONFIG, image_width=48)
    assert staging.staging_key("f", different) != staging.staging_key("f", CONFIG)


def test_publish_loads_one_shard_of_episodes_at_a_time(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staged episodes are read when their shard is written, not all up front: with a shard
    target below two episodes' size, each shard is written before the next episode loads."""
    listing, staged = _stage_all(root, tmp_path / "staging")
    sizes = [i.nbytes for i in map(staging._read_staged, staged) if not isinstance(i, dict)]
    # Any two episodes exceed the target, so every shard holds exactly one.
    config = dataclasses.replace(CONFIG, shard_target_bytes=max(sizes) + 1)
    assert min(sizes) * 2 > config.shard_target_bytes
    events: list[str] = []
    load = staging.StagedEpisode.load

    def spy_load(self: staging.StagedEpisode):
        events.append(f"load {self.episode_id}")
        return load(self)

    monkeypatch.setattr(staging.StagedEpisode, "load", spy_load)
    real_write = staging.publish_outcomes.__globals__["_write_once"]

    def spy_write(uri: str, data: bytes) -> None:
        if uri.endswith(".samples.parquet"):
            events.append("write " + Path(uri).name.split(".")[0])
        real_write(uri, data)

    monkeypatch.setitem(staging.publish_outcomes.__globals__, "_write_once", spy_write)
    staging.publish_staged(
        staged, str(tmp_path / "out"), config, inputs_sha256=listing.inputs_sha256
    )
    assert events == ["load ep_a", "write shard-00000", "load ep_b", "write shard-00001"]


def test_prepare_staged_reuses_staging_and_skips_a_published_dataset(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = staging.list_episodes(str(root))
    kwargs = dict(staging_uri=str(tmp_path / "staging"), episodes_uri=str(root))
    first = staging.prepare_staged(listing, str(tmp_path / "out"), CONFIG, **kwargs)
    direct = prepare_dataset(str(root), str(tmp_path / "direct"), CONFIG)
    assert first.published and first.num_samples == direct.num_samples
    assert _manifest(tmp_path / "out")["shards"] == _manifest(tmp_path / "direct")["shards"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("an unchanged re-run must not decode")

    monkeypatch.setattr(staging, "_prepare_or_quarantine", no_decoding)
    again = staging.prepare_staged(listing, str(tmp_path / "out"), CONFIG, **kwargs)
    assert again.published is False and again.num_samples == first.num_samples
    # A new output place (e.g. a shard-size change) republishes from the staged episodes alone.
    bigger = dataclasses.replace(CONFIG, shard_target_bytes=64 << 20)
    other = staging.prepare_staged(listing, str(tmp_path / "out2"), bigger, **kwargs)
    assert other.published and other.num_samples == first.num_samples
    assert len(_manifest(tmp_path / "out2")["shards"]) == 1


def test_cli_staged_prepare_on_s3_with_an_explicit_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`autoe2e --s3-endpoint-url URL prepare s3://... --staging-uri s3://...` against a real
    S3-protocol server on 127.0.0.1, with the endpoint given only on the command line."""
    import os

    from episode_factory import moto_s3, upload_tree

    from autoe2e.cli import main

    local = tmp_path / "episodes"
    write_episode(local, "ep_a", duration_s=5.0)
    write_episode(local, "ep_b", duration_s=5.0, path_kind="circle", radius=12.0)
    config_file = tmp_path / "prepare.json"
    config_file.write_text(json.dumps({**dataclasses.asdict(CONFIG), "workers": 2}))
    with moto_s3(monkeypatch) as bucket:
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        upload_tree(local, f"{bucket}/raw")
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        argv = ["--s3-endpoint-url", endpoint, "prepare", f"{bucket}/raw", f"{bucket}/ds"]
        argv += ["--staging-uri", f"{bucket}/staging", "--config", str(config_file)]
        assert main(argv) == 0
        from autoe2e import storage

        manifest = json.loads(storage.read_bytes(f"{bucket}/ds/manifest.json"))
        assert sorted(e["episode_id"] for e in manifest["episodes"]) == ["ep_a", "ep_b"]
        staged = storage.list_children(f"{bucket}/staging", only_dirs=True)
        assert len(staged) == 2 and all(name.startswith("ep_") for name in staged)
        direct = prepare_dataset(str(local), str(tmp_path / "direct"), CONFIG)
        assert manifest["num_samples"] == direct.num_samples > 0
