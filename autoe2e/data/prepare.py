"""`autoe2e prepare`: raw episodes -> validated Parquet shard pairs + manifest.

Order of operations is the publication protocol: fail fast on an unreadable input root or an
unwritable output, skip everything when an identical manifest already exists, prepare episodes
(bad ones are quarantined, not fatal), write and validate shards under deterministic keys, and
write the manifest last with a create-only put so readers never see a half-published dataset.
`prepare_episode` and `publish` are separate so an orchestrator can fan episodes out (Flyte
``map_task``) and publish once. An episode's optional ``scenario.json`` (ground-truth events)
is copied into its manifest entry as ``events`` for per-scenario evaluation
(`autoe2e.data.scenarios`); the samples themselves do not depend on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autoe2e import storage
from autoe2e.config import PrepareConfig
from autoe2e.contract import CONTRACT_VERSION, EpisodeContractError
from autoe2e.data import manifest as mf
from autoe2e.data.episode import EpisodeSamples, prepare_episode
from autoe2e.data.scenarios import read_episode_events
from autoe2e.data.schema import SCHEMA_VERSION
from autoe2e.data.shards import file_parts, plan_shards, read_parquet_bytes, serialise
from autoe2e.data.validate import validate_shard
from autoe2e.workers import worker_pool

logger = logging.getLogger(__name__)

__all__ = [
    "PrepareError",
    "PrepareResult",
    "prepare_dataset",
    "prepare_episode",
    "publish",
    "publish_outcomes",
]


class PrepareError(RuntimeError):
    """The dataset cannot be prepared at all (bad root/output, or every episode rejected)."""


@dataclass
class PrepareResult:
    manifest_uri: str
    num_samples: int
    num_episodes: int
    quarantined: list[dict] = field(default_factory=list)
    published: bool = True
    seconds: float = 0.0


def discover_episodes(episodes_uri: str) -> list[str]:
    """Episode folder URIs under the root, sorted; fails fast naming an unusable root."""
    try:
        names = storage.list_children(episodes_uri, only_dirs=True)
    except storage.StorageError as exc:
        raise PrepareError(
            f"episodes root {episodes_uri} is unreadable ({exc}); point it at the folder that "
            "holds one sub-folder per episode"
        ) from exc
    names = [n for n in names if not n.startswith((".", "_"))]
    if not names:
        raise PrepareError(f"episodes root {episodes_uri} holds no episode folders")
    return [storage.join_uri(episodes_uri, name) for name in names]


def with_camera_threads(config: PrepareConfig, cores_per_episode: int) -> PrepareConfig:
    """``config`` with ``camera_threads`` resolved when it is 0 (automatic): the cores each
    concurrently prepared episode gets, so processes x threads never oversubscribe the CPU."""
    if config.camera_threads:
        return config
    return dataclasses.replace(config, camera_threads=max(1, cores_per_episode))


def _prepare_or_quarantine(uri: str, config: PrepareConfig) -> EpisodeSamples | dict[str, str]:
    try:
        return prepare_episode(uri, config)
    except EpisodeContractError as exc:
        logger.warning("quarantined %s: %s", uri, exc)
        return {"episode_id": exc.episode, "reason": str(exc)}


def prepare_dataset(
    episodes_uri: str,
    out_uri: str,
    config: PrepareConfig,
    *,
    max_workers: int = 1,
    inputs_sha256: str | None = None,
) -> PrepareResult:
    """Prepare every episode under ``episodes_uri`` and publish shards + manifest to ``out_uri``.

    ``max_workers`` > 1 prepares episodes in that many processes (decode is CPU bound).
    ``inputs_sha256`` is the inputs' fingerprint when the caller has already computed it
    (`autoe2e.data.staging.list_episodes`), so local inputs are not hashed twice.
    """
    started = time.perf_counter()
    config.validate()
    episode_uris = discover_episodes(episodes_uri)
    check_writable(out_uri)
    if inputs_sha256 is None:
        try:
            fingerprints = storage.file_fingerprints(episodes_uri)
        except storage.StorageError as exc:
            raise PrepareError(f"cannot fingerprint inputs under {episodes_uri}: {exc}") from exc
        inputs_sha256 = mf.inputs_fingerprint(fingerprints)
    unchanged = already_published(out_uri, config, inputs_sha256, started)
    if unchanged is not None:
        return unchanged

    workers = max(1, min(max_workers, len(episode_uris)))
    config = with_camera_threads(config, (os.cpu_count() or 1) // workers)
    if workers > 1:
        with worker_pool(workers) as pool:
            outcomes = list(
                pool.map(_prepare_or_quarantine, episode_uris, [config] * len(episode_uris))
            )
    else:
        outcomes = [_prepare_or_quarantine(uri, config) for uri in episode_uris]
    # Outcomes are in episode_uris order; scenario files are small, read them here.
    events = {
        outcome.episode_id: found
        for uri, outcome in zip(episode_uris, outcomes, strict=True)
        if not isinstance(outcome, dict) and (found := read_episode_events(uri)) is not None
    }
    result = publish_outcomes(
        outcomes,
        out_uri,
        config,
        inputs_sha256=inputs_sha256,
        episodes_uri=episodes_uri,
        events=events,
    )
    result.seconds = time.perf_counter() - started
    logger.info(
        "prepared %d samples from %d episodes (%d quarantined) in %.1f s",
        result.num_samples,
        result.num_episodes,
        len(result.quarantined),
        result.seconds,
    )
    return result


def _write_once(uri: str, data: bytes) -> None:
    """Create-only write of a shard object. A key left by an interrupted run is kept when it
    holds exactly these bytes (keys and contents are deterministic), so the next run completes
    the dataset; different bytes under the same key mean someone else wrote there: refuse."""
    if storage.write_bytes(uri, data, create_only=True):
        return
    if hashlib.sha256(storage.read_bytes(uri)).digest() != hashlib.sha256(data).digest():
        raise PrepareError(
            f"{uri} already exists with different content and no manifest publishes it; "
            "another writer is using this output location, write to a new one"
        )
    logger.info("%s already holds this shard (left by an interrupted run); kept", uri)


class PublishableEpisode(Protocol):
    """What `publish` needs of an episode: its bookkeeping up front, its tables only when its
    shard is written (`EpisodeSamples` is one already in memory; a staged episode loads them
    from storage, so publishing holds one shard's episodes at a time)."""

    episode_id: str
    cameras: list[str]
    drop_reasons: dict[str, int]

    @property
    def nbytes(self) -> int: ...

    @property
    def num_samples(self) -> int: ...

    @property
    def num_dropped(self) -> int: ...

    def load(self) -> EpisodeSamples: ...


def publish_outcomes(
    outcomes: Sequence[PublishableEpisode | dict[str, str]],
    out_uri: str,
    config: PrepareConfig,
    *,
    inputs_sha256: str,
    episodes_uri: str = "",
    events: Mapping[str, list[dict]] | None = None,
) -> PrepareResult:
    """Publish per-episode outcomes: samples are exported, quarantine records are listed."""
    return publish(
        [o for o in outcomes if not isinstance(o, dict)],
        [o for o in outcomes if isinstance(o, dict)],
        out_uri,
        config,
        inputs_sha256=inputs_sha256,
        episodes_uri=episodes_uri,
        events=events,
    )


def check_writable(out_uri: str) -> None:
    """Fail fast, naming ``out_uri``, when nothing can be written there."""
    try:
        storage.check_writable(out_uri)
    except storage.StorageError as exc:
        raise PrepareError(str(exc)) from exc


def already_published(
    out_uri: str, config: PrepareConfig, inputs_sha256: str, started: float
) -> PrepareResult | None:
    """The "nothing to do" result when ``out_uri`` already publishes exactly this dataset;
    None when it publishes nothing; an error when it publishes a different one."""
    manifest_uri = storage.join_uri(out_uri, mf.MANIFEST_FILE)
    existing = _existing_manifest(manifest_uri, config, inputs_sha256)
    return None if existing is None else _unchanged(manifest_uri, existing, started)


def _existing_manifest(
    manifest_uri: str, config: PrepareConfig, inputs_sha256: str
) -> dict[str, Any] | None:
    """The existing manifest if it describes this exact run; error if it describes another."""
    if not storage.exists(manifest_uri):
        return None
    old = mf.read_manifest(manifest_uri)
    new = {
        "contract_version": CONTRACT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "parameters": mf.output_parameters(config),
        "inputs_sha256": inputs_sha256,
    }
    if mf.same_identity(old, new):
        return old
    raise PrepareError(
        f"{manifest_uri} already publishes a dataset with different "
        f"{', '.join(mf.identity_diff(old, new))}; published datasets are immutable, so write "
        "to a new output location"
    )


def _unchanged(manifest_uri: str, manifest: dict[str, Any], started: float) -> PrepareResult:
    logger.info(
        "%s already holds this dataset (same parameters and inputs); nothing published",
        manifest_uri,
    )
    return PrepareResult(
        manifest_uri=manifest_uri,
        num_samples=int(manifest["num_samples"]),
        num_episodes=len(manifest["episodes"]),
        quarantined=list(manifest.get("quarantined", [])),
        published=False,
        seconds=time.perf_counter() - started,
    )


def _camera_vocabulary(config: PrepareConfig, prepared: Sequence[PublishableEpisode]) -> list[str]:
    if config.cameras:
        return list(config.cameras)
    vocabulary: list[str] = []
    for episode in prepared:
        vocabulary += [c for c in episode.cameras if c not in vocabulary]
    return vocabulary


def _episode_entry(episode: PublishableEpisode, events: list[dict] | None) -> dict[str, Any]:
    """An episode's manifest entry; ``events`` only when the episode has scenario events."""
    entry: dict[str, Any] = {
        "episode_id": episode.episode_id,
        "num_samples": episode.num_samples,
        "num_dropped": episode.num_dropped,
        "drop_reasons": episode.drop_reasons,
        "cameras": episode.cameras,
    }
    if events is not None:
        entry["events"] = events
    return entry


def publish(
    prepared: Sequence[PublishableEpisode],
    quarantined: list[dict[str, str]],
    out_uri: str,
    config: PrepareConfig,
    *,
    inputs_sha256: str,
    episodes_uri: str = "",
    events: Mapping[str, list[dict]] | None = None,
) -> PrepareResult:
    """Shard, validate and write ``prepared`` episodes, then the manifest (create-only).

    ``events`` maps episode ids to their scenario events (`scenarios.manifest_events`); an
    episode listed there gets them in its manifest entry, any other gets no ``events`` key.
    """
    manifest_uri = storage.join_uri(out_uri, mf.MANIFEST_FILE)
    if not prepared:
        reasons = "\n  ".join(f"{q['episode_id']}: {q['reason']}" for q in quarantined)
        raise PrepareError(f"every episode was quarantined, nothing to publish:\n  {reasons}")
    prepared = sorted(prepared, key=lambda e: e.episode_id)
    ids = [e.episode_id for e in prepared]
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise PrepareError(
            f"episode ids {duplicates} appear in more than one folder; make episode_id unique"
        )
    dims = mf.dims(config)
    shards: list[dict[str, Any]] = []
    for index, group in enumerate(plan_shards(prepared, config.shard_target_bytes)):
        # Only this shard's episodes are in memory (staged ones are read here, then dropped).
        shard = serialise(index, [e.load() for e in group], config.row_group_target_bytes)
        # Validate exactly what will be published: the bytes, read back.
        validate_shard(
            read_parquet_bytes(shard.frames_bytes),
            read_parquet_bytes(shard.samples_bytes),
            dims,
            shard.samples_key,
        )
        _write_once(storage.join_uri(out_uri, shard.frames_key), shard.frames_bytes)
        _write_once(storage.join_uri(out_uri, shard.samples_key), shard.samples_bytes)
        shards.append(
            {
                "path": shard.samples_key,
                "frames_path": shard.frames_key,
                "num_rows": shard.num_rows,
                "num_frames": shard.num_frames,
                "bytes": len(shard.samples_bytes),
                "frames_bytes": len(shard.frames_bytes),
                "sha256": shard.sha256,
                "frames_sha256": shard.frames_sha256,
                "episodes": shard.episodes,
                # per row group byte ranges + sha256: lets readers verify part of a file
                "parts": file_parts(shard.samples_bytes),
                "frames_parts": file_parts(shard.frames_bytes, id_column="frame_id"),
            }
        )
        logger.info(
            "wrote %s (%d samples, %d frames, %.1f MiB)",
            shard.samples_key,
            shard.num_rows,
            shard.num_frames,
            (len(shard.samples_bytes) + len(shard.frames_bytes)) / 2**20,
        )
    manifest = mf.build_manifest(
        config=config,
        cameras=_camera_vocabulary(config, prepared),
        inputs_sha256=inputs_sha256,
        episodes_uri=episodes_uri,
        shards=shards,
        episodes=[_episode_entry(e, (events or {}).get(e.episode_id)) for e in prepared],
        quarantined=sorted(quarantined, key=lambda q: q["episode_id"]),
    )
    if not storage.write_bytes(manifest_uri, mf.encode(manifest), create_only=True):
        # Another run published first; fine if it is the same dataset (else this raises).
        unchanged = already_published(out_uri, config, inputs_sha256, time.perf_counter())
        if unchanged is not None:
            return unchanged
    return PrepareResult(
        manifest_uri=manifest_uri,
        num_samples=manifest["num_samples"],
        num_episodes=len(prepared),
        quarantined=manifest["quarantined"],
        published=True,
    )
