"""The dataset manifest: the only thing readers trust.

Written last, after every shard, so a dataset without a manifest is simply unpublished. It
records what was written (rows, bytes, sha256 per file), how (PrepareConfig, contract and schema
versions) and from what (a fingerprint of all inputs), which is what makes re-runs idempotent:
same parameters + same inputs -> nothing to publish.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from autoe2e import storage
from autoe2e.config import PrepareConfig, to_dict
from autoe2e.contract import CONTRACT_VERSION, MAP_KINDS
from autoe2e.data.schema import EGO_HISTORY_FEATURES, SCHEMA_VERSION, TRAJECTORY_FEATURES

MANIFEST_FILE = "manifest.json"
#: Fields that decide whether an existing manifest already describes this run.
#: PrepareConfig fields that change how fast prepare runs, never what it writes; they stay out of
#: the manifest's identity so a re-run with more workers is still recognised as the same dataset.
EXECUTION_ONLY_FIELDS = frozenset({"workers", "decode_threads", "camera_threads"})


def output_parameters(config: PrepareConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(config).items() if k not in EXECUTION_ONLY_FIELDS}


IDENTITY_FIELDS = ("contract_version", "schema_version", "parameters", "inputs_sha256")


class ManifestError(ValueError):
    """The manifest is missing, unreadable or inconsistent; the message names it."""


def inputs_fingerprint(fingerprints: dict[str, str]) -> str:
    """One sha256 over every input file's relative path and content fingerprint."""
    blob = json.dumps(sorted(fingerprints.items()), separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def dataset_key(inputs_sha256: str, config: PrepareConfig) -> str:
    """Short content address of a dataset: the same inputs, parameters and contract always map
    to the same key, so a scheduled re-run with new episodes publishes next to the old dataset
    (published datasets are immutable) and an unchanged re-run finds the one it already wrote."""
    identity = {
        "contract_version": CONTRACT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "parameters": output_parameters(config),
        "inputs_sha256": inputs_sha256,
    }
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def dims(config: PrepareConfig) -> dict[str, int]:
    """Symbolic shape dimensions of the schema for this configuration (V is per sample)."""
    return {
        "H": len(config.history_offsets_s),
        "F": len(config.future_offsets_s),
        "E": config.ego_history_steps,
        "T": config.trajectory_steps,
        "R": config.map_raster_size,
        "C": len(MAP_KINDS),
    }


def build_manifest(
    *,
    config: PrepareConfig,
    cameras: list[str],
    inputs_sha256: str,
    episodes_uri: str,
    shards: list[dict[str, Any]],
    episodes: list[dict[str, Any]],
    quarantined: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "contract_version": CONTRACT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "parameters": output_parameters(config),
        "inputs_sha256": inputs_sha256,
        "episodes_uri": episodes_uri,
        "cameras": list(cameras),
        "dims": dims(config),
        "image_size": [config.image_height, config.image_width],
        "map_kinds": list(MAP_KINDS),
        "ego_history_features": list(EGO_HISTORY_FEATURES),
        "trajectory_features": list(TRAJECTORY_FEATURES),
        "num_samples": sum(int(s["num_rows"]) for s in shards),
        "num_episodes": len(episodes),
        "shards": shards,
        "episodes": episodes,
        "quarantined": quarantined,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(name) == b.get(name) for name in IDENTITY_FIELDS)


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of identity fields (and changed parameters) that differ, for error messages."""
    out = []
    for name in IDENTITY_FIELDS:
        if old.get(name) != new.get(name):
            if name == "parameters" and isinstance(old.get(name), dict):
                keys = sorted(
                    k
                    for k in set(old[name]) | set(new[name])
                    if old[name].get(k) != new[name].get(k)
                )
                out.append(f"parameters {keys}")
            else:
                out.append(name)
    return out


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def read_manifest(uri: str) -> dict[str, Any]:
    """Load and sanity-check a manifest; raise `ManifestError` naming ``uri``."""
    try:
        data = json.loads(storage.read_bytes(uri))
    except storage.StorageError as exc:
        raise ManifestError(f"cannot read manifest {uri}: {exc}; run `autoe2e prepare`") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {uri} is not valid JSON ({exc})") from exc
    missing = [
        k for k in ("schema_version", "shards", "episodes", "cameras", "dims") if k not in data
    ]
    if missing:
        raise ManifestError(f"manifest {uri} lacks {missing}; re-run `autoe2e prepare`")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(
            f"manifest {uri} has schema_version {data['schema_version']!r}, this code reads "
            f"{SCHEMA_VERSION!r}; re-run `autoe2e prepare` into a new location"
        )
    contract = data.get("contract_version", CONTRACT_VERSION)
    if contract != CONTRACT_VERSION:
        raise ManifestError(
            f"manifest {uri} was prepared under episode contract version {contract!r}, this "
            f"code reads {CONTRACT_VERSION!r}; re-run `autoe2e prepare` with this version"
        )
    return data
