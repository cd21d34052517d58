"""The raw-episode contract rejects bad inputs with messages that name the input and the fix."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from autoe2e.contract import (
    EGO_COLUMNS,
    EpisodeContractError,
    EpisodeMeta,
    check_ego_table,
    check_map_table,
)


def _ego(n: int = 50, hz: float = 30.0) -> dict[str, np.ndarray]:
    t = np.arange(n) / hz
    data = {name: np.zeros(n) for name in EGO_COLUMNS}
    data["timestamp_s"] = t
    data["x_m"] = 10.0 * t
    data["speed_mps"] = np.full(n, 10.0)
    return data


def test_episode_json_round_trip_keeps_camera_info() -> None:
    text = json.dumps(
        {
            "episode_id": "ep1",
            "cameras": ["front", "rear"],
            "camera_fps": 30,
            "camera_info": {
                "rear": {
                    "intrinsics": {
                        "fx": 50,
                        "fy": 50,
                        "cx": 32,
                        "cy": 24,
                        "width": 64,
                        "height": 48,
                    },
                    "extrinsics": {"yaw_rad": math.pi},
                    "start_time_s": 0.25,
                }
            },
        }
    )
    meta = EpisodeMeta.from_json(text)
    assert meta.cameras == ["front", "rear"]
    assert meta.start_time_s("rear") == 0.25
    assert meta.start_time_s("front") == 0.0
    assert meta.camera_info["rear"].extrinsics.yaw_rad == pytest.approx(math.pi)
    again = EpisodeMeta.from_json(meta.to_json())
    assert again == meta


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"cameras": ["front"]}), "episode_id"),
        (json.dumps({"episode_id": "e", "cameras": []}), "non-empty list"),
        (json.dumps({"episode_id": "e", "cameras": ["a", "a"]}), "duplicate camera"),
        (json.dumps({"episode_id": "e", "cameras": ["a"], "camera_fps": -1}), "camera_fps"),
        (
            json.dumps({"episode_id": "e", "cameras": ["a"], "camera_info": {"b": {}}}),
            "not in cameras",
        ),
        (
            json.dumps(
                {
                    "episode_id": "e",
                    "cameras": ["a"],
                    "camera_info": {"a": {"intrinsics": {"fx": 1}}},
                }
            ),
            "malformed",
        ),
    ],
)
def test_bad_episode_json_names_the_problem(payload: str, needle: str) -> None:
    with pytest.raises(EpisodeContractError, match=needle) as info:
        EpisodeMeta.from_json(payload, source="root/ep")
    assert "Fix:" in str(info.value)


def test_valid_ego_table_passes() -> None:
    check_ego_table(pa.table(_ego()), "ep")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("yaw_rate_rps"), "lacks columns"),
        (lambda d: d["speed_mps"].__setitem__(7, np.nan), "NaN/inf"),
        (lambda d: d["timestamp_s"].__setitem__(5, d["timestamp_s"][3]), "non-monotonic"),
        (lambda d: d["timestamp_s"].__setitem__(5, d["timestamp_s"][4]), "duplicated"),
    ],
)
def test_broken_telemetry_is_rejected(mutate, needle: str) -> None:
    data = _ego()
    mutate(data)
    with pytest.raises(EpisodeContractError, match=needle):
        check_ego_table(pa.table(data), "ep")


def test_too_slow_telemetry_is_rejected() -> None:
    with pytest.raises(EpisodeContractError, match="10 Hz"):
        check_ego_table(pa.table(_ego(hz=5.0)), "ep")


def test_map_table_needs_its_columns() -> None:
    with pytest.raises(EpisodeContractError, match="map.parquet lacks"):
        check_map_table(pa.table({"kind": ["road_edge"]}), "ep")
