"""Render map polylines into an ego-centred, heading-up raster (one channel per MAP_KINDS).

Geometry: ego x (forward) points up the image and ego y (left) points left; the ego sits in the
centre column about 1/4 of the raster above the bottom, so three quarters of the view look
ahead. Points are transformed with numpy for all polylines at once; only polylines whose
bounding box touches the raster are drawn (PIL ImageDraw). The raster is stored as one
grayscale PNG with the channels stacked vertically ([C*R, R]), which works for any channel
count and decodes with any PNG reader.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from autoe2e.contract import MAP_FILE, MAP_KINDS, EpisodeContractError, check_map_table

#: Fraction of the raster height between the ego and the bottom edge.
EGO_FROM_BOTTOM = 0.25


@dataclass
class MapPolylines:
    """All polylines flattened: points [N, 2], polyline start offsets and channel per polyline."""

    points: np.ndarray
    starts: np.ndarray
    channels: np.ndarray

    @property
    def num_polylines(self) -> int:
        return len(self.starts)


def load_map(path: str, episode_id: str) -> MapPolylines:
    """Read ``map.parquet``; unknown kinds are ignored, malformed rows raise a contract error."""
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise EpisodeContractError(
            episode_id, f"{MAP_FILE} is unreadable ({exc})", "rewrite it as Parquet"
        ) from exc
    check_map_table(table, episode_id)
    kinds = table.column("kind").to_pylist()
    xs = table.column("x_m").to_pylist()
    ys = table.column("y_m").to_pylist()
    points, starts, channels = [], [], []
    offset = 0
    for row, (kind, x, y) in enumerate(zip(kinds, xs, ys, strict=True)):
        if kind not in MAP_KINDS:
            continue
        if x is None or y is None or len(x) != len(y):
            raise EpisodeContractError(
                episode_id,
                f"{MAP_FILE} row {row} has x_m/y_m of different lengths",
                "write one y per x",
            )
        if len(x) < 2:
            continue
        xy = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
        if not np.isfinite(xy).all():
            raise EpisodeContractError(
                episode_id, f"{MAP_FILE} row {row} has NaN/inf points", "drop those points"
            )
        points.append(xy)
        starts.append(offset)
        channels.append(MAP_KINDS.index(kind))
        offset += len(xy)
    return MapPolylines(
        points=np.concatenate(points) if points else np.zeros((0, 2)),
        starts=np.asarray(starts, dtype=np.int64),
        channels=np.asarray(channels, dtype=np.int64),
    )


def render_raster(
    polylines: MapPolylines | None,
    x: float,
    y: float,
    yaw: float,
    size: int,
    resolution_m: float,
) -> np.ndarray:
    """uint8 [C, size, size] raster (255 on polylines) around the ego pose; zeros if no map."""
    raster = np.zeros((len(MAP_KINDS), size, size), dtype=np.uint8)
    if polylines is None or polylines.num_polylines == 0:
        return raster
    dx, dy = polylines.points[:, 0] - x, polylines.points[:, 1] - y
    cos, sin = np.cos(yaw), np.sin(yaw)
    fwd, left = cos * dx + sin * dy, -sin * dx + cos * dy
    col = size / 2.0 - left / resolution_m
    row = size * (1.0 - EGO_FROM_BOTTOM) - fwd / resolution_m
    # Cull polylines whose bounding box misses the raster (conservative: keeps crossing lines).
    lo_c = np.minimum.reduceat(col, polylines.starts)
    hi_c = np.maximum.reduceat(col, polylines.starts)
    lo_r = np.minimum.reduceat(row, polylines.starts)
    hi_r = np.maximum.reduceat(row, polylines.starts)
    visible = (hi_c >= 0) & (lo_c < size) & (hi_r >= 0) & (lo_r < size)
    ends = np.append(polylines.starts[1:], len(col))
    images = [Image.new("L", (size, size), 0) for _ in MAP_KINDS]
    draws = [ImageDraw.Draw(image) for image in images]
    for i in np.flatnonzero(visible):
        seg = slice(polylines.starts[i], ends[i])
        coords = list(zip(col[seg].tolist(), row[seg].tolist(), strict=True))
        draws[polylines.channels[i]].line(coords, fill=255, width=1)
    for c, image in enumerate(images):
        raster[c] = np.asarray(image)
    return raster


def encode_png(raster: np.ndarray) -> bytes:
    """[C, R, R] uint8 -> grayscale PNG of shape [C*R, R]."""
    channels, height, width = raster.shape
    buffer = io.BytesIO()
    Image.fromarray(raster.reshape(channels * height, width), mode="L").save(
        buffer, format="PNG", compress_level=6
    )
    return buffer.getvalue()


def decode_png(data: bytes, channels: int) -> np.ndarray:
    """Inverse of `encode_png`: uint8 [C, R, R]."""
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("L"))
    return array.reshape(channels, array.shape[0] // channels, array.shape[1])
