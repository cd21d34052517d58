"""The static world the cameras see: a top-down ground texture, roadside scenery and a skyline.

Why a pre-rasterised texture: every camera pixel below the horizon sees one ground point, so a
frame reduces to a transform of precomputed ground points and one numpy gather. The texture is
drawn once per episode with PIL (road, gravel shoulders, solid edge lines, dashed centre line,
stop line, a side road with its give-way line, grass with multi-scale noise so motion is
visible) and stored as packed RGBA uint32 with a small mip pyramid, so distant ground is sampled
from pre-averaged texels and does not shimmer. Scenery (marker posts, trees) gives parallax;
the skyline (hills) moves with yaw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from autoe2e.synthetic.road import EGO_LANE_OFFSET_M, LANE_WIDTH_M, ROAD_HALF_WIDTH_M, Road
from autoe2e.synthetic.traffic import (
    GIVE_WAY_ARM_M,
    JUNCTION_ZONE_M,
    SIDE_ROAD_ARM_M,
    SIDE_ROAD_HALF_WIDTH_M,
    side_road_axes,
)

#: Surface classes drawn into the class raster, then coloured through a noise-modulated palette.
GRASS, GRAVEL, ASPHALT, PAINT = 0, 1, 2, 3
SURFACE_COLOURS = np.array(
    [(78, 118, 52), (140, 128, 104), (92, 92, 96), (228, 228, 220)], dtype=np.float64
)
#: How strongly the noise modulates each surface (grass varies most).
SURFACE_NOISE = np.array([0.55, 0.35, 0.25, 0.08])
HAZE_COLOUR = (190, 205, 220)
MARGIN_M = 60.0
MAX_TEXELS = 18_000_000
MIN_RESOLUTION_M = 0.15
MIP_LEVELS = 4
EDGE_LINE_OFFSET_M = ROAD_HALF_WIDTH_M - 0.25
LINE_WIDTH_M = 0.3
DASH_M, DASH_PERIOD_M = 3.0, 9.0
SHOULDER_M = 1.2
PANORAMA_WIDTH = 2048  # a power of two: columns wrap with a bit mask
PANORAMA_HEIGHT = 256
PANORAMA_MAX_ELEVATION = np.radians(60.0)
#: Hills stay below this elevation; above it the sky depends on elevation only.
HILL_MAX_ELEVATION_DEG = 8.0
HILL_ROWS = (
    int(np.ceil(np.radians(HILL_MAX_ELEVATION_DEG) / PANORAMA_MAX_ELEVATION * PANORAMA_HEIGHT)) + 1
)


@dataclass(frozen=True)
class GroundTexture:
    """Mip pyramid of packed RGBA texels; level k has texel size `resolution_m * 2**k`."""

    levels: tuple[np.ndarray, ...]  # each (H_k, W_k) uint32, views into `flat`
    #: All levels back to back plus one trailing "outside" texel, for a single gather per frame.
    flat: np.ndarray
    offsets: tuple[int, ...]
    x0: float
    y0: float
    resolution_m: float
    outside: np.ndarray  # packed colour for ground outside the texture (grass)


@dataclass(frozen=True)
class Billboards:
    """Camera-facing upright rectangles: centre (x, y), bottom/top height, half width, colour."""

    x: np.ndarray
    y: np.ndarray
    z0: np.ndarray
    z1: np.ndarray
    half_width: np.ndarray
    colour: np.ndarray  # (N, 3) uint8

    @staticmethod
    def concat(parts: list[Billboards]) -> Billboards:
        return Billboards(*(np.concatenate([getattr(p, f) for p in parts]) for f in _BB_FIELDS))


_BB_FIELDS = ("x", "y", "z0", "z1", "half_width", "colour")


@dataclass(frozen=True)
class World:
    texture: GroundTexture
    scenery: Billboards
    panorama: np.ndarray  # (PANORAMA_HEIGHT * PANORAMA_WIDTH,) packed RGBA, row 0 = horizon


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgba = np.concatenate([rgb, np.full(rgb.shape[:-1] + (1,), 255, np.uint8)], axis=-1)
    return np.ascontiguousarray(rgba).view(np.uint32)[..., 0]


def _noise_field(rng: np.random.Generator, height: int, width: int, res: float) -> np.ndarray:
    """uint8 noise with 8 m, 2 m and texel-scale components (bilinear upsampling in PIL)."""
    out = np.zeros((height, width), np.uint16)
    for cell_m, weight in ((8.0, 110), (2.0, 90)):
        gh, gw = max(2, int(height * res / cell_m) + 2), max(2, int(width * res / cell_m) + 2)
        small = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8))
        big = np.asarray(small.resize((width, height), Image.BILINEAR), dtype=np.uint16)
        out += big * weight // 255
    tile = (rng.random((128, 128)) * 55).astype(np.uint16)
    out += np.tile(tile, (height // 128 + 1, width // 128 + 1))[:height, :width]
    return out.astype(np.uint8)


def build_texture(
    rng: np.random.Generator,
    road: Road,
    stop_line_road_s: float | None,
    junction_road_s: float | None = None,
) -> GroundTexture:
    """Rasterise road surfaces and markings around `road` into a mip-mapped texture (with a
    side road crossing it at `junction_road_s`, when given)."""
    lo_x, hi_x = road.x.min() - MARGIN_M, road.x.max() + MARGIN_M
    lo_y, hi_y = road.y.min() - MARGIN_M, road.y.max() + MARGIN_M
    res = max(MIN_RESOLUTION_M, float(np.sqrt((hi_x - lo_x) * (hi_y - lo_y) / MAX_TEXELS)))
    width, height = int((hi_x - lo_x) / res) + 1, int((hi_y - lo_y) / res) + 1

    def px(xs: np.ndarray, ys: np.ndarray) -> list[tuple[float, float]]:
        return list(zip(((xs - lo_x) / res).tolist(), ((ys - lo_y) / res).tolist(), strict=True))

    classes = Image.new("L", (width, height), GRASS)
    draw = ImageDraw.Draw(classes)
    step = max(1, int(1.0 / (road.s[1] - road.s[0])))
    s = road.s[::step]
    # Surfaces as overlapping 30 m polygon strips: thick polylines leave gaps at joints.
    for half, surface in ((ROAD_HALF_WIDTH_M + SHOULDER_M, GRAVEL), (ROAD_HALF_WIDTH_M, ASPHALT)):
        for start in range(0, len(s) - 1, 30):
            part = s[start : start + 32]
            outline = px(*road.offset(part, half)) + px(*road.offset(part[::-1], -half))
            draw.polygon(outline, fill=surface)
    if junction_road_s is not None:
        # The side road: an asphalt strip crossing at an angle, and a give-way line (dashes
        # across the right arm) where its bus stops or, crossing, does not.
        centre, along, across = side_road_axes(road, junction_road_s)
        arm, half = SIDE_ROAD_ARM_M, SIDE_ROAD_HALF_WIDTH_M
        corners = [
            centre + a * along + b * across
            for a, b in ((-arm, -half), (-arm, half), (arm, half), (arm, -half))
        ]
        draw.polygon(px(*np.array(corners).T), fill=ASPHALT)
        for b in np.arange(-half + 0.25, half - 0.5, 1.0):
            dash = np.array([centre + GIVE_WAY_ARM_M * along + d * across for d in (b, b + 0.5)])
            draw.line(px(*dash.T), fill=PAINT, width=max(2, round(0.4 / res)))
    line_px = max(1, round(LINE_WIDTH_M / res))
    for d in (-EDGE_LINE_OFFSET_M, EDGE_LINE_OFFSET_M):
        draw.line(px(*road.offset(s, d)), fill=PAINT, width=line_px, joint="curve")
    for start in np.arange(0.0, road.length_m - DASH_M, DASH_PERIOD_M):
        dash = np.linspace(start, start + DASH_M, 7)
        draw.line(px(*road.offset(dash, 0.0)), fill=PAINT, width=line_px)
    if stop_line_road_s is not None:
        ends = np.array([EGO_LANE_OFFSET_M - LANE_WIDTH_M / 2 + 0.2, -0.2])
        xs, ys = road.offset(np.full(2, stop_line_road_s), 0.0)
        _, _, th, _ = road.at(stop_line_road_s)
        xs, ys = xs - ends * np.sin(th), ys + ends * np.cos(th)
        draw.line(px(xs, ys), fill=PAINT, width=max(2, round(0.6 / res)))

    cls = np.asarray(classes, dtype=np.uint16)
    noise = _noise_field(rng, height, width, res)
    tone = 1.0 + SURFACE_NOISE[:, None] * (np.arange(256)[None, :] / 255.0 - 0.5)
    lut = np.clip(SURFACE_COLOURS[:, None, :] * tone[:, :, None], 0, 255).astype(np.uint8)
    packed_lut = _pack(lut.reshape(-1, 3))
    level0 = packed_lut[cls * 256 + noise]
    levels = [level0]
    image = Image.fromarray(level0.view(np.uint8).reshape(height, width, 4), "RGBA")
    for _ in range(1, MIP_LEVELS):
        image = image.reduce(2)
        levels.append(np.asarray(image).copy().view(np.uint32)[..., 0])
    outside = _pack(SURFACE_COLOURS[GRASS].astype(np.uint8)[None, :])
    flat = np.concatenate([level.ravel() for level in levels] + [outside])
    offsets = np.concatenate([[0], np.cumsum([level.size for level in levels])]).tolist()
    views = tuple(
        flat[offsets[k] : offsets[k + 1]].reshape(level.shape) for k, level in enumerate(levels)
    )
    return GroundTexture(views, flat, tuple(offsets), float(lo_x), float(lo_y), res, outside)


def build_scenery(
    rng: np.random.Generator, road: Road, junction_road_s: float | None = None
) -> Billboards:
    """Marker posts every 40 m on both sides and trees scattered 8-35 m off the road (none on
    the side road, when there is one)."""
    posts_s = np.arange(20.0, road.length_m, 40.0)
    parts = []
    for side in (-1.0, 1.0):
        x, y = road.offset(posts_s, side * (ROAD_HALF_WIDTH_M + SHOULDER_M + 0.3))
        n = len(posts_s)
        parts.append(_bb(x, y, 0.0, 1.0, 0.08, (235, 235, 235), n))
        parts.append(_bb(x, y, 0.75, 0.95, 0.09, (30, 30, 30), n))
    n_trees = int(road.length_m / 22.0)
    tree_s = rng.uniform(0.0, road.length_m, n_trees)
    side = np.where(rng.random(n_trees) < 0.5, -1.0, 1.0)
    x, y = road.offset(tree_s, side * rng.uniform(8.0, 35.0, n_trees))
    sub = slice(None, None, 8)
    dist = np.hypot(x[:, None] - road.x[None, sub], y[:, None] - road.y[None, sub]).min(axis=1)
    keep = dist > ROAD_HALF_WIDTH_M + SHOULDER_M + 3.0
    if junction_road_s is not None:
        centre, _, across = side_road_axes(road, junction_road_s)
        off_axis = (x - centre[0]) * across[0] + (y - centre[1]) * across[1]
        keep &= np.abs(off_axis) > SIDE_ROAD_HALF_WIDTH_M + 4.0
        # A clear sight triangle, as road design asks: no trees between the road approaching
        # the junction and the right arm, so the approaching bus is never hidden.
        _, _, theta, _ = road.at(junction_road_s)
        c, s = np.cos(float(theta)), np.sin(float(theta))
        ahead = (x - centre[0]) * c + (y - centre[1]) * s
        left = -(x - centre[0]) * s + (y - centre[1]) * c
        keep &= ~((ahead > -JUNCTION_ZONE_M) & (ahead < SIDE_ROAD_ARM_M) & (left < 0.0))
    x, y, n = x[keep], y[keep], int(keep.sum())
    height = rng.uniform(4.0, 9.0, n)
    greens = np.stack(
        [rng.integers(25, 60, n), rng.integers(70, 120, n), rng.integers(25, 55, n)], axis=1
    ).astype(np.uint8)
    parts.append(_bb(x, y, 0.0, 0.45 * height, 0.12 + 0.03 * height, (80, 58, 40), n))
    parts.append(
        Billboards(x, y, 0.35 * height, height, 0.25 * height + rng.uniform(0, 0.6, n), greens)
    )
    return Billboards.concat(parts)


def _bb(
    x: np.ndarray,
    y: np.ndarray,
    z0: float,
    z1: float,
    hw: float | np.ndarray,
    colour: tuple[int, int, int],
    n: int,
) -> Billboards:
    return Billboards(
        np.asarray(x, np.float64),
        np.asarray(y, np.float64),
        np.full(n, z0),
        np.full(n, z1) if np.isscalar(z1) else np.asarray(z1),
        np.broadcast_to(np.asarray(hw, np.float64), (n,)).copy(),
        np.tile(np.array(colour, np.uint8), (n, 1)),
    )


def build_panorama(rng: np.random.Generator) -> np.ndarray:
    """Sky gradient with a hill skyline, indexed by (elevation row, world azimuth column)."""
    rows = np.arange(PANORAMA_HEIGHT)[:, None] / (PANORAMA_HEIGHT - 1)
    horizon = np.array(HAZE_COLOUR, np.float64)
    zenith = np.array((70, 120, 200), np.float64)
    sky = horizon + (zenith - horizon) * np.sqrt(rows)[..., None]
    sky = np.broadcast_to(sky, (PANORAMA_HEIGHT, PANORAMA_WIDTH, 3)).copy()
    az = np.linspace(0.0, 2 * np.pi, PANORAMA_WIDTH, endpoint=False)
    ridge = np.full(PANORAMA_WIDTH, 1.5)
    for k in (2, 3, 5, 9, 17):
        ridge += rng.uniform(0.3, 1.6) / np.sqrt(k) * np.sin(k * az + rng.uniform(0, 2 * np.pi))
    ridge_rows = (
        np.radians(np.clip(ridge, 0.3, HILL_MAX_ELEVATION_DEG))
        / PANORAMA_MAX_ELEVATION
        * PANORAMA_HEIGHT
    )
    hill = np.arange(PANORAMA_HEIGHT)[:, None] < ridge_rows[None, :]
    shade = 0.85 + 0.15 * np.sin(7 * az + 1.0)[None, :]
    hill_colour = np.array((110, 130, 140), np.float64)[None, None, :] * shade[..., None]
    sky = np.where(hill[..., None], hill_colour, sky)
    return _pack(np.clip(sky, 0, 255).astype(np.uint8)).reshape(-1)


def build_world(
    rng: np.random.Generator,
    road: Road,
    stop_line_road_s: float | None,
    junction_road_s: float | None = None,
) -> World:
    return World(
        texture=build_texture(rng, road, stop_line_road_s, junction_road_s),
        scenery=build_scenery(rng, road, junction_road_s),
        panorama=build_panorama(rng),
    )
