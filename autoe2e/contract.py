"""The raw-episode contract: what a driving team brings to the pipeline.

Declared once here and used by the synthetic world (writer), `prepare` (reader) and the docs::

    <episodes_root>/<episode_id>/
      episode.json        {"episode_id": str, "cameras": [names], "camera_fps": 30,
                           "camera_info": {name: {"intrinsics": {...}, "extrinsics": {...},
                                                  "start_time_s": float}}}   (camera_info optional)
      cameras/<name>.mp4  one MP4 per camera; frame time = pts seconds + start_time_s
      ego.parquet         EGO_COLUMNS, timestamp_s on the same clock, at least 10 Hz
      map.parquet         optional MAP_COLUMNS road polylines in the same world frame

Every violation raises `EpisodeContractError` naming the episode, the file and the fix, so the
caller can quarantine that episode and keep going with the others.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

CONTRACT_VERSION = "1"

EPISODE_JSON = "episode.json"
EGO_FILE = "ego.parquet"
MAP_FILE = "map.parquet"
CAMERA_DIR = "cameras"

#: Ego telemetry columns, all on the cameras' clock, world frame in metres / radians.
EGO_COLUMNS: dict[str, pa.DataType] = {
    "timestamp_s": pa.float64(),
    "x_m": pa.float64(),
    "y_m": pa.float64(),
    "yaw_rad": pa.float64(),
    "speed_mps": pa.float64(),
    "accel_mps2": pa.float64(),
    "yaw_rate_rps": pa.float64(),
    "curvature_1pm": pa.float64(),
}
#: Minimum telemetry rate the contract promises (the planner runs at 10 Hz).
MIN_EGO_RATE_HZ = 10.0

#: Optional map polylines, one row per polyline.
MAP_COLUMNS: dict[str, pa.DataType] = {
    "polyline_id": pa.int64(),
    "kind": pa.string(),
    "x_m": pa.list_(pa.float64()),
    "y_m": pa.list_(pa.float64()),
}
#: Polyline kinds the map raster knows how to draw, in raster channel order.
MAP_KINDS: tuple[str, ...] = ("road_edge", "lane_line", "centerline")


class EpisodeContractError(ValueError):
    """An episode does not follow the raw-episode contract; the message names input and fix."""

    def __init__(self, episode: str, what: str, fix: str) -> None:
        self.episode = episode
        self.what = what
        self.fix = fix
        super().__init__(f"episode {episode!r}: {what}. Fix: {fix}")


@dataclass
class CameraIntrinsics:
    """Pinhole intrinsics in pixels for the recorded resolution."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass
class CameraExtrinsics:
    """Camera mount in the ego frame (x forward, y left, z up; yaw positive to the left)."""

    x_m: float = 0.0
    y_m: float = 0.0
    z_m: float = 1.5
    yaw_rad: float = 0.0
    pitch_rad: float = 0.0
    roll_rad: float = 0.0


@dataclass
class CameraInfo:
    intrinsics: CameraIntrinsics | None = None
    extrinsics: CameraExtrinsics | None = None
    start_time_s: float = 0.0


@dataclass
class EpisodeMeta:
    """Parsed `episode.json`."""

    episode_id: str
    cameras: list[str]
    camera_fps: float = 30.0
    camera_info: dict[str, CameraInfo] = field(default_factory=dict)

    def start_time_s(self, camera: str) -> float:
        info = self.camera_info.get(camera)
        return info.start_time_s if info else 0.0

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        if not data["camera_info"]:
            del data["camera_info"]
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = EPISODE_JSON) -> EpisodeMeta:
        """Parse and check `episode.json`; `source` names the file in errors."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EpisodeContractError(
                source, f"{EPISODE_JSON} is not valid JSON ({exc})", "write valid UTF-8 JSON"
            ) from exc
        if not isinstance(raw, dict):
            raise EpisodeContractError(source, f"{EPISODE_JSON} is not an object", "use {...}")
        episode_id = raw.get("episode_id")
        if not isinstance(episode_id, str) or not episode_id:
            raise EpisodeContractError(
                source, "episode_id missing or not a string", 'add "episode_id": "<id>"'
            )
        cameras = raw.get("cameras")
        if (
            not isinstance(cameras, list)
            or not cameras
            or not all(isinstance(c, str) and c for c in cameras)
        ):
            raise EpisodeContractError(
                episode_id, "cameras must be a non-empty list of names", 'add "cameras": ["front"]'
            )
        if len(set(cameras)) != len(cameras):
            raise EpisodeContractError(
                episode_id, f"duplicate camera names in {cameras}", "list each camera once"
            )
        fps = raw.get("camera_fps", 30)
        if not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
            raise EpisodeContractError(
                episode_id, f"camera_fps={fps!r} is not a positive number", "set camera_fps: 30"
            )
        info: dict[str, CameraInfo] = {}
        for name, item in (raw.get("camera_info") or {}).items():
            if name not in cameras:
                raise EpisodeContractError(
                    episode_id,
                    f"camera_info names camera {name!r} that is not in cameras {cameras}",
                    "add it to cameras or remove its camera_info entry",
                )
            try:
                info[name] = CameraInfo(
                    intrinsics=CameraIntrinsics(**item["intrinsics"])
                    if item.get("intrinsics")
                    else None,
                    extrinsics=CameraExtrinsics(**item["extrinsics"])
                    if item.get("extrinsics")
                    else None,
                    start_time_s=float(item.get("start_time_s", 0.0)),
                )
            except (TypeError, ValueError, AttributeError) as exc:
                raise EpisodeContractError(
                    episode_id,
                    f"camera_info[{name!r}] is malformed ({exc})",
                    "use intrinsics {fx, fy, cx, cy, width, height}, "
                    "extrinsics {x_m, y_m, z_m, yaw_rad, pitch_rad, roll_rad}, start_time_s",
                ) from exc
        return cls(
            episode_id=episode_id, cameras=list(cameras), camera_fps=float(fps), camera_info=info
        )


def ego_schema() -> pa.Schema:
    return pa.schema([pa.field(name, dtype, nullable=False) for name, dtype in EGO_COLUMNS.items()])


def map_schema() -> pa.Schema:
    return pa.schema([pa.field(name, dtype, nullable=False) for name, dtype in MAP_COLUMNS.items()])


def check_ego_table(table: pa.Table, episode_id: str) -> None:
    """Check telemetry columns, finiteness, strictly increasing time and the minimum rate."""
    import numpy as np

    missing = [c for c in EGO_COLUMNS if c not in table.column_names]
    if missing:
        raise EpisodeContractError(
            episode_id, f"{EGO_FILE} lacks columns {missing}", f"write all of {list(EGO_COLUMNS)}"
        )
    if table.num_rows < 2:
        raise EpisodeContractError(
            episode_id, f"{EGO_FILE} has {table.num_rows} rows", "record at least 10 Hz telemetry"
        )
    for name in EGO_COLUMNS:
        values = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise EpisodeContractError(
                episode_id,
                f"{EGO_FILE} column {name} has {int(bad.sum())} NaN/inf values "
                f"(first at row {first})",
                "drop or repair those rows before export",
            )
    t = np.asarray(table.column("timestamp_s").to_numpy(), dtype=np.float64)
    steps = np.diff(t)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        kind = "duplicated" if steps[row - 1] == 0 else "non-monotonic"
        raise EpisodeContractError(
            episode_id,
            f"{EGO_FILE} timestamp_s is {kind} at row {row} "
            f"({float(t[row - 1])} -> {float(t[row])})",
            "sort telemetry by time and drop duplicate timestamps",
        )
    median_step = float(np.median(steps))
    if median_step > 1.0 / MIN_EGO_RATE_HZ + 1e-6:
        raise EpisodeContractError(
            episode_id,
            f"{EGO_FILE} median rate is {1.0 / median_step:.1f} Hz",
            f"record telemetry at >= {MIN_EGO_RATE_HZ:.0f} Hz",
        )


def check_map_table(table: pa.Table, episode_id: str) -> None:
    missing = [c for c in MAP_COLUMNS if c not in table.column_names]
    if missing:
        raise EpisodeContractError(
            episode_id, f"{MAP_FILE} lacks columns {missing}", f"write all of {list(MAP_COLUMNS)}"
        )
