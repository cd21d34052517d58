"""Episode writer: plan a world, simulate the drive, render every camera, write the contract.

Each episode is a pure function of (config, index): its random generator is seeded with
``[config.seed, index]``, so episodes are reproducible one by one and can be generated in any
order by a process pool. Files are written into a temporary directory and renamed into place,
so a crash never leaves a half-written episode that `prepare` would pick up.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoe2e.config import ConfigError, GenerateConfig
from autoe2e.contract import (
    CAMERA_DIR,
    EGO_FILE,
    EPISODE_JSON,
    MAP_FILE,
    EpisodeMeta,
    ego_schema,
)
from autoe2e.data.scenarios import SCENARIO_FILE
from autoe2e.synthetic import traffic
from autoe2e.synthetic.ego import SIM_DT_S, Motion, simulate, speed_profile
from autoe2e.synthetic.render import Box, CameraModel, CameraView, camera_rig, forward_camera
from autoe2e.synthetic.road import (
    EGO_LANE_OFFSET_M,
    ONCOMING_LANE_OFFSET_M,
    Lane,
    Road,
    build_road,
    map_table,
)
from autoe2e.synthetic.world import Billboards, build_world
from autoe2e.video.encode import Mp4Writer

logger = logging.getLogger(__name__)

#: The ego starts this far along the road (so the rear cameras see road behind it).
START_ROAD_S_M = 100.0
#: Road kept beyond the furthest vehicle: what the cameras can see ahead (haze ends at 250 m).
VIEW_AHEAD_M = 260.0
#: x264 preset: "ultrafast" encodes ~2.7x faster than "veryfast" on these frames (files ~2.5x
#: larger, still < 1 MB per camera-minute at the demo size); encoding dominates generation time.
VIDEO_PRESET = "ultrafast"
_CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def episode_id(seed: int, index: int) -> str:
    return f"ep{seed:04d}_{index:04d}"


def check_config(config: GenerateConfig) -> GenerateConfig:
    """`GenerateConfig.validate()` plus the checks only the world needs."""
    config.validate()

    def require(ok: bool, name: str, fix: str) -> None:
        if not ok:
            raise ConfigError(f"config field {name}={getattr(config, name)!r} is invalid: {fix}")

    for name in (
        "curve_probability",
        "s_bend_probability",
        "lead_vehicle_probability",
        "stop_event_probability",
        "obstacle_probability",
    ):
        require(0.0 <= getattr(config, name) <= 1.0, name, "use a probability in [0, 1]")
    require(
        config.curve_probability + config.s_bend_probability <= 1.0,
        "curve_probability",
        "curve_probability + s_bend_probability must be <= 1",
    )
    require(
        0.0 <= config.oncoming_traffic_density <= 5.0,
        "oncoming_traffic_density",
        "use 0 (none) .. 5 vehicles per 100 m",
    )
    require(
        10.0 <= config.horizontal_fov_deg <= 170.0,
        "horizontal_fov_deg",
        "use 10 .. 170 degrees for a pinhole camera",
    )
    require(
        isinstance(config.camera_fov_deg, dict)
        and all(
            isinstance(v, int | float) and 10.0 <= v <= 170.0
            for v in config.camera_fov_deg.values()
        ),
        "camera_fov_deg",
        'map camera names to 10 .. 170 degrees, e.g. {"front": 45}',
    )
    require(2.0 <= config.max_speed_mps <= 60.0, "max_speed_mps", "use 2 .. 60 m/s")
    require(
        0.5 <= config.max_lateral_accel_mps2 <= 8.0, "max_lateral_accel_mps2", "use 0.5 .. 8 m/s^2"
    )
    require(
        0.5 <= config.comfortable_decel_mps2 <= 8.0, "comfortable_decel_mps2", "use 0.5 .. 8 m/s^2"
    )
    require(0 <= config.crf <= 51, "crf", "use 0 (lossless) .. 51")
    require(config.camera_fps <= 240.0, "camera_fps", "use <= 240")
    require(
        all(_CAMERA_NAME.match(c) for c in config.cameras),
        "cameras",
        "camera names become file names: use letters, digits, '_' or '-'",
    )
    return config


@dataclass
class _Plan:
    road: Road
    lane: Lane
    spans: list
    plan: traffic.TrafficPlan
    motion: Motion


def _plan_episode(rng: np.random.Generator, config: GenerateConfig) -> _Plan:
    """Road, then the events: a lead vehicle (with its hard brakes) and a traffic light, or,
    without a lead, a works truck in the lane (or a light when there is no truck). The light or
    truck goes where the ego would be about half-way, from a simulation of the drive without
    it. A prepared 24 s episode has samples only from ~6.4 s to ~17.6 s (6.4 s of ego history
    before and of trajectory after each), so that is where the events should happen."""
    road_len = START_ROAD_S_M + config.max_speed_mps * config.duration_s + VIEW_AHEAD_M + 60.0
    road, spans = build_road(rng, road_len, config, lead_in_m=START_ROAD_S_M + 30.0)
    lane = road.lane(EGO_LANE_OFFSET_M)
    start_s = float(lane.lane_s_of(START_ROAD_S_M))
    comf = config.comfortable_decel_mps2
    profile = speed_profile(lane, config.max_speed_mps, config.max_lateral_accel_mps2, comf / 2)
    start_v = float(np.interp(start_s, lane.s, profile)) * float(rng.uniform(0.6, 1.0))

    def drive(
        lead: traffic.LeadPlan | None,
        stop: traffic.StopPlan | None,
        obstacle: traffic.ObstaclePlan | None,
    ) -> Motion:
        plan = traffic.TrafficPlan(lead, (), stop, obstacle)
        return simulate(lane, plan, config, start_s, start_v, config.duration_s)

    lead = traffic.plan_lead(rng, config)
    pre = drive(lead, None, None)
    duration = config.duration_s

    def reach(run: Motion, lo: float, hi: float) -> tuple[float, float]:
        return traffic.ego_lane_s_between(run.t, run.ego_s, (lo * duration, hi * duration))

    # A stop or a works truck takes ~12-15 s from first sight to pulling away, so a 24 s
    # episode holds one of them, timed for the sample window; lead episodes add hard brakes.
    obstacle = None
    if lead is None:
        obstacle = traffic.plan_obstacle(rng, road, lane, reach(pre, 0.45, 0.55), config)
    stop = None
    if obstacle is None:
        stop = traffic.plan_stop(rng, road, lane, reach(pre, 0.45, 0.55), config)
    motion = drive(lead, stop, obstacle)
    # Keep only the road the cameras can see, so the texture stays small.
    furthest = float(lane.road_s_of(max(motion.ego_s[-1], _last(motion.lead_s))))
    keep = road.s <= min(road.length_m, furthest + VIEW_AHEAD_M)
    road = Road(
        s=road.s[keep],
        x=road.x[keep],
        y=road.y[keep],
        theta=road.theta[keep],
        kappa=road.kappa[keep],
    )
    oncoming = traffic.plan_oncoming(rng, road, START_ROAD_S_M, config)
    plan = traffic.TrafficPlan(lead, oncoming, stop, obstacle)
    return _Plan(road, lane, spans, plan, motion)


def _last(values: np.ndarray | None) -> float:
    return float(values[-1]) if values is not None else -math.inf


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _ego_table(p: _Plan, times: np.ndarray) -> pa.Table:
    m = p.motion
    s = np.interp(times, m.t, m.ego_s)
    v = np.interp(times, m.t, m.ego_v)
    # The simulator's accel is the forward difference over each step: centre it.
    a = np.interp(times - SIM_DT_S / 2, m.t, m.ego_a)
    x, y, theta, kappa = p.lane.at(s)
    columns = {
        "timestamp_s": times,
        "x_m": x,
        "y_m": y,
        "yaw_rad": _wrap(theta),
        "speed_mps": v,
        "accel_mps2": a,
        "yaw_rate_rps": v * kappa,
        "curvature_1pm": kappa,
    }
    return pa.table(
        {k: np.asarray(val, np.float64) for k, val in columns.items()}, schema=ego_schema()
    )


#: Signal lamps: lit colours are saturated and bright, unlit ones nearly black, so a change of
#: state is also a large change of luminance. The head is stylised and oversized (2.2 m square
#: lamps, red above green): in the 45 deg front camera at 112 x 64 a lamp is ~3.7 px at 80 m
#: (`traffic.LIGHT_VISIBLE_RANGE_M`, the farthest red onset), where a real 0.3 m lens would be
#: half a pixel.
LIGHT_RED_ON, LIGHT_RED_OFF = (255, 45, 30), (45, 22, 22)
LIGHT_GREEN_ON, LIGHT_GREEN_OFF = (50, 255, 100), (18, 42, 28)
LIGHT_HEAD_Z_M = (1.8, 6.8)
LIGHT_LAMP_M = 2.2
#: The works truck's board: amber (hue between the red lamps and the yellow-free body colours).
TRUCK_BOARD = (255, 160, 0)
TRUCK_BOARD_Z_M = (0.5, 2.7)


def _light_position(road: Road, stop: traffic.StopPlan) -> tuple[float, float]:
    s = stop.line_road_s_m + traffic.LIGHT_AHEAD_OF_LINE_M
    x, y = road.offset(s, traffic.LIGHT_LATERAL_OFFSET_M)
    return float(x), float(y)


def _light_billboards(road: Road, stop: traffic.StopPlan, red: bool) -> Billboards:
    """Pole, housing and two lamps (red above green) beyond the stop line, right of the lane."""
    x, y = _light_position(road, stop)
    z0, z1 = LIGHT_HEAD_Z_M
    rows = [  # z0, z1, half width, colour; drawn in this order at the same depth
        (0.0, z0 + 0.1, 0.12, (60, 60, 60)),
        (z0, z1, LIGHT_LAMP_M / 2 + 0.2, (20, 20, 20)),
        (
            z1 - 0.15 - LIGHT_LAMP_M,
            z1 - 0.15,
            LIGHT_LAMP_M / 2,
            LIGHT_RED_ON if red else LIGHT_RED_OFF,
        ),
        (
            z0 + 0.15,
            z0 + 0.15 + LIGHT_LAMP_M,
            LIGHT_LAMP_M / 2,
            LIGHT_GREEN_OFF if red else LIGHT_GREEN_ON,
        ),
    ]
    n = len(rows)
    return Billboards(
        x=np.full(n, x),
        y=np.full(n, y),
        z0=np.array([r[0] for r in rows]),
        z1=np.array([r[1] for r in rows]),
        half_width=np.array([r[2] for r in rows]),
        colour=np.array([r[3] for r in rows], np.uint8),
    )


def _light_is_red(m: Motion, t: float) -> bool:
    """Green until it turns red as the ego approaches, red until it turns green again."""
    if m.red_time_s is None or t < m.red_time_s:
        return False
    return m.green_time_s is None or t < m.green_time_s


def _truck_pose(p: _Plan, t: float) -> tuple[float, float, float] | None:
    """World (x, y, heading) of the works truck at time `t`; None once it has driven away."""
    obstacle, m = p.plan.obstacle, p.motion
    if obstacle is None:
        return None
    centre = float(p.lane.lane_s_of(obstacle.road_s_m))
    path = 0.0
    if m.obstacle_pull_off_time_s is not None:
        path = float(traffic.turn_off_path(t - m.obstacle_pull_off_time_s))
    if path > traffic.TRUCK_GONE_PATH_M:
        return None
    forward, left, turn = traffic.turn_off_offset(path)
    x, y, theta, _ = p.lane.at(centre + float(forward))
    x -= float(left) * math.sin(float(theta))
    y += float(left) * math.cos(float(theta))
    return float(x), float(y), float(theta) + float(turn)


def _boxes_at(p: _Plan, t: float, ego_road_s: float) -> list[Box]:
    boxes = []
    m = p.motion
    L, W, H = traffic.VEHICLE_LENGTH_M, traffic.VEHICLE_WIDTH_M, traffic.VEHICLE_HEIGHT_M
    if p.plan.lead is not None and m.lead_s is not None:
        k = min(int(round(t / SIM_DT_S)), len(m.t) - 1)
        lx, ly, lth, _ = p.lane.at(m.lead_s[k])
        boxes.append(
            Box(
                float(lx),
                float(ly),
                float(lth),
                L,
                W,
                H,
                p.plan.lead.colour,
                bool(m.lead_brake_light[k]),
            )
        )
    truck = _truck_pose(p, t)
    if truck is not None:
        boxes.append(
            Box(
                *truck,
                traffic.TRUCK_LENGTH_M,
                traffic.TRUCK_WIDTH_M,
                traffic.TRUCK_HEIGHT_M,
                traffic.TRUCK_COLOUR,
                rear_panel=(*TRUCK_BOARD_Z_M, TRUCK_BOARD),
            )
        )
    for veh in p.plan.oncoming:
        s = float(veh.road_s(t))
        if abs(s - ego_road_s) > VIEW_AHEAD_M or s < 0 or s > p.road.length_m:
            continue
        ox, oy = p.road.offset(s, ONCOMING_LANE_OFFSET_M)
        th = float(np.interp(s, p.road.s, p.road.theta)) + math.pi
        boxes.append(Box(float(ox), float(oy), th, L, W, H, veh.colour, False))
    return boxes


def _in_view(
    camera: CameraModel,
    cam_t: np.ndarray,
    pose: tuple[np.ndarray, np.ndarray, np.ndarray],
    point: tuple[np.ndarray, np.ndarray, float],
    max_range_m: float,
) -> tuple[float | None, float | None]:
    """First and last frame time at which world point(s) `point` (x, y per frame, height)
    project inside `camera`'s image no further than `max_range_m`; None when never."""
    ex, ey, eth = pose
    intr, extr = camera.intrinsics, camera.extrinsics
    c, s = np.cos(eth), np.sin(eth)
    cam_x = ex + c * extr.x_m - s * extr.y_m
    cam_y = ey + s * extr.x_m + c * extr.y_m
    yaw = eth + extr.yaw_rad
    rx, ry = point[0] - cam_x, point[1] - cam_y
    fwd = np.cos(yaw) * rx + np.sin(yaw) * ry
    left = -np.sin(yaw) * rx + np.cos(yaw) * ry
    safe = np.maximum(fwd, 1e-3)
    u = intr.cx - intr.fx * left / safe
    v = intr.cy - intr.fy * (point[2] - extr.z_m) / safe
    inside = (fwd > 1.0) & (u >= 0) & (u < intr.width) & (v >= 0) & (v < intr.height)
    inside &= np.hypot(rx, ry) <= max_range_m
    hits = np.flatnonzero(inside)
    if not len(hits):
        return None, None
    return round(float(cam_t[hits[0]]), 3), round(float(cam_t[hits[-1]]), 3)


def _time_at(m: Motion, lane: Lane, road_s: float) -> float | None:
    """First time the ego reaches `road_s` (None when it never does in the episode)."""
    target = float(lane.lane_s_of(road_s))
    hit = np.flatnonzero(m.ego_s >= target)
    return round(float(m.t[hit[0]]), 3) if len(hit) else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _lamp_runs(m: Motion) -> list[tuple[int, int]]:
    """(first, last) simulation steps of each run of the lead's brake lamps being on."""
    if m.lead_brake_light is None:
        return []
    lit = m.lead_brake_light.astype(np.int8)
    edges = np.diff(np.concatenate([[0], lit, [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _ego_brake_after(m: Motion, t0: float, within_s: float = 4.0) -> float | None:
    """First time in [t0, t0 + within_s] at which the ego brakes (accel < -0.5 m/s^2)."""
    k0 = int(round(t0 / SIM_DT_S))
    window = m.ego_a[k0 : k0 + int(round(within_s / SIM_DT_S))]
    hits = np.flatnonzero(window < -0.5)
    return round(float(m.t[k0 + hits[0]]), 3) if len(hits) else None


def _lead_braking_events(p: _Plan) -> list[dict]:
    """One event per run of the lead's lamps being on: its own hard brakes, stopping for the
    light, or slowing for a curve; the ego's reaction is the first braking after the onset."""
    m = p.motion
    if p.plan.lead is None:
        return []
    last = len(m.t) - 1
    events = []
    for first, end in _lamp_runs(m):
        start_t, end_t = float(m.t[first]), float(m.t[end])
        brake = next(
            (ev for ev in m.lead_brake_events if start_t - 0.05 <= ev.start_time_s <= end_t),
            None,
        )
        event: dict = {
            "kind": "lead_braking",
            "start_time_s": round(start_t, 3) if first > 0 else None,
            "end_time_s": round(end_t, 3) if end < last else None,
        }
        if brake is not None:
            event.update(cause="hard_brake", decel_mps2=round(brake.decel_mps2, 3))
        elif m.red_time_s is not None and m.lead_stops_for_light and start_t >= m.red_time_s:
            event["cause"] = "light"
        else:
            event["cause"] = "slowing"
        event["min_speed_mps"] = round(float(m.lead_v[first : end + 1].min()), 3)
        # Bumper-to-bumper distance at the onset: far leads (> ~60 m) are only a few pixels.
        gap = m.lead_s[first] - m.ego_s[first] - traffic.VEHICLE_LENGTH_M
        event["gap_m"] = round(float(gap), 2)
        event["ego_brake_time_s"] = _ego_brake_after(m, start_t)
        events.append(event)
    return events


def _scenario(
    p: _Plan,
    eid: str,
    index: int,
    config: GenerateConfig,
    visible: dict[str, tuple[float | None, float | None]],
) -> dict:
    """Ground-truth events for per-scenario evaluation and vision tests.

    Every event has `kind` (curve, lead_braking, stop, obstacle) and `start_time_s` /
    `end_time_s` on the episode clock: null start = began before the episode, null end = still
    going at its end. Curves span entry to exit; lead braking spans the lamps being on; a stop
    spans the light coming into view (front camera, <= LIGHT_VISIBLE_RANGE_M) to the ego passing
    it; an obstacle spans the truck coming into view to the ego passing where it stood.
    """
    m = p.motion
    ego_end = float(p.lane.road_s_of(m.ego_s[-1]))
    events: list[dict] = []
    for span in p.spans:
        start = _time_at(m, p.lane, span.road_s_start_m)
        if span.road_s_end_m < START_ROAD_S_M or start is None:
            continue  # behind the start, or not reached during the episode
        events.append(
            {
                "kind": "curve",
                "shape": span.kind,
                "direction": span.direction,
                "peak_curvature_1pm": round(span.peak_curvature_1pm, 6),
                "road_s_start_m": round(span.road_s_start_m, 2),
                "road_s_end_m": round(span.road_s_end_m, 2),
                "start_time_s": start if span.road_s_start_m > START_ROAD_S_M else None,
                "end_time_s": _time_at(m, p.lane, span.road_s_end_m),
            }
        )
    events += _lead_braking_events(p)
    stop = p.plan.stop
    light_from, light_until = visible["light"]
    if stop is not None and (light_from is not None or m.red_time_s is not None):
        # The ego lane's point on the stop line, so tests can check where the ego stopped.
        line_x, line_y = p.road.offset(stop.line_road_s_m, EGO_LANE_OFFSET_M)
        light_x, light_y = _light_position(p.road, stop)
        light_s = stop.line_road_s_m + traffic.LIGHT_AHEAD_OF_LINE_M
        reaction = m.ego_light_reaction_time_s
        light_brake = None if reaction is None else _ego_brake_after(m, reaction, within_s=8.0)
        events.append(
            {
                "kind": "stop",
                "start_time_s": light_from or None,
                "end_time_s": _time_at(m, p.lane, light_s),
                "stop_line_x_m": round(float(line_x), 3),
                "stop_line_y_m": round(float(line_y), 3),
                "stop_line_road_s_m": round(stop.line_road_s_m, 2),
                "light_x_m": round(light_x, 3),
                "light_y_m": round(light_y, 3),
                "light_visible_time_s": light_from,
                "light_visible_until_s": light_until,
                "red_time_s": _round(m.red_time_s),
                "ego_reaction_time_s": _round(m.ego_light_reaction_time_s),
                "ego_brake_time_s": light_brake,
                "ego_stop_time_s": _round(m.ego_stop_time_s),
                "green_time_s": _round(m.green_time_s),
                "ego_go_time_s": _round(m.ego_go_time_s),
                "line_time_s": _time_at(m, p.lane, stop.line_road_s_m),
                "lead_stopped": m.lead_stops_for_light,
            }
        )
    obstacle = p.plan.obstacle
    truck_from, truck_until = visible["obstacle"]
    if obstacle is not None and (
        truck_from is not None or m.obstacle_ego_notice_time_s is not None
    ):
        x, y = p.road.offset(obstacle.road_s_m, EGO_LANE_OFFSET_M)
        notice = m.obstacle_ego_notice_time_s
        brake = None if notice is None else _ego_brake_after(m, notice, within_s=8.0)
        rear_s = float(
            p.lane.road_s_of(p.lane.lane_s_of(obstacle.road_s_m) - traffic.TRUCK_LENGTH_M / 2)
        )
        events.append(
            {
                "kind": "obstacle",
                "what": "works_truck",
                "start_time_s": truck_from or None,
                "end_time_s": _time_at(m, p.lane, rear_s),
                "x_m": round(float(x), 3),
                "y_m": round(float(y), 3),
                "road_s_m": round(obstacle.road_s_m, 2),
                "appear_time_s": truck_from,
                "visible_until_s": truck_until,
                "ego_notice_time_s": _round(m.obstacle_ego_notice_time_s),
                "ego_brake_time_s": brake,
                "ego_stop_time_s": _round(m.obstacle_ego_stop_time_s),
                "pull_off_time_s": _round(m.obstacle_pull_off_time_s),
                "clear_time_s": _round(m.obstacle_clear_time_s),
                "ego_go_time_s": _round(m.obstacle_ego_go_time_s),
            }
        )
    events.sort(key=lambda e: (e["start_time_s"] is not None, e["start_time_s"] or 0.0))
    lead = None
    if p.plan.lead is not None:
        lead = {
            "start_gap_m": round(p.plan.lead.start_gap_m, 2),
            "cruise_speed_mps": round(p.plan.lead.cruise_speed_mps, 2),
            "min_gap_m": round(m.min_gap_m, 3),
        }
    return {
        "episode_id": eid,
        "seed": config.seed,
        "index": index,
        "duration_s": config.duration_s,
        "start_road_s_m": START_ROAD_S_M,
        "end_road_s_m": round(ego_end, 2),
        "lead_vehicle": lead,
        "oncoming_vehicles": len(p.plan.oncoming),
        "events": events,
    }


def generate_episode(out_root: str | Path, index: int, config: GenerateConfig) -> str:
    """Write one episode to ``<out_root>/<episode_id>/``; returns its id."""
    check_config(config)
    if index < 0:
        raise ConfigError(f"episode index {index} is negative; use 0 .. num_episodes - 1")
    started = time.perf_counter()
    eid = episode_id(config.seed, index)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config.seed, index])
    p = _plan_episode(rng, config)
    world = build_world(rng, p.road, p.plan.stop.line_road_s_m if p.plan.stop else None)
    rig = camera_rig(config)
    views = [CameraView(cam, world) for cam in rig]

    tmp = out_root / f".{eid}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / CAMERA_DIR).mkdir(parents=True)
    n_frames = int(round(config.duration_s * config.camera_fps))
    cam_t = np.arange(n_frames) / config.camera_fps
    ego_s = np.interp(cam_t, p.motion.t, p.motion.ego_s)
    ex, ey, eth, _ = p.lane.at(ego_s)
    ego_road_s = p.lane.road_s_of(ego_s)
    front = forward_camera(config)
    pose = (ex, ey, eth)
    visible: dict[str, tuple[float | None, float | None]] = {
        "light": (None, None),
        "obstacle": (None, None),
    }
    if p.plan.stop is not None:
        lx, ly = _light_position(p.road, p.plan.stop)
        head = float(np.mean(LIGHT_HEAD_Z_M))
        visible["light"] = _in_view(
            front,
            cam_t,
            pose,
            (np.full_like(cam_t, lx), np.full_like(cam_t, ly), head),
            traffic.LIGHT_VISIBLE_RANGE_M,
        )
    truck_poses = [_truck_pose(p, float(t)) for t in cam_t]
    if p.plan.obstacle is not None:
        # The board's centre: rear face of the truck, wherever it is (it turns off later).
        far = (1e9, 1e9, 0.0)  # gone: never in view
        tx, ty, th = (np.array(a) for a in zip(*(q or far for q in truck_poses), strict=True))
        half = traffic.TRUCK_LENGTH_M / 2
        board = (tx - half * np.cos(th), ty - half * np.sin(th), float(np.mean(TRUCK_BOARD_Z_M)))
        visible["obstacle"] = _in_view(front, cam_t, pose, board, traffic.OBSTACLE_VISIBLE_RANGE_M)
    writers = [
        Mp4Writer(
            tmp / CAMERA_DIR / f"{cam.name}.mp4",
            config.image_width,
            config.image_height,
            config.camera_fps,
            crf=config.crf,
            preset=VIDEO_PRESET,
        )
        for cam in rig
    ]
    try:
        for k, t in enumerate(cam_t):
            boxes = _boxes_at(p, float(t), float(ego_road_s[k]))
            bbs = world.scenery
            if p.plan.stop is not None:
                red = _light_is_red(p.motion, float(t))
                bbs = Billboards.concat(
                    [world.scenery, _light_billboards(p.road, p.plan.stop, red)]
                )
            for view, writer in zip(views, writers, strict=True):
                writer.write(
                    view.render_rgba(float(ex[k]), float(ey[k]), float(eth[k]), boxes, bbs)
                )
    finally:
        for writer in writers:
            writer.close()

    n_tel = int(round(config.duration_s * config.telemetry_hz))
    pq.write_table(_ego_table(p, np.arange(n_tel) / config.telemetry_hz), tmp / EGO_FILE)
    pq.write_table(map_table(p.road), tmp / MAP_FILE)
    meta = EpisodeMeta(
        episode_id=eid,
        cameras=list(config.cameras),
        camera_fps=config.camera_fps,
        camera_info={cam.name: cam.info() for cam in rig},
    )
    (tmp / EPISODE_JSON).write_text(meta.to_json())
    scenario = _scenario(p, eid, index, config, visible)
    (tmp / SCENARIO_FILE).write_text(json.dumps(scenario, indent=2))
    final = out_root / eid
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    elapsed = time.perf_counter() - started
    logger.info(
        "episode %s: %d frames x %d cameras in %.1f s (%.0f frames/s)",
        eid,
        n_frames,
        len(rig),
        elapsed,
        n_frames * len(rig) / elapsed,
    )
    return eid


def generate_episodes(out_root: str | Path, config: GenerateConfig, workers: int = 0) -> list[str]:
    """Write `config.num_episodes` episodes with a process pool; returns ids in index order.

    `workers=0` uses every CPU. Worker processes are spawned (not forked) so that a caller
    holding threads (torch, Flyte) cannot deadlock them.
    """
    check_config(config)
    if workers < 0:
        raise ConfigError(f"workers={workers} is invalid: use 0 (all CPUs) or a positive count")
    workers = min(workers or os.cpu_count() or 1, config.num_episodes)
    started = time.perf_counter()
    indices = list(range(config.num_episodes))
    if workers == 1:
        ids = [generate_episode(out_root, i, config) for i in indices]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(generate_episode, out_root, i, config) for i in indices]
            ids = [f.result() for f in futures]
    frames = (
        config.num_episodes * round(config.duration_s * config.camera_fps) * len(config.cameras)
    )
    elapsed = time.perf_counter() - started
    logger.info(
        "generated %d episodes (%d frames) in %.1f s with %d workers: %.0f frames/s",
        len(ids),
        frames,
        elapsed,
        workers,
        frames / max(elapsed, 1e-9),
    )
    return ids


__all__ = ["check_config", "episode_id", "generate_episode", "generate_episodes"]
