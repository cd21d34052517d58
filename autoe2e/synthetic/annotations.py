"""The episode's ground-truth events (`scenario.json`): curves, lead braking, stops at the
light, the works truck and the side road's bus, each with its times on the episode clock."""

from __future__ import annotations

import numpy as np

from autoe2e.config import GenerateConfig
from autoe2e.synthetic import traffic
from autoe2e.synthetic.ego import SIM_DT_S, Motion
from autoe2e.synthetic.plan import START_ROAD_S_M, EpisodePlan
from autoe2e.synthetic.road import EGO_LANE_OFFSET_M, Lane
from autoe2e.synthetic.scene import light_position


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


def _lead_braking_events(p: EpisodePlan) -> list[dict]:
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


def _side_vehicle_events(p: EpisodePlan, seen: tuple[float | None, float | None]) -> list[dict]:
    """The side road's bus: `crossing_vehicle` when it pulls out in front of the ego (with the ego's
    reaction), `waiting_vehicle` when it stays; nothing when it never came into view."""
    junction, m = p.plan.junction, p.motion
    if junction is None or seen[0] is None:
        return []
    x, y = p.road.offset(junction.road_s_m, 0.0)
    event: dict = {
        "kind": "crossing_vehicle" if junction.pulls_out else "waiting_vehicle",
        "start_time_s": seen[0],
        "end_time_s": _time_at(m, p.lane, junction.road_s_m),
        "x_m": round(float(x), 3),
        "y_m": round(float(y), 3),
        "road_s_m": round(junction.road_s_m, 2),
        "appear_time_s": seen[0],
        "visible_until_s": seen[1],
    }
    if junction.pulls_out:
        notice = m.junction_ego_notice_time_s
        event.update(
            speed_mps=round(junction.speed_mps, 3),
            pull_out_time_s=round(junction.pull_out_time_s, 3),
            ego_notice_time_s=_round(notice),
            ego_brake_time_s=None if notice is None else _ego_brake_after(m, notice),
            ego_stop_time_s=_round(m.junction_ego_stop_time_s),
            clear_time_s=_round(junction.clear_time_s()),
            ego_go_time_s=_round(m.junction_ego_go_time_s),
        )
    else:
        event["wait_back_m"] = round(junction.wait_back_m, 2)
    return [event]


def scenario_record(
    p: EpisodePlan,
    eid: str,
    index: int,
    config: GenerateConfig,
    visible: dict[str, tuple[float | None, float | None]],
) -> dict:
    """Ground-truth events for per-scenario evaluation and vision tests.

    Every event has `kind` (curve, lead_braking, stop, obstacle, crossing_vehicle, waiting_vehicle)
    and `start_time_s` / `end_time_s` on the episode clock: null start = began before the
    episode, null end = still going at its end. Curves span entry to exit; lead braking spans
    the lamps being on; a stop spans the light coming into view (front camera, <=
    LIGHT_VISIBLE_RANGE_M) to the ego passing it; an obstacle spans the truck coming into view
    to the ego passing where it stood; the side road's bus spans its coming into view to the
    ego reaching the side road.
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
        light_x, light_y = light_position(p.road, stop)
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
    events += _side_vehicle_events(p, visible["side_vehicle"])
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
