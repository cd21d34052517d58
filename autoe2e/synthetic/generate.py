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
from autoe2e.synthetic import traffic
from autoe2e.synthetic.ego import SIM_DT_S, Motion, simulate, speed_profile
from autoe2e.synthetic.render import Box, CameraView, camera_rig
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

SCENARIO_FILE = "scenario.json"
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
    road_len = START_ROAD_S_M + config.max_speed_mps * config.duration_s + VIEW_AHEAD_M + 60.0
    road, spans = build_road(rng, road_len, config, lead_in_m=START_ROAD_S_M + 30.0)
    lane = road.lane(EGO_LANE_OFFSET_M)
    start_s = float(lane.lane_s_of(START_ROAD_S_M))
    comf = config.comfortable_decel_mps2
    profile = speed_profile(lane, config.max_speed_mps, config.max_lateral_accel_mps2, comf / 2)
    start_v = float(np.interp(start_s, lane.s, profile)) * float(rng.uniform(0.6, 1.0))
    lead = traffic.plan_lead(rng, config)
    # Where would the ego be without a stop? Put the stop line there, on a straight.
    pre = simulate(
        lane, traffic.TrafficPlan(lead, (), None), config, start_s, start_v, config.duration_s
    )
    stop = traffic.plan_stop(rng, road, lane, pre.t, pre.ego_s, config)
    plan = traffic.TrafficPlan(lead, (), stop)
    motion = simulate(lane, plan, config, start_s, start_v, config.duration_s)
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
    plan = traffic.TrafficPlan(lead, oncoming, stop)
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


def _light_billboards(road: Road, stop: traffic.StopPlan, red: bool) -> Billboards:
    """Pole, housing and two lamps (red above green) beyond the stop line, right of the lane."""
    s = stop.line_road_s_m + traffic.LIGHT_AHEAD_OF_LINE_M
    x, y = road.offset(np.array([s]), traffic.LIGHT_LATERAL_OFFSET_M)
    red_c = (255, 30, 20) if red else (70, 25, 25)
    green_c = (40, 255, 90) if not red else (20, 60, 35)
    rows = [  # z0, z1, half width, colour; drawn in this order at the same depth
        (0.0, 3.3, 0.1, (60, 60, 60)),
        (3.2, 5.2, 0.5, (25, 25, 25)),
        (4.3, 5.1, 0.38, red_c),
        (3.3, 4.1, 0.38, green_c),
    ]
    n = len(rows)
    return Billboards(
        x=np.repeat(x, n),
        y=np.repeat(y, n),
        z0=np.array([r[0] for r in rows]),
        z1=np.array([r[1] for r in rows]),
        half_width=np.array([r[2] for r in rows]),
        colour=np.array([r[3] for r in rows], np.uint8),
    )


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
    for veh in p.plan.oncoming:
        s = float(veh.road_s(t))
        if abs(s - ego_road_s) > VIEW_AHEAD_M or s < 0 or s > p.road.length_m:
            continue
        ox, oy = p.road.offset(s, ONCOMING_LANE_OFFSET_M)
        th = float(np.interp(s, p.road.s, p.road.theta)) + math.pi
        boxes.append(Box(float(ox), float(oy), th, L, W, H, veh.colour, False))
    return boxes


def _time_at(m: Motion, lane: Lane, road_s: float) -> float | None:
    """First time the ego reaches `road_s` (None when it never does in the episode)."""
    target = float(lane.lane_s_of(road_s))
    hit = np.flatnonzero(m.ego_s >= target)
    return round(float(m.t[hit[0]]), 3) if len(hit) else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _scenario(p: _Plan, eid: str, index: int, config: GenerateConfig) -> dict:
    m = p.motion
    ego_end = float(p.lane.road_s_of(m.ego_s[-1]))
    events: list[dict] = []
    for span in p.spans:
        if span.road_s_start_m > ego_end + 150.0 or span.road_s_end_m < START_ROAD_S_M:
            continue
        events.append(
            {
                "kind": span.kind,
                "direction": span.direction,
                "peak_curvature_1pm": round(span.peak_curvature_1pm, 6),
                "road_s_start_m": round(span.road_s_start_m, 2),
                "road_s_end_m": round(span.road_s_end_m, 2),
                "start_time_s": _time_at(m, p.lane, span.road_s_start_m),
                "end_time_s": _time_at(m, p.lane, span.road_s_end_m),
            }
        )
    if p.plan.lead is not None:
        for ev in m.lead_brake_events:
            events.append(
                {
                    "kind": "lead_brake",
                    "start_time_s": round(ev.start_time_s, 3),
                    "end_time_s": round(ev.start_time_s + ev.duration_s, 3),
                    "decel_mps2": round(ev.decel_mps2, 3),
                }
            )
    if p.plan.stop is not None:
        # The ego lane's point on the stop line, so tests can check where the ego stopped.
        line_x, line_y = p.road.offset(p.plan.stop.line_road_s_m, EGO_LANE_OFFSET_M)
        events.append(
            {
                "kind": "stop",
                "stop_line_x_m": round(float(line_x), 3),
                "stop_line_y_m": round(float(line_y), 3),
                "stop_line_road_s_m": round(p.plan.stop.line_road_s_m, 2),
                "ego_stop_time_s": _round(m.ego_stop_time_s),
                "green_time_s": _round(m.green_time_s),
                "ego_go_time_s": _round(m.ego_go_time_s),
                "line_time_s": _time_at(m, p.lane, p.plan.stop.line_road_s_m),
            }
        )
    events.sort(key=lambda e: (e.get("start_time_s") is None, e.get("start_time_s") or 0.0))
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
    green = p.motion.green_time_s
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
                red = green is None or t < green
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
    scenario = _scenario(p, eid, index, config)
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
