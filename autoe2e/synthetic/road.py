"""Road geometry: a curvature profile integrated into a two-lane road, its lanes and map.

The road is defined by curvature as a function of arc length, built from straights, simple
curves and S-bends whose curvature ramps linearly in and out (clothoids), so heading and
curvature are continuous, as on real roads, and the ego's yaw rate never jumps. Everything else
(lanes, markings, map polylines, vehicle poses) is derived from this one centre line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from autoe2e.config import GenerateConfig
from autoe2e.contract import map_schema

#: Lane width in metres; the road has one lane per direction (right-hand traffic).
LANE_WIDTH_M = 3.5
#: Lateral offset (left positive) of the ego lane centre and of the oncoming lane centre.
EGO_LANE_OFFSET_M = -LANE_WIDTH_M / 2
ONCOMING_LANE_OFFSET_M = LANE_WIDTH_M / 2
ROAD_HALF_WIDTH_M = LANE_WIDTH_M
#: Arc-length sampling of the centre line.
ROAD_DS_M = 0.25
#: Map polylines are resampled to this spacing (finer is wasted on a 1.5 m raster).
MAP_SPACING_M = 2.0
#: Curvature range of generated curves (radius 250 m .. 45 m).
MIN_CURVE_KAPPA = 1.0 / 250.0
MAX_CURVE_KAPPA = 1.0 / 45.0


@dataclass(frozen=True)
class CurveSpan:
    """A curve or S-bend on the road, for the scenario annotations."""

    kind: str  # "curve" or "s_bend"
    road_s_start_m: float
    road_s_end_m: float
    peak_curvature_1pm: float  # signed, largest magnitude; left turns positive
    direction: str  # "left", "right", "left-right" or "right-left"


@dataclass(frozen=True)
class Path2D:
    """A polyline sampled by its own arc length, with heading and curvature per sample."""

    s: np.ndarray
    x: np.ndarray
    y: np.ndarray
    theta: np.ndarray  # unwrapped heading, radians
    kappa: np.ndarray

    def at(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Interpolated (x, y, heading, curvature) at arc length(s) `s` (clamped to the ends)."""
        return (
            np.interp(s, self.s, self.x),
            np.interp(s, self.s, self.y),
            np.interp(s, self.s, self.theta),
            np.interp(s, self.s, self.kappa),
        )

    @property
    def length_m(self) -> float:
        return float(self.s[-1])


@dataclass(frozen=True)
class Lane(Path2D):
    """A lane centre: a `Path2D` plus the mapping between lane and road arc length.

    A lane offset from the centre line is longer on the outside of a curve, so vehicles moving
    along a lane advance by lane arc length; `road_s` converts back for painting and events.
    """

    road_s: np.ndarray = None  # type: ignore[assignment]
    offset_m: float = 0.0

    def lane_s_of(self, road_s: np.ndarray | float) -> np.ndarray:
        return np.interp(road_s, self.road_s, self.s)

    def road_s_of(self, lane_s: np.ndarray | float) -> np.ndarray:
        return np.interp(lane_s, self.s, self.road_s)


@dataclass(frozen=True)
class Road(Path2D):
    """The road centre line (the dashed line between the two lanes)."""

    def offset(self, road_s: np.ndarray | float, d: float) -> tuple[np.ndarray, np.ndarray]:
        """World (x, y) of the point `d` metres left of the centre line at `road_s`."""
        x, y, theta, _ = self.at(road_s)
        return x - d * np.sin(theta), y + d * np.cos(theta)

    def lane(self, d: float) -> Lane:
        """The path `d` metres left of the centre line (curvature kappa / (1 - d kappa))."""
        stretch = 1.0 - d * self.kappa
        if (stretch <= 0.1).any():
            raise ValueError(f"lane offset {d} m is beyond the curve radius of this road")
        seg = 0.5 * (stretch[1:] + stretch[:-1]) * np.diff(self.s)
        lane_s = np.concatenate([[0.0], np.cumsum(seg)])
        x, y = self.offset(self.s, d)
        return Lane(
            s=lane_s,
            x=x,
            y=y,
            theta=self.theta.copy(),
            kappa=self.kappa / stretch,
            road_s=self.s.copy(),
            offset_m=d,
        )


def _ramp(k0: float, k1: float, length: float) -> np.ndarray:
    n = max(2, round(length / ROAD_DS_M))
    return np.linspace(k0, k1, n, endpoint=False)


def _hold(k: float, length: float) -> np.ndarray:
    return np.full(max(1, round(length / ROAD_DS_M)), k)


def build_road(
    rng: np.random.Generator, length_m: float, config: GenerateConfig, lead_in_m: float
) -> tuple[Road, list[CurveSpan]]:
    """Random road of at least `length_m`; the first `lead_in_m` metres are straight.

    Each segment after the lead-in is an S-bend (probability `s_bend_probability`), a curve
    (`curve_probability`) or a straight, separated by short straights so that curves are
    distinct events the ego has to anticipate.
    """
    pieces: list[np.ndarray] = [_hold(0.0, lead_in_m)]
    spans: list[CurveSpan] = []
    total = lead_in_m
    while total < length_m:
        total_before = total
        draw = rng.random()
        sign = 1.0 if rng.random() < 0.5 else -1.0
        kappa = sign * float(np.exp(rng.uniform(np.log(MIN_CURVE_KAPPA), np.log(MAX_CURVE_KAPPA))))
        ramp = float(rng.uniform(20.0, 45.0))
        if draw < config.s_bend_probability:
            arc1, arc2 = rng.uniform(15.0, 50.0, size=2)
            kappa2 = -sign * float(rng.uniform(0.6, 1.0)) * abs(kappa)
            seg = [
                _ramp(0.0, kappa, ramp),
                _hold(kappa, arc1),
                _ramp(kappa, kappa2, 1.5 * ramp),
                _hold(kappa2, arc2),
                _ramp(kappa2, 0.0, ramp),
            ]
            kind, peak = "s_bend", kappa if abs(kappa) >= abs(kappa2) else kappa2
            direction = "left-right" if sign > 0 else "right-left"
        elif draw < config.s_bend_probability + config.curve_probability:
            arc = float(rng.uniform(20.0, 90.0))
            seg = [_ramp(0.0, kappa, ramp), _hold(kappa, arc), _ramp(kappa, 0.0, ramp)]
            kind, peak, direction = "curve", kappa, "left" if sign > 0 else "right"
        else:
            seg, kind = [_hold(0.0, float(rng.uniform(40.0, 120.0)))], ""
            peak, direction = 0.0, ""
        seg_len = sum(len(p) for p in seg) * ROAD_DS_M
        pieces.extend(seg)
        total += seg_len
        if kind:
            spans.append(CurveSpan(kind, total_before, total, peak, direction))
        gap = float(rng.uniform(25.0, 70.0))
        pieces.append(_hold(0.0, gap))
        total += gap
    kappa_all = np.concatenate(pieces + [np.zeros(1)])
    theta0 = float(rng.uniform(-np.pi, np.pi))
    return _integrate(kappa_all, theta0, 0.0, 0.0), spans


def _integrate(kappa: np.ndarray, theta0: float, x0: float, y0: float) -> Road:
    """The road whose curvature every `ROAD_DS_M` is `kappa`, starting at (x0, y0, theta0)."""
    s = np.arange(len(kappa)) * ROAD_DS_M
    dtheta = 0.5 * (kappa[1:] + kappa[:-1]) * ROAD_DS_M
    theta = theta0 + np.concatenate([[0.0], np.cumsum(dtheta)])
    # Integrate position with the midpoint heading (second order, closes curves accurately).
    mid = 0.5 * (theta[1:] + theta[:-1])
    x = x0 + np.concatenate([[0.0], np.cumsum(np.cos(mid) * ROAD_DS_M)])
    y = y0 + np.concatenate([[0.0], np.cumsum(np.sin(mid) * ROAD_DS_M)])
    return Road(s=s, x=x, y=y, theta=theta, kappa=kappa)


def straighten(
    road: Road, spans: list[CurveSpan], start_m: float, end_m: float, ramp_m: float = 40.0
) -> tuple[Road, list[CurveSpan]]:
    """The road made straight on [`start_m`, `end_m`] (road arc length), its curvature blended
    back in over `ramp_m` on either side so it stays continuous (the ego's yaw rate never
    jumps); everything beyond turns with it. Curve spans are re-measured: one that the
    straight leaves flatter than `MIN_CURVE_KAPPA / 2` is no longer a curve.

    Why: a junction needs a straight approach for the narrow front camera to keep the side
    road in view, and only ~10 % of random roads have one where the event must go.
    """
    s = road.s
    outside = np.maximum((start_m - s) / ramp_m, (s - end_m) / ramp_m)
    kappa = road.kappa * np.clip(outside, 0.0, 1.0)
    out = _integrate(kappa, float(road.theta[0]), float(road.x[0]), float(road.y[0]))
    kept = []
    for span in spans:
        inside = (s >= span.road_s_start_m) & (s <= span.road_s_end_m)
        k = kappa[inside]
        if not len(k) or np.abs(k).max() < MIN_CURVE_KAPPA / 2:
            continue
        peak = float(k[np.argmax(np.abs(k))])
        kind, direction = span.kind, span.direction
        if kind == "s_bend" and (k.max() < MIN_CURVE_KAPPA / 2 or k.min() > -MIN_CURVE_KAPPA / 2):
            kind, direction = "curve", "left" if peak > 0 else "right"  # one bend is left
        kept.append(CurveSpan(kind, span.road_s_start_m, span.road_s_end_m, peak, direction))
    return out, kept


def _resample(road: Road, d: float, spacing: float) -> tuple[list[float], list[float]]:
    s = np.arange(0.0, road.length_m, spacing)
    if s[-1] < road.length_m:
        s = np.append(s, road.length_m)
    x, y = road.offset(s, d)
    return x.tolist(), y.tolist()


def map_table(road: Road) -> pa.Table:
    """Map polylines in the world frame: road edges, the dashed centre line, lane centres."""
    rows: list[tuple[str, float]] = [
        ("road_edge", -ROAD_HALF_WIDTH_M),
        ("road_edge", ROAD_HALF_WIDTH_M),
        ("lane_line", 0.0),
        ("centerline", EGO_LANE_OFFSET_M),
        ("centerline", ONCOMING_LANE_OFFSET_M),
    ]
    ids, kinds, xs, ys = [], [], [], []
    for i, (kind, d) in enumerate(rows):
        x, y = _resample(road, d, MAP_SPACING_M)
        ids.append(i)
        kinds.append(kind)
        xs.append(x)
        ys.append(y)
    return pa.table({"polyline_id": ids, "kind": kinds, "x_m": xs, "y_m": ys}, schema=map_schema())
