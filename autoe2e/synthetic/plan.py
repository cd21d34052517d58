"""The plan of one episode: the road, the traffic events and the simulated drive.

Everything the renderer and the scenario annotations need is decided here, from the episode's
random generator alone, before a single frame is drawn.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from autoe2e.config import GenerateConfig
from autoe2e.synthetic import traffic
from autoe2e.synthetic.ego import Motion, simulate, speed_profile
from autoe2e.synthetic.road import EGO_LANE_OFFSET_M, Lane, Road, build_road, straighten

#: The ego starts this far along the road (so the rear cameras see road behind it).
START_ROAD_S_M = 100.0
#: Road kept beyond the furthest vehicle: what the cameras can see ahead (haze ends at 250 m).
VIEW_AHEAD_M = 260.0


@dataclass
class EpisodePlan:
    road: Road
    lane: Lane
    spans: list
    plan: traffic.TrafficPlan
    motion: Motion


def plan_episode(rng: np.random.Generator, config: GenerateConfig) -> EpisodePlan:
    """Road, then the events: a lead vehicle (with its hard brakes) and a traffic light, or,
    without a lead, a side road with a waiting or crossing bus, else a works truck in the lane
    (or a light when there is no truck). The event goes where the ego would be about half-way,
    from a simulation of the drive without it. A prepared 24 s episode has samples only from
    ~6.4 s to ~17.6 s (6.4 s of ego history before and of trajectory after each), so that is
    where the events should happen."""
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
        junction: traffic.JunctionPlan | None = None,
    ) -> Motion:
        plan = traffic.TrafficPlan(lead, (), stop, obstacle, junction)
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
    # The side road draws from its own stream (spawned, so `rng` is not advanced): episodes
    # without one are exactly those of a world generated before side roads existed.
    junction = None
    side_rng = rng.spawn(1)[0]
    if lead is None and side_rng.random() < config.junction_probability:
        # Where the ego would be 13 s in (the light and truck: 10.8-13.2 s): the bus pulls out
        # ~3 s before the ego gets there (later, after the zone's slowing) and holds it up for
        # ~5 s, inside the sample window. The approach is made straight.
        where = float(lane.road_s_of(np.interp(0.54 * duration, pre.t, pre.ego_s)))
        zone = (where - traffic.JUNCTION_ZONE_M - 10.0, where + 15.0)
        road, spans = straighten(road, spans, *zone)
        lane = road.lane(EGO_LANE_OFFSET_M)
        start_s = float(lane.lane_s_of(START_ROAD_S_M))
        junction = traffic.plan_junction(side_rng, where, config)
        obstacle = stop = None
        # Time the pull-out from a drive through the junction's speed zone past a waiting bus.
        past = drive(None, None, None, dataclasses.replace(junction, pulls_out=False))
        arrive = junction.arrival_time_s(lane, past.t, past.ego_s)
        junction = dataclasses.replace(junction, pull_out_time_s=arrive - junction.pull_out_lead_s)
    motion = drive(lead, stop, obstacle, junction)
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
    plan = traffic.TrafficPlan(lead, oncoming, stop, obstacle, junction)
    return EpisodePlan(road, lane, spans, plan, motion)


def _last(values: np.ndarray | None) -> float:
    return float(values[-1]) if values is not None else -math.inf
