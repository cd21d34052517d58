"""The training-sample contract, declared once.

A shard is a pair of Parquet files written together:

* ``frames``  one row per (episode, camera, 10 Hz grid tick) that any sample references; each
  frame's JPEG is stored exactly once, however many windows use it.
* ``samples`` one row per 10 Hz sample; frames are referenced by ``frame_id`` (unique within the
  shard), so history/future windows cost a few integers instead of copies of images.

The Arrow schemas (writer), the pandera checks (validation) and the loader's tensor shapes are
all derived from the `FieldSpec` lists below. Shapes use symbolic dimensions resolved from
`PrepareConfig` (`V` cameras, `H` history frames, `F` future frames, `E` ego history steps,
`T` trajectory steps, `R` map raster size).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = "2"

#: Ego-history feature order (per step); the model scales speed by 1/33 and accel by 1/8.
EGO_HISTORY_FEATURES: tuple[str, ...] = ("speed_mps", "accel_mps2", "yaw_rate_rps", "curvature_1pm")
TRAJECTORY_FEATURES: tuple[str, ...] = ("x_m", "y_m")


@dataclass(frozen=True)
class FieldSpec:
    """One column: Arrow type, symbolic flattened shape and a one-line meaning."""

    name: str
    arrow_type: pa.DataType
    shape: tuple[str | int, ...]
    doc: str
    compressed: bool = True


FRAME_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("frame_id", pa.int64(), (), "id unique within the shard, referenced by samples"),
    FieldSpec("episode_id", pa.string(), (), "source episode"),
    FieldSpec("camera", pa.string(), (), "camera name from episode.json"),
    FieldSpec("grid_index", pa.int32(), (), "10 Hz grid tick (time = grid_index / reactive_hz)"),
    FieldSpec("timestamp_s", pa.float64(), (), "grid time on the episode clock"),
    FieldSpec("frame_time_s", pa.float64(), (), "time of the decoded frame chosen for the tick"),
    FieldSpec("jpeg", pa.binary(), (), "RGB frame at model resolution, JPEG", compressed=False),
)

SAMPLE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("episode_id", pa.string(), (), "source episode"),
    FieldSpec("grid_index", pa.int32(), (), "10 Hz grid tick of the sample"),
    FieldSpec("timestamp_s", pa.float64(), (), "sample time on the episode clock"),
    FieldSpec("cameras", pa.list_(pa.string()), ("V",), "camera names, view order of frame ids"),
    FieldSpec("current_frame_ids", pa.list_(pa.int64()), ("V",), "frames at the sample time"),
    FieldSpec(
        "history_frame_ids",
        pa.list_(pa.int64()),
        ("H", "V"),
        "1 Hz world-model history frames (offsets history_offsets_s), time-major",
    ),
    FieldSpec(
        "history_valid", pa.list_(pa.bool_()), ("H",), "history step present (ids -1 when not)"
    ),
    FieldSpec(
        "future_frame_ids",
        pa.list_(pa.int64()),
        ("F", "V"),
        "1 Hz future frames (offsets future_offsets_s), time-major; -1 when missing",
    ),
    FieldSpec("future_valid", pa.list_(pa.bool_()), ("F",), "future step present"),
    FieldSpec(
        "ego_history",
        pa.list_(pa.float32()),
        ("E", len(EGO_HISTORY_FEATURES)),
        "10 Hz ego state up to and including the sample time, oldest first",
    ),
    FieldSpec(
        "ego_history_valid",
        pa.list_(pa.bool_()),
        ("E",),
        "ego step inside the telemetry (padded steps hold the nearest recorded state)",
    ),
    FieldSpec(
        "future_trajectory",
        pa.list_(pa.float32()),
        ("T", len(TRAJECTORY_FEATURES)),
        "future (x, y) in the ego frame at the sample time (x forward, y left), metres",
    ),
    FieldSpec(
        "trajectory_valid",
        pa.list_(pa.bool_()),
        ("T",),
        "trajectory step inside the telemetry (invalid steps are (0, 0))",
    ),
    FieldSpec(
        "map_raster_png",
        pa.binary(),
        (),
        "map raster (channels = MAP_KINDS) around the ego pose, heading up, PNG",
        compressed=False,
    ),
    FieldSpec("map_valid", pa.bool_(), (), "False when the episode has no map (raster is zeros)"),
)


def arrow_schema(fields: tuple[FieldSpec, ...]) -> pa.Schema:
    return pa.schema(
        [pa.field(f.name, f.arrow_type, nullable=False, metadata={"doc": f.doc}) for f in fields],
        metadata={"autoe2e_schema_version": SCHEMA_VERSION},
    )


FRAME_SCHEMA = arrow_schema(FRAME_FIELDS)
SAMPLE_SCHEMA = arrow_schema(SAMPLE_FIELDS)


def resolve_shape(spec: FieldSpec, dims: dict[str, int]) -> tuple[int, ...]:
    """Concrete shape of a field given the symbolic dimensions (e.g. {"V": 4, "H": 4, ...})."""
    return tuple(d if isinstance(d, int) else dims[d] for d in spec.shape)


def uncompressed_columns(fields: tuple[FieldSpec, ...]) -> list[str]:
    """Columns written without compression (JPEG/PNG bytes gain nothing from zstd)."""
    return [f.name for f in fields if not f.compressed]
