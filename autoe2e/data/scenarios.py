"""Per-sample scenario labels from an episode's optional ground-truth events.

Why: a planner's average error hides whether it handles the situations that need its cameras
(a lead vehicle braking, stopping and starting at a light, an obstacle in the lane, a bus
that crosses from a side road or one that waits there). Episodes
may carry their events in ``scenario.json`` (the synthetic world writes one); `autoe2e prepare`
copies them into the manifest's per-episode entry as the optional field ``events``, so
evaluation can label every sample from the manifest and the sample's timestamp alone. Nothing
in the training-sample contract changes: real drives without annotations simply have no
``events`` and their labels are None.

Event format (scenario.json and manifest alike): ``kind`` (curve, lead_braking, stop,
obstacle, crossing_vehicle, waiting_vehicle), ``start_time_s`` / ``end_time_s`` on the episode
clock, where null means the event began before the episode (start) or was still going at its
end (end); the manifest keeps any further scalar fields of an event under ``detail``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from autoe2e import storage

logger = logging.getLogger(__name__)

__all__ = [
    "KIND_LABELS",
    "SCENARIO_FILE",
    "SCENARIO_LABELS",
    "manifest_events",
    "manifest_labels",
    "read_episode_events",
    "sample_labels",
]

#: Optional file in a raw episode folder with the episode's ground-truth events.
SCENARIO_FILE = "scenario.json"
#: Every label a sample can get; "straight" means no event applies.
SCENARIO_LABELS = (
    "straight",
    "curve",
    "lead_braking",
    "stop_start",
    "obstacle",
    "crossing_vehicle",
    "waiting_vehicle",
)
#: Event kind -> label. "s_bend" and "lead_brake" are the kinds of scenario.json files written
#: before the kinds were unified; they are still understood.
KIND_LABELS: dict[str, str] = {
    "curve": "curve",
    "s_bend": "curve",
    "lead_braking": "lead_braking",
    "lead_brake": "lead_braking",
    "stop": "stop_start",
    "obstacle": "obstacle",
    "crossing_vehicle": "crossing_vehicle",
    "waiting_vehicle": "waiting_vehicle",
}
_TIME_KEYS = ("start_time_s", "end_time_s")


def _time(value: Any) -> float | None:
    """A finite number of seconds or None; anything else is a malformed event."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"event time {value!r} is not a finite number or null")
    return float(value)


def manifest_events(scenario: Any) -> list[dict[str, Any]]:
    """The events of a parsed scenario.json in manifest form: kind, start/end times and, when
    there is any, a ``detail`` dict of the event's other scalar fields (nested values are
    dropped: the manifest is read by every loader and should stay small).

    Raises ValueError when `scenario` is not an object with an ``events`` list, or an event
    lacks a string ``kind`` or has a time that is not a number or null.
    """
    if not isinstance(scenario, dict) or not isinstance(scenario.get("events"), list):
        raise ValueError('expected an object with an "events" list')
    out = []
    for i, event in enumerate(scenario["events"]):
        if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
            raise ValueError(f'event {i} is not an object with a string "kind"')
        try:
            entry: dict[str, Any] = {
                "kind": event["kind"],
                **{key: _time(event.get(key)) for key in _TIME_KEYS},
            }
        except ValueError as exc:
            raise ValueError(f"event {i} ({event['kind']}): {exc}") from exc
        detail = {
            key: value
            for key, value in event.items()
            if key not in ("kind", *_TIME_KEYS)
            and (value is None or isinstance(value, str | int | float | bool))
        }
        if detail:
            entry["detail"] = detail
        out.append(entry)
    return out


def read_episode_events(episode_uri: str) -> list[dict[str, Any]] | None:
    """Manifest events from ``<episode_uri>/scenario.json``; None when the episode has none.

    The file is optional and only feeds evaluation labels, so an unreadable or malformed one is
    logged and ignored rather than quarantining an episode whose samples are fine.
    """
    uri = storage.join_uri(episode_uri, SCENARIO_FILE)
    try:
        if not storage.exists(uri):
            return None
        return manifest_events(json.loads(storage.read_bytes(uri)))
    except (OSError, ValueError) as exc:
        # StorageError is an OSError; JSONDecodeError and UnicodeDecodeError are ValueErrors.
        logger.warning("ignoring %s: %s (the episode gets no scenario labels)", uri, exc)
        return None


def sample_labels(
    events: list[dict], timestamps_s: Sequence[float], horizon_s: float = 3.0
) -> list[tuple[str, ...]]:
    """Labels per sample: those of the events whose [start_time_s, end_time_s] overlaps the
    sample's future window [t, t + horizon_s], in `SCENARIO_LABELS` order; ("straight",) when
    none does. A null start counts as -inf, a null end as +inf; kinds without a label are
    ignored (an annotation tool may know more kinds than evaluation does).
    """
    if not (horizon_s >= 0 and math.isfinite(horizon_s)):
        raise ValueError(f"horizon_s={horizon_s!r} must be a finite number >= 0")
    t = np.asarray(timestamps_s, dtype=np.float64).reshape(-1)
    hits = {label: np.zeros(len(t), dtype=bool) for label in SCENARIO_LABELS[1:]}
    for event in events:
        label = KIND_LABELS.get(event.get("kind", ""))
        if label is None:
            continue
        start, end = (_time(event.get(key)) for key in _TIME_KEYS)
        lo = -math.inf if start is None else start
        hi = math.inf if end is None else end
        hits[label] |= (lo <= t + horizon_s) & (hi >= t)
    out = []
    for i in range(len(t)):
        labels = tuple(label for label in SCENARIO_LABELS[1:] if hits[label][i])
        out.append(labels or ("straight",))
    return out


def manifest_labels(
    manifest: dict, episode_id: str, timestamps_s: Sequence[float]
) -> list[tuple[str, ...]] | None:
    """`sample_labels` (3 s horizon) for samples of `episode_id` from the events its manifest
    entry carries; None when the manifest has no events for that episode (not annotated, or
    not in this manifest), so callers can report such samples as unlabelled."""
    for entry in manifest.get("episodes", []):
        if entry.get("episode_id") == episode_id:
            events = entry.get("events")
            return None if events is None else sample_labels(events, timestamps_s)
    return None
