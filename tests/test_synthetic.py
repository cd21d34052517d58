"""The synthetic world writes contract-conformant, deterministic, kinematically sane episodes
whose cameras show what the ego reacts to (brake lights, traffic lights) before it reacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from autoe2e.config import ConfigError, GenerateConfig
from autoe2e.contract import (
    CAMERA_DIR,
    EGO_FILE,
    EPISODE_JSON,
    MAP_COLUMNS,
    MAP_FILE,
    MAP_KINDS,
    EpisodeMeta,
    check_ego_table,
    check_map_table,
    ego_schema,
)
from autoe2e.synthetic import SCENARIO_FILE, generate_episode, generate_episodes
from autoe2e.synthetic.ego import simulate, speed_profile
from autoe2e.synthetic.render import camera_rig
from autoe2e.synthetic.road import EGO_LANE_OFFSET_M, build_road, straighten
from autoe2e.synthetic.traffic import JUNCTION_SPEED_MPS, TrafficPlan
from autoe2e.video.encode import Mp4Writer

FPS = 30


def tiny(**overrides: object) -> GenerateConfig:
    base = dict(
        num_episodes=2,
        duration_s=12.0,
        seed=7,
        cameras=["front", "rear"],
        image_width=64,
        image_height=48,
        lead_vehicle_probability=1.0,
        stop_event_probability=1.0,
    )
    base.update(overrides)
    return GenerateConfig(**base)  # type: ignore[arg-type]


def decode(path: Path) -> tuple[list[np.ndarray], list[float], av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base))
        return frames, times, stream


def ego(episode: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(episode / EGO_FILE)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def scenario(episode: Path) -> dict:
    return json.loads((episode / SCENARIO_FILE).read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("world")
    ids = generate_episodes(root, tiny(), workers=2)
    return root, ids


def test_episodes_follow_the_contract(world: tuple[Path, list[str]]) -> None:
    root, ids = world
    assert ids == ["ep0007_0000", "ep0007_0001"]
    assert sorted(p.name for p in root.iterdir()) == ids  # no temporary directories left
    for eid in ids:
        ep = root / eid
        meta = EpisodeMeta.from_json((ep / EPISODE_JSON).read_text())
        assert meta.episode_id == eid and meta.cameras == ["front", "rear"]
        assert meta.camera_fps == FPS
        front, rear = meta.camera_info["front"], meta.camera_info["rear"]
        assert (front.intrinsics.width, front.intrinsics.height) == (64, 48)
        # A narrow front camera (GenerateConfig.camera_fov_deg), the default FOV elsewhere.
        assert front.intrinsics.fx == pytest.approx(32 / math.tan(math.radians(22.5)))
        assert rear.intrinsics.fx == pytest.approx(32 / math.tan(math.radians(50)))
        assert front.extrinsics.yaw_rad == 0.0 and rear.extrinsics.yaw_rad == pytest.approx(math.pi)
        assert front.extrinsics.x_m > 0 > rear.extrinsics.x_m

        table = pq.read_table(ep / EGO_FILE)
        check_ego_table(table, eid)
        assert table.schema.equals(ego_schema())
        assert table.num_rows == 12 * FPS
        t = table.column("timestamp_s").to_numpy()
        np.testing.assert_allclose(t, np.arange(12 * FPS) / FPS)

        roads = pq.read_table(ep / MAP_FILE)
        check_map_table(roads, eid)
        assert roads.column_names == list(MAP_COLUMNS)
        assert set(roads.column("kind").to_pylist()) == set(MAP_KINDS)
        for xs, ys in zip(
            roads.column("x_m").to_pylist(), roads.column("y_m").to_pylist(), strict=True
        ):
            assert len(xs) == len(ys) > 10

        sc = scenario(ep)
        assert sc["episode_id"] == eid and sc["lead_vehicle"] is not None
        assert any(e["kind"] == "stop" for e in sc["events"])
        for event in sc["events"]:  # the schema `autoe2e.data.scenarios` relies on
            assert event["kind"] in {"curve", "lead_braking", "stop", "obstacle"}
            start, end = event["start_time_s"], event["end_time_s"]
            assert start is None or 0.0 <= start <= 12.0
            assert end is None or 0.0 <= end <= 12.0
            assert start is None or end is None or start <= end


def test_mp4s_decode_at_exact_frame_times(world: tuple[Path, list[str]]) -> None:
    root, ids = world
    for cam in ("front", "rear"):
        frames, times, stream = decode(root / ids[0] / CAMERA_DIR / f"{cam}.mp4")
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == FPS
        assert len(frames) == 12 * FPS
        assert frames[0].shape == (48, 64, 3)
        np.testing.assert_allclose(times, np.arange(12 * FPS) / FPS, atol=1e-9)
        # The world moves: consecutive frames differ, but only a little (predictable motion).
        diffs = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, frames[1:], strict=False)]
        assert np.mean(diffs) > 0.3
        assert np.median(diffs) < 25


def test_telemetry_is_kinematically_consistent(world: tuple[Path, list[str]]) -> None:
    root, ids = world
    cfg = tiny()
    for eid in ids:
        e = ego(root / eid)
        t, v, a = e["timestamp_s"], e["speed_mps"], e["accel_mps2"]
        np.testing.assert_allclose(e["yaw_rate_rps"], v * e["curvature_1pm"], atol=1e-9)
        # Central differences are no derivative where the speed is clamped at a standstill
        # (the frames around coming to a stop), so those are left out.
        moving = (v[:-2] > 0.05) & (v[1:-1] > 0.05) & (v[2:] > 0.05)
        np.testing.assert_allclose(np.gradient(v, t)[1:-1][moving], a[1:-1][moving], atol=0.35)
        assert np.all(v >= 0) and np.all(v <= cfg.max_speed_mps + 0.05)
        assert np.all(np.abs(a) <= 8.0 + 1e-6)
        curve_limit = np.sqrt(
            cfg.max_lateral_accel_mps2 / np.maximum(np.abs(e["curvature_1pm"]), 1e-9)
        )
        assert np.all(v <= curve_limit + 0.3)
        # Positions integrate the speed along the heading.
        step = np.hypot(np.diff(e["x_m"]), np.diff(e["y_m"]))
        np.testing.assert_allclose(step, 0.5 * (v[1:] + v[:-1]) / FPS, atol=2e-3)
        moving = v[1:] > 1.0
        heading = np.arctan2(np.diff(e["y_m"]), np.diff(e["x_m"]))
        err = np.angle(np.exp(1j * (heading - e["yaw_rad"][1:])))[moving]
        assert np.abs(err).max() < 0.02
        assert np.all(np.abs(e["yaw_rad"]) <= math.pi)


def test_ego_stops_before_the_stop_line(world: tuple[Path, list[str]]) -> None:
    root, ids = world
    stopped = 0
    for eid in ids:
        e = ego(root / eid)
        stop = next(ev for ev in scenario(root / eid)["events"] if ev["kind"] == "stop")
        if stop["ego_stop_time_s"] is None:
            continue
        stopped += 1
        k = int(round(stop["ego_stop_time_s"] * FPS)) + 1
        assert e["speed_mps"][k] < 0.1
        # Stopped behind the line (ahead along its heading), within the trigger range.
        to_line = np.array(
            [stop["stop_line_x_m"] - e["x_m"][k], stop["stop_line_y_m"] - e["y_m"][k]]
        )
        ahead = to_line @ np.array([math.cos(e["yaw_rad"][k]), math.sin(e["yaw_rad"][k])])
        assert 2.0 < ahead < 60.0
        # Before stopping it braked smoothly (no jump in accel bigger than the jerk limits allow).
        assert np.abs(np.diff(e["accel_mps2"][:k])).max() < 20.0 / FPS + 0.05
    assert stopped >= 1


def test_same_seed_same_episode_other_seed_differs(
    world: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, ids = world
    again = generate_episode(tmp_path / "again", 0, tiny())
    assert again == ids[0]
    assert pq.read_table(tmp_path / "again" / again / EGO_FILE).equals(
        pq.read_table(root / ids[0] / EGO_FILE)
    )
    first, _, _ = decode(root / ids[0] / CAMERA_DIR / "front.mp4")
    second, _, _ = decode(tmp_path / "again" / again / CAMERA_DIR / "front.mp4")
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))

    other = generate_episode(tmp_path / "other", 0, tiny(seed=8))
    assert other == "ep0008_0000"
    a, b = ego(root / ids[0]), ego(tmp_path / "other" / other)
    assert not np.allclose(a["x_m"], b["x_m"])


def _red(frame: np.ndarray) -> int:
    """Pixels of saturated red (lit brake lights, red lamp); nothing else in the world is red."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return int(((r > 150) & (r - g > 80) & (r - b > 60)).sum())


def _green(frame: np.ndarray) -> int:
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return int(((g > 170) & (g - r > 90) & (g - b > 50)).sum())


def test_lead_brake_lights_are_visible_in_the_front_camera(tmp_path: Path) -> None:
    # A narrow (tele) front camera: at 100 deg and 160 px the lamps are ~2 px and H.264 chroma
    # subsampling washes them out.
    cfg = tiny(
        cameras=["front"],
        image_width=160,
        image_height=96,
        horizontal_fov_deg=45.0,
        stop_event_probability=0.0,
        oncoming_traffic_density=0.0,
        seed=11,
    )
    eid = generate_episode(tmp_path, 0, cfg)
    frames, _, _ = decode(tmp_path / eid / CAMERA_DIR / "front.mp4")
    red = np.array([_red(f) for f in frames])
    brakes = [
        ev
        for ev in scenario(tmp_path / eid)["events"]
        if ev["kind"] == "lead_braking" and ev["cause"] == "hard_brake"
    ]
    assert brakes, "the lead vehicle should brake at least once"
    for ev in brakes:
        during = red[int(ev["start_time_s"] * FPS) + 3 : int(ev["end_time_s"] * FPS)]
        assert during.min() >= 2, "brake lights must show while the lead brakes hard"
    assert red.min() == 0, "brake lights are off while the lead cruises"
    # The ego reacts after a perception delay: the lights are on before its own braking.
    e = ego(tmp_path / eid)
    first = brakes[0]
    k0 = int(first["start_time_s"] * FPS) + 1
    assert red[k0 + 2] >= 2
    assert e["accel_mps2"][k0 + 2] > e["accel_mps2"][k0 : k0 + 60].min() + 1.0


def test_green_light_is_visible_before_the_ego_moves(tmp_path: Path) -> None:
    cfg = tiny(
        cameras=["front"],
        image_width=160,
        image_height=96,
        lead_vehicle_probability=0.0,
        junction_probability=0.0,
        obstacle_probability=0.0,
        oncoming_traffic_density=0.0,
        duration_s=18.0,
        seed=5,
    )
    eid = generate_episode(tmp_path, 0, cfg)
    stop = next(ev for ev in scenario(tmp_path / eid)["events"] if ev["kind"] == "stop")
    assert stop["ego_stop_time_s"] is not None and stop["green_time_s"] is not None
    assert stop["ego_go_time_s"] is not None
    frames, _, _ = decode(tmp_path / eid / CAMERA_DIR / "front.mp4")
    k_stop = int(stop["ego_stop_time_s"] * FPS)
    k_green = int(math.ceil(stop["green_time_s"] * FPS))
    k_go = int(stop["ego_go_time_s"] * FPS)
    assert k_go - k_green >= 0.5 * FPS, "the ego pulls away with a human reaction delay"
    # Green while far, red once in view, and the ego brakes only after a reaction delay.
    assert stop["light_visible_time_s"] <= stop["red_time_s"] < stop["ego_brake_time_s"] - 0.5
    k_red = int(math.ceil(stop["red_time_s"] * FPS))
    assert _green(frames[k_red - 1]) >= 1 and _red(frames[k_red - 1]) == 0
    assert _red(frames[k_red + 1]) >= 1 and _green(frames[k_red + 1]) == 0
    assert _red(frames[k_stop]) >= 2 and _green(frames[k_stop]) == 0
    assert _green(frames[k_green + 1]) >= 2 and _red(frames[k_green + 1]) == 0
    speed = ego(tmp_path / eid)["speed_mps"]
    assert speed[k_green + 1] < 0.05


def _amber(frame: np.ndarray) -> int:
    """Pixels of the works truck's amber board (no body colour is amber)."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return int(((r > 170) & (g > 0.52 * r) & (g < 0.8 * r) & (b < 0.35 * r)).sum())


def test_ego_stops_for_a_works_truck_it_saw_seconds_earlier(tmp_path: Path) -> None:
    cfg = tiny(
        cameras=["front"],
        image_width=160,
        image_height=96,
        duration_s=24.0,
        lead_vehicle_probability=0.0,
        junction_probability=0.0,
        obstacle_probability=1.0,
        oncoming_traffic_density=0.0,
        seed=3,
    )
    eid = generate_episode(tmp_path, 0, cfg)
    (truck,) = [ev for ev in scenario(tmp_path / eid)["events"] if ev["kind"] == "obstacle"]
    assert not any(ev["kind"] == "stop" for ev in scenario(tmp_path / eid)["events"])
    times = [truck[k] for k in ("appear_time_s", "ego_brake_time_s", "ego_stop_time_s")]
    times += [truck[k] for k in ("pull_off_time_s", "clear_time_s", "ego_go_time_s")]
    assert None not in times and times == sorted(times), times
    appear, brake, stop, _, clear, go = times
    assert brake - appear >= 1.0, "the truck is in view well before the ego reacts"
    assert go >= clear + 0.5, "the ego pulls away with a reaction delay once the lane is clear"
    e = ego(tmp_path / eid)
    k_stop, k_go = int(math.ceil(stop * FPS)) + 1, int(go * FPS) - 1
    assert e["speed_mps"][k_stop:k_go].max() < 0.1
    # A comfortable stop (the last metre at walking pace ends on the brakes).
    moving = e["speed_mps"] > 1.0
    assert e["accel_mps2"][moving].min() > -cfg.comfortable_decel_mps2 - 0.5
    # It stopped a few metres short of where the truck stood (the truck's centre is 3 m
    # beyond its rear; the ego's centre 2.25 m behind its front).
    gap = math.hypot(truck["x_m"] - e["x_m"][k_stop], truck["y_m"] - e["y_m"][k_stop])
    assert 3.0 + 2.25 + 2.0 < gap < 3.0 + 2.25 + 8.0
    frames, _, _ = decode(tmp_path / eid / CAMERA_DIR / "front.mp4")
    amber = np.array([_amber(f) for f in frames])
    k_appear = int(math.ceil(appear * FPS))
    assert amber[k_appear + 3 : int(brake * FPS)].min() >= 1, "visible before the ego brakes"


def _magenta(frame: np.ndarray) -> np.ndarray:
    """Pixels of the side road's bus (no other object is magenta)."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return (r > 120) & (b > 120) & (g < 0.6 * np.minimum(r, b))


def _bus_column(frame: np.ndarray) -> float | None:
    cols = np.flatnonzero(_magenta(frame).any(axis=0))
    return float(cols.mean()) if len(cols) >= 2 else None


def _side_road_world(pulls_out: bool) -> GenerateConfig:
    return tiny(
        cameras=["front"],
        image_width=160,
        image_height=96,
        duration_s=24.0,
        lead_vehicle_probability=0.0,
        junction_probability=1.0,
        junction_pull_out_probability=1.0 if pulls_out else 0.0,
        curve_probability=0.0,
        s_bend_probability=0.0,
        oncoming_traffic_density=0.0,
        seed=3,
    )


def test_ego_yields_to_a_bus_it_saw_approaching_and_ignores_one_that_waits(
    tmp_path: Path,
) -> None:
    """A crossing bus shows in the front camera, moving towards the road, seconds before the
    ego brakes; the ego stays out of the side road until the bus has left its lane. A waiting
    bus moves only as the ego's own motion makes it move (outwards), and the ego never brakes."""
    cfg = _side_road_world(pulls_out=True)
    eid = generate_episode(tmp_path / "crossing", 0, cfg)
    episode = tmp_path / "crossing" / eid
    (bus,) = [ev for ev in scenario(episode)["events"] if ev["kind"] == "crossing_vehicle"]
    assert not any(ev["kind"] in ("stop", "obstacle") for ev in scenario(episode)["events"])
    keys = ("appear_time_s", "pull_out_time_s", "ego_notice_time_s", "ego_brake_time_s")
    times = [bus[k] for k in (*keys, "clear_time_s", "ego_go_time_s")]
    assert None not in times and times == sorted(times), times
    appear, pull_out, _, brake, clear, go = times
    assert brake - appear >= 2.0, "two 1 Hz frames show the bus approaching before the ego reacts"
    assert go >= clear + 0.5, "the ego goes on with a reaction delay once its lane is clear"
    e = ego(episode)
    t = e["timestamp_s"]
    # Where the ego was while the bus was in its lane: short of the side road.
    in_lane = (t >= pull_out) & (t <= clear)
    ahead = np.hypot(bus["x_m"] - e["x_m"][in_lane], bus["y_m"] - e["y_m"][in_lane])
    assert ahead.min() > 2.25 + 3.0, "the ego's front stays out of the side road"
    assert e["speed_mps"][in_lane].min() < 0.6 * e["speed_mps"][t <= pull_out][-1]
    moving = e["speed_mps"] > 1.0
    assert e["accel_mps2"][moving].min() > -6.0, "a firm stop, not an emergency"
    frames, _, _ = decode(episode / CAMERA_DIR / "front.mp4")
    cols = [_bus_column(frames[int(round(s * FPS))]) for s in np.arange(appear + 0.5, brake, 0.5)]
    assert None not in cols and len(cols) >= 4
    assert cols[-1] < cols[0] - 5, f"the crossing bus moves towards the image centre: {cols}"

    cfg = _side_road_world(pulls_out=False)
    eid = generate_episode(tmp_path / "waiting", 0, cfg)
    episode = tmp_path / "waiting" / eid
    (bus,) = [ev for ev in scenario(episode)["events"] if ev["kind"] == "waiting_vehicle"]
    e = ego(episode)
    # It slows for the junction's 45 km/h zone (as it does for a crossing bus), no more.
    assert e["accel_mps2"].min() > -0.5 * cfg.comfortable_decel_mps2 - 0.3, "nothing to yield to"
    assert e["speed_mps"].min() > JUNCTION_SPEED_MPS - 0.5
    frames, _, _ = decode(episode / CAMERA_DIR / "front.mp4")
    seen = np.arange(bus["appear_time_s"] + 0.5, bus["visible_until_s"] - 0.2, 0.5)
    cols = [_bus_column(frames[int(round(s * FPS))]) for s in seen]
    assert None not in cols and len(cols) >= 4
    assert cols[-1] > cols[0] + 5, f"the waiting bus drifts outwards as the ego nears: {cols}"


def test_straightening_a_stretch_keeps_the_road_smooth_and_re_measures_its_curves() -> None:
    """A junction's approach is made straight; curvature (the ego's yaw rate) stays continuous
    and the curve spans describe the road that is left."""
    cfg = GenerateConfig(curve_probability=0.8, s_bend_probability=0.2)
    checked = 0
    for seed in range(4):
        road, spans = build_road(np.random.default_rng(seed), 900.0, cfg, lead_in_m=100.0)
        lo, hi = 250.0, 600.0
        flat, kept = straighten(road, spans, lo, hi)
        inside = (flat.s >= lo) & (flat.s <= hi)
        assert np.abs(flat.kappa[inside]).max() == 0.0
        assert np.abs(np.diff(flat.kappa)).max() <= np.abs(np.diff(road.kappa)).max() + 1e-3
        # Heading is the integral of curvature; positions follow the heading.
        step = np.hypot(np.diff(flat.x), np.diff(flat.y))
        assert np.allclose(step, np.diff(flat.s), atol=1e-6)
        assert np.allclose(flat.kappa[flat.s < lo - 40.0], road.kappa[road.s < lo - 40.0])
        for span in kept:
            where = (flat.s >= span.road_s_start_m) & (flat.s <= span.road_s_end_m)
            assert abs(span.peak_curvature_1pm) == pytest.approx(np.abs(flat.kappa[where]).max())
        gone = [sp for sp in spans if lo <= sp.road_s_start_m and sp.road_s_end_m <= hi]
        assert not set(gone) & set(kept)
        checked += len(gone)
    assert checked >= 1, "some curve lay wholly inside a straightened stretch"


def test_ego_slows_before_sharp_curves() -> None:
    cfg = GenerateConfig(curve_probability=1.0, s_bend_probability=0.0, duration_s=40.0)
    steps_per_s = 100  # SIM_DT_S = 0.01
    checked = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        road, spans = build_road(rng, 900.0, cfg, lead_in_m=100.0)
        lane = road.lane(EGO_LANE_OFFSET_M)
        start = float(lane.lane_s_of(20.0))
        m = simulate(lane, TrafficPlan(None, (), None), cfg, start, cfg.max_speed_mps, 40.0)
        for span in spans:
            peak = abs(span.peak_curvature_1pm)
            in_span = (road.s >= span.road_s_start_m) & (road.s <= span.road_s_end_m)
            arc_road_s = road.s[in_span & (np.abs(road.kappa) >= 0.99 * peak)][0]
            hits = np.flatnonzero(m.ego_s >= lane.lane_s_of(arc_road_s))
            if len(hits) == 0 or hits[0] < 5 * steps_per_s:
                continue
            k_arc = int(hits[0])
            lane_kappa = abs(float(np.interp(m.ego_s[k_arc], lane.s, lane.kappa)))
            limit = math.sqrt(cfg.max_lateral_accel_mps2 / lane_kappa)
            if m.ego_v[k_arc - 4 * steps_per_s] < limit + 3.0:
                continue  # nothing to brake for
            assert m.ego_v[k_arc] <= limit + 0.3
            braking = m.ego_a[:k_arc] < -0.2
            last = int(np.flatnonzero(braking)[-1])  # end of the braking run before the arc
            k_brake = last + 1 - int(np.argmin(braking[: last + 1][::-1]))
            # Braking starts >= 2 s and >= 40 m before the arc: the curve is in view by then.
            assert k_arc - k_brake >= 2 * steps_per_s
            assert m.ego_s[k_arc] - m.ego_s[k_brake] >= 40.0
            checked += 1
    assert checked >= 2
    prof = speed_profile(lane, 20.0, 2.5, 1.5)
    decel = -np.diff(prof**2) / (2 * np.diff(lane.s))
    assert decel.max() <= 1.5 + 1e-6


def test_camera_rig_names_and_yaws() -> None:
    rig = camera_rig(tiny(cameras=["front", "left", "right", "rear"]))
    assert [round(math.degrees(c.extrinsics.yaw_rad)) for c in rig] == [0, 90, -90, 180]
    rig = camera_rig(tiny(cameras=["a", "b", "c"]))
    assert [round(math.degrees(c.extrinsics.yaw_rad)) for c in rig] == [0, 120, 240]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"curve_probability": 1.5}, "curve_probability"),
        ({"curve_probability": 0.7, "s_bend_probability": 0.5}, "curve_probability"),
        ({"horizontal_fov_deg": 190.0}, "horizontal_fov_deg"),
        ({"camera_fov_deg": {"front": 5.0}}, "camera_fov_deg"),
        ({"obstacle_probability": -0.1}, "obstacle_probability"),
        ({"junction_probability": 1.2}, "junction_probability"),
        ({"junction_pull_out_probability": -1.0}, "junction_pull_out_probability"),
        ({"junction_pull_out_lead_s": [1.5, 3.0]}, "junction_pull_out_lead_s"),
        ({"junction_pull_out_lead_s": [3.0, 2.0]}, "junction_pull_out_lead_s"),
        ({"junction_pull_out_lead_s": [2.5]}, "junction_pull_out_lead_s"),
        ({"cameras": ["front", "front/left"]}, "cameras"),
        ({"crf": 60}, "crf"),
        ({"duration_s": 5.0}, "duration_s"),
        ({"image_width": 63}, "image_width"),
        ({"cameras": ["front", "front"]}, "cameras"),
    ],
)
def test_bad_configs_are_rejected_by_name(tmp_path: Path, overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        generate_episode(tmp_path, 0, tiny(**overrides))
    assert not any(tmp_path.iterdir())


def test_bad_worker_count_and_odd_frames_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workers"):
        generate_episodes(tmp_path, tiny(), workers=-1)
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(tmp_path / "x.mp4", 63, 48, 30)
    with (
        Mp4Writer(tmp_path / "y.mp4", 64, 48, 30) as writer,
        pytest.raises(ValueError, match="expected"),
    ):
        writer.write(np.zeros((48, 64), np.uint8))
