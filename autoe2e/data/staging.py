"""Per-episode staging: prepare episodes one at a time, publish them together later.

An orchestrator (Flyte ``map_task``) fans `stage_episode` out over the episodes that
`list_episodes` found, then calls `publish_staged` once. Each staged result lives under a key
built from the episode's content fingerprint, the contract/schema versions and the output
parameters, so a nightly re-run finds unchanged episodes already staged (and the orchestrator's
cache, keyed on the same inputs, does not even start them): only new or changed episodes are
decoded again. The single-process `prepare_dataset` path is unchanged and publishes the same
dataset (same shards, same manifest identity) from the same inputs. An episode's optional
``scenario.json`` events are read when it is staged and kept in ``staged.json``, so the
published manifest carries them exactly as `prepare_dataset` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from autoe2e import storage
from autoe2e.config import PrepareConfig
from autoe2e.contract import CONTRACT_VERSION
from autoe2e.data import manifest as mf
from autoe2e.data.episode import EpisodeSamples
from autoe2e.data.prepare import (
    PrepareError,
    PrepareResult,
    _prepare_or_quarantine,
    already_published,
    check_writable,
    discover_episodes,
    publish_outcomes,
    with_camera_threads,
)
from autoe2e.data.scenarios import read_episode_events
from autoe2e.data.schema import FRAME_SCHEMA, SAMPLE_SCHEMA, SCHEMA_VERSION
from autoe2e.data.shards import read_parquet_bytes
from autoe2e.workers import worker_pool

logger = logging.getLogger(__name__)

__all__ = [
    "STAGING_DIR",
    "STAGING_FORMAT",
    "EpisodeListing",
    "StagedEpisode",
    "episode_config",
    "list_episodes",
    "prepare_staged",
    "publish_staged",
    "stage_episode",
    "staging_key",
]

#: Folder next to the published dataset that holds the per-episode results.
STAGING_DIR = "dataset-staging"
#: Bump when the layout of a staged episode changes (old staged results are then ignored).
#: 3: staged.json carries the episode's scenario events.
STAGING_FORMAT = "3"
FRAMES_FILE = "frames.parquet"
SAMPLES_FILE = "samples.parquet"
#: Written last: its presence marks a complete staged episode (an interrupted stage is redone).
DONE_FILE = "staged.json"
QUARANTINE_FILE = "quarantine.json"


@dataclass
class EpisodeListing:
    """The episodes to prepare, each with a fingerprint of its own files."""

    episode_uris: list[str]
    fingerprints: list[str]
    #: Identity of the whole input root, computed exactly as `prepare_dataset` does, so both
    #: paths recognise each other's publication of the same inputs.
    inputs_sha256: str


def _episode_name(uri: str) -> str:
    return uri.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def list_episodes(episodes_uri: str) -> EpisodeListing:
    """Episode URIs under the root and a content fingerprint per episode, from one listing.

    The fingerprint is a sha256 over the episode's relative file paths and their content
    fingerprints (sha256 locally, size + ETag on S3), so it changes exactly when a file of that
    episode is added, removed or rewritten.
    """
    episode_uris = discover_episodes(episodes_uri)
    try:
        files = storage.file_fingerprints(episodes_uri)
    except storage.StorageError as exc:
        raise PrepareError(f"cannot fingerprint inputs under {episodes_uri}: {exc}") from exc
    per_episode: dict[str, dict[str, str]] = {}
    for relative, fingerprint in files.items():
        name, _, rest = relative.partition("/")
        per_episode.setdefault(name, {})[rest] = fingerprint
    fingerprints = [
        mf.inputs_fingerprint(per_episode.get(_episode_name(uri), {})) for uri in episode_uris
    ]
    return EpisodeListing(episode_uris, fingerprints, mf.inputs_fingerprint(files))


#: PrepareConfig fields that cannot change one staged episode: how fast it runs, and how
#: episodes are grouped into shards later.
NOT_PER_EPISODE_FIELDS = mf.EXECUTION_ONLY_FIELDS | {"shard_target_bytes", "row_group_target_bytes"}


def episode_config(config: PrepareConfig) -> PrepareConfig:
    """``config`` with every field in `NOT_PER_EPISODE_FIELDS` reset to its default.

    An orchestrator passes this to the cached per-episode task, whose cache key is built from
    its inputs: a nightly run with more workers or bigger shards then still hits the cache.
    """
    defaults = PrepareConfig()
    return dataclasses.replace(
        config, **{name: getattr(defaults, name) for name in NOT_PER_EPISODE_FIELDS}
    )


def staging_key(fingerprint: str, config: PrepareConfig) -> str:
    """sha256 of everything that decides a staged episode's content."""
    identity = {
        "fingerprint": fingerprint,
        "contract_version": CONTRACT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "staging_format": STAGING_FORMAT,
        "parameters": mf.output_parameters(episode_config(config)),
    }
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def stage_episode(
    episode_uri: str, fingerprint: str, config: PrepareConfig, staging_uri: str
) -> str:
    """Prepare one episode (or record why it is quarantined) under a content-addressed folder.

    Returns the folder's URI. An already complete folder is reused without decoding anything,
    which makes re-runs and retries after an interruption cheap.
    """
    if not fingerprint:
        raise PrepareError(f"no fingerprint given for {episode_uri}; list it with list_episodes")
    config.validate()
    folder = storage.join_uri(
        staging_uri, f"{_episode_name(episode_uri)}-{staging_key(fingerprint, config)[:16]}"
    )
    for marker in (DONE_FILE, QUARANTINE_FILE):
        if storage.exists(storage.join_uri(folder, marker)):
            logger.info("%s already staged at %s; not prepared again", episode_uri, folder)
            return folder
    outcome = _prepare_or_quarantine(episode_uri, config)
    if isinstance(outcome, dict):
        storage.write_bytes(storage.join_uri(folder, QUARANTINE_FILE), json.dumps(outcome).encode())
        return folder
    storage.write_bytes(storage.join_uri(folder, FRAMES_FILE), _table_bytes(outcome.frames))
    storage.write_bytes(storage.join_uri(folder, SAMPLES_FILE), _table_bytes(outcome.samples))
    meta = {
        "episode_uri": episode_uri,
        "fingerprint": fingerprint,
        "episode_id": outcome.episode_id,
        "cameras": outcome.cameras,
        "num_samples": outcome.num_samples,
        "num_candidates": outcome.num_candidates,
        "drop_reasons": outcome.drop_reasons,
        # In-memory size as prepared, so shards are planned exactly like `prepare_dataset`
        # plans them without reading the tables back.
        "nbytes": outcome.nbytes,
        "seconds": outcome.seconds,
    }
    events = read_episode_events(episode_uri)
    if events is not None:
        meta["events"] = events
    storage.write_bytes(storage.join_uri(folder, DONE_FILE), json.dumps(meta).encode())
    logger.info("staged %s (%d samples) at %s", episode_uri, outcome.num_samples, folder)
    return folder


def _read_table(uri: str, schema: pa.Schema) -> pa.Table:
    # Parquet renames list children ("item" -> "element"); casting back to the declared schema
    # makes the published shards byte-identical to those of `prepare_dataset`.
    return read_parquet_bytes(storage.read_bytes(uri)).cast(schema)


@dataclass
class StagedEpisode:
    """A staged episode's bookkeeping; its tables are read only by `load` (when its shard is
    written), so publishing never holds more than one shard's episodes in memory."""

    folder: str
    episode_id: str
    cameras: list[str]
    num_samples: int
    num_candidates: int
    drop_reasons: dict[str, int]
    nbytes: int
    seconds: float
    #: Scenario events for the manifest; None when the episode has no scenario.json.
    events: list[dict] | None = None

    @property
    def num_dropped(self) -> int:
        return self.num_candidates - self.num_samples

    def load(self) -> EpisodeSamples:
        samples = EpisodeSamples(
            episode_id=self.episode_id,
            cameras=list(self.cameras),
            frames=_read_table(storage.join_uri(self.folder, FRAMES_FILE), FRAME_SCHEMA),
            samples=_read_table(storage.join_uri(self.folder, SAMPLES_FILE), SAMPLE_SCHEMA),
            num_candidates=self.num_candidates,
            drop_reasons=dict(self.drop_reasons),
            seconds=self.seconds,
        )
        if samples.num_samples != self.num_samples:
            raise PrepareError(
                f"staged episode {self.folder} holds {samples.num_samples} samples but its "
                f"{DONE_FILE} records {self.num_samples}; delete the folder and re-run"
            )
        return samples


def _read_staged(folder: str) -> StagedEpisode | dict[str, str]:
    quarantine_uri = storage.join_uri(folder, QUARANTINE_FILE)
    if storage.exists(quarantine_uri):
        return json.loads(storage.read_bytes(quarantine_uri))
    done_uri = storage.join_uri(folder, DONE_FILE)
    if not storage.exists(done_uri):
        raise PrepareError(
            f"staged episode {folder} is missing or incomplete (no {DONE_FILE}); it may have been "
            "deleted after the orchestrator cached it: re-run with the cache overwritten"
        )
    meta = json.loads(storage.read_bytes(done_uri))
    return StagedEpisode(
        folder=folder,
        episode_id=meta["episode_id"],
        cameras=list(meta["cameras"]),
        num_samples=int(meta["num_samples"]),
        num_candidates=int(meta["num_candidates"]),
        drop_reasons=dict(meta["drop_reasons"]),
        nbytes=int(meta["nbytes"]),
        seconds=float(meta["seconds"]),
        events=meta.get("events"),
    )


def publish_staged(
    staged_uris: list[str],
    out_uri: str,
    config: PrepareConfig,
    *,
    inputs_sha256: str,
    episodes_uri: str = "",
) -> PrepareResult:
    """Read the staged episodes back and publish shards + manifest exactly like `prepare_dataset`.

    Skips reading anything when ``out_uri`` already publishes this dataset (same parameters and
    ``inputs_sha256``), so an unchanged nightly run publishes nothing.
    """
    config.validate()
    check_writable(out_uri)
    unchanged = already_published(out_uri, config, inputs_sha256, time.perf_counter())
    if unchanged is not None:
        return unchanged
    return _publish_folders(staged_uris, out_uri, config, inputs_sha256, episodes_uri)


def _publish_folders(
    staged_uris: list[str],
    out_uri: str,
    config: PrepareConfig,
    inputs_sha256: str,
    episodes_uri: str,
) -> PrepareResult:
    outcomes = [_read_staged(uri) for uri in staged_uris]
    events = {
        o.episode_id: o.events
        for o in outcomes
        if isinstance(o, StagedEpisode) and o.events is not None
    }
    result = publish_outcomes(
        outcomes,
        out_uri,
        config,
        inputs_sha256=inputs_sha256,
        episodes_uri=episodes_uri,
        events=events,
    )
    logger.info(
        "published %d samples from %d staged episodes (%d quarantined)",
        result.num_samples,
        result.num_episodes,
        len(result.quarantined),
    )
    return result


def prepare_staged(
    listing: EpisodeListing,
    out_uri: str,
    config: PrepareConfig,
    *,
    staging_uri: str,
    episodes_uri: str,
    max_workers: int = 1,
) -> PrepareResult:
    """The orchestrator's path in one process: stage every episode (``max_workers`` processes),
    then publish. Memory holds one shard's episodes at a time, and a re-run with new episodes
    decodes only those; an unchanged re-run returns before staging anything."""
    started = time.perf_counter()
    config.validate()
    check_writable(out_uri)
    unchanged = already_published(out_uri, config, listing.inputs_sha256, started)
    if unchanged is not None:
        return unchanged
    count = len(listing.episode_uris)
    workers = max(1, min(max_workers, count))
    run_config = with_camera_threads(config, (os.cpu_count() or 1) // workers)
    args = (listing.episode_uris, listing.fingerprints, [run_config] * count, [staging_uri] * count)
    if workers > 1:
        with worker_pool(workers) as pool:
            folders = list(pool.map(stage_episode, *args))
    else:
        folders = list(map(stage_episode, *args))
    result = _publish_folders(folders, out_uri, config, listing.inputs_sha256, episodes_uri)
    result.seconds = time.perf_counter() - started
    return result
