"""Episode writer: plan a world, simulate the drive, render every camera, write the contract.

Each episode is a pure function of (config, index): its random generator is seeded with
``[config.seed, index]``, so episodes are reproducible one by one and can be generated in any
order by a process pool. Files are written into a temporary directory and renamed into place,
so a crash never leaves a half-written episode that `prepare` would pick up.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
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
from autoe2e.synthetic.annotations import scenario_record
from autoe2e.synthetic.ego import SIM_DT_S
from autoe2e.synthetic.plan import EpisodePlan, plan_episode
from autoe2e.synthetic.render import CameraModel, CameraView, camera_rig, forward_camera
from autoe2e.synthetic.road import map_table
from autoe2e.synthetic.scene import (
    LIGHT_HEAD_Z_M,
    TRUCK_BOARD_Z_M,
    boxes_at,
    in_view,
    light_billboards,
    light_is_red,
    light_position,
    side_vehicle_pose,
    truck_pose,
)
from autoe2e.synthetic.world import Billboards, build_world
from autoe2e.video.encode import Mp4Writer
from autoe2e.workers import worker_pool

logger = logging.getLogger(__name__)

#: x264 preset: "ultrafast" encodes ~2.7x faster than "veryfast" on these frames (files ~2.5x
#: larger, still < 1 MB per camera-minute at the demo size); encoding dominates generation time.
VIDEO_PRESET = "ultrafast"
_CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def episode_id(seed: int, index: int) -> str:
    return f"ep{seed:04d}_{index:04d}"


def episode_index(eid: str) -> int:
    """The generator index an `episode_id` encodes (its inverse, for re-planning an episode)."""
    return int(eid.rsplit("_", 1)[1])


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
        "junction_probability",
        "junction_pull_out_probability",
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
    lead = config.junction_pull_out_lead_s
    require(
        isinstance(lead, list | tuple)
        and len(lead) == 2
        and all(isinstance(v, int | float) for v in lead)
        and traffic.MIN_PULL_OUT_LEAD_S <= lead[0] <= lead[1] <= 10.0,
        "junction_pull_out_lead_s",
        f"give [shortest, longest] seconds, {traffic.MIN_PULL_OUT_LEAD_S} <= shortest <= "
        "longest <= 10 (shorter, a yielding ego could not stop before the side road)",
    )
    require(0 <= config.crf <= 51, "crf", "use 0 (lossless) .. 51")
    require(config.camera_fps <= 240.0, "camera_fps", "use <= 240")
    require(
        all(_CAMERA_NAME.match(c) for c in config.cameras),
        "cameras",
        "camera names become file names: use letters, digits, '_' or '-'",
    )
    return config


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _ego_table(p: EpisodePlan, times: np.ndarray) -> pa.Table:
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


def side_vehicle_in_view(
    p: EpisodePlan, camera: CameraModel, cam_t: np.ndarray
) -> tuple[float | None, float | None]:
    """First and last of the times `cam_t` at which `camera` shows the side road's bus (None
    when never): what scenario.json records, and what `motion_cues` asks of the 1 Hz history."""
    ego_s = np.interp(cam_t, p.motion.t, p.motion.ego_s)
    ex, ey, eth, _ = p.lane.at(ego_s)
    far = (1e9, 1e9, 0.0)  # driven off: never in view
    poses = [side_vehicle_pose(p, float(t)) or far for t in cam_t]
    sx, sy, _ = (np.array(a) for a in zip(*poses, strict=True))
    height = 0.5 * traffic.SIDE_VEHICLE_HEIGHT_M
    return in_view(
        camera, cam_t, (ex, ey, eth), (sx, sy, height), traffic.SIDE_VEHICLE_VISIBLE_RANGE_M
    )


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
    p = plan_episode(rng, config)
    junction = p.plan.junction
    world = build_world(
        rng,
        p.road,
        p.plan.stop.line_road_s_m if p.plan.stop else None,
        junction.road_s_m if junction else None,
    )
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
        "side_vehicle": (None, None),
    }
    if p.plan.stop is not None:
        lx, ly = light_position(p.road, p.plan.stop)
        head = float(np.mean(LIGHT_HEAD_Z_M))
        visible["light"] = in_view(
            front,
            cam_t,
            pose,
            (np.full_like(cam_t, lx), np.full_like(cam_t, ly), head),
            traffic.LIGHT_VISIBLE_RANGE_M,
        )
    truck_poses = [truck_pose(p, float(t)) for t in cam_t]
    if p.plan.obstacle is not None:
        # The board's centre: rear face of the truck, wherever it is (it turns off later).
        far = (1e9, 1e9, 0.0)  # gone: never in view
        tx, ty, th = (np.array(a) for a in zip(*(q or far for q in truck_poses), strict=True))
        half = traffic.TRUCK_LENGTH_M / 2
        board = (tx - half * np.cos(th), ty - half * np.sin(th), float(np.mean(TRUCK_BOARD_Z_M)))
        visible["obstacle"] = in_view(front, cam_t, pose, board, traffic.OBSTACLE_VISIBLE_RANGE_M)
    if junction is not None:
        visible["side_vehicle"] = side_vehicle_in_view(p, front, cam_t)
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
            boxes = boxes_at(p, float(t), float(ego_road_s[k]))
            bbs = world.scenery
            if p.plan.stop is not None:
                red = light_is_red(p.motion, float(t))
                bbs = Billboards.concat([world.scenery, light_billboards(p.road, p.plan.stop, red)])
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
    scenario = scenario_record(p, eid, index, config, visible)
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
        with worker_pool(workers, context=get_context("spawn")) as pool:
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
