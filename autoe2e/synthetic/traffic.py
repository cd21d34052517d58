"""Other road users and stop events: what the ego has to see and react to.

* A lead vehicle in the ego lane that cruises below the ego's speed limit (so the ego catches
  up and follows) and brakes hard a few times per episode, brake lights on.
* Oncoming vehicles in the other lane at a constant speed (visual clutter the planner must
  learn to ignore).
* A stop event: a stop line across the ego lane with a traffic light beyond it. The light is red
  while the ego approaches and turns green a few seconds after the ego has stopped; drivers
  react to the green with a human delay, so the camera shows the change before the telemetry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoe2e.config import GenerateConfig
from autoe2e.synthetic.road import Lane, Road

VEHICLE_LENGTH_M = 4.5
VEHICLE_WIDTH_M = 1.8
VEHICLE_HEIGHT_M = 1.5
#: Body colours (no reds, so a red blob in the image is a brake light or a red light).
BODY_COLOURS: tuple[tuple[int, int, int], ...] = (
    (40, 70, 150),
    (200, 200, 205),
    (30, 30, 35),
    (90, 140, 90),
    (225, 200, 60),
    (120, 120, 130),
    (60, 130, 170),
    (240, 240, 240),
)
#: Traffic light position relative to the stop line (beyond it, on the right of the ego lane).
LIGHT_AHEAD_OF_LINE_M = 12.0
LIGHT_LATERAL_OFFSET_M = -5.2


@dataclass(frozen=True)
class BrakeEvent:
    """The lead vehicle brakes at `decel_mps2` from `start_time_s` for `duration_s`."""

    start_time_s: float
    duration_s: float
    decel_mps2: float


@dataclass(frozen=True)
class LeadPlan:
    start_gap_m: float
    cruise_speed_mps: float
    brake_events: tuple[BrakeEvent, ...]
    colour: tuple[int, int, int]
    green_reaction_s: float


@dataclass(frozen=True)
class OncomingVehicle:
    """Drives the other lane towards decreasing road arc length at a constant speed."""

    road_s0_m: float
    speed_mps: float
    colour: tuple[int, int, int]

    def road_s(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.road_s0_m - self.speed_mps * t


@dataclass(frozen=True)
class StopPlan:
    line_road_s_m: float
    #: Seconds between the ego coming to a standstill and the light turning green.
    wait_s: float
    #: Human delay between the light turning green and the ego pulling away.
    ego_green_reaction_s: float


@dataclass(frozen=True)
class TrafficPlan:
    lead: LeadPlan | None
    oncoming: tuple[OncomingVehicle, ...]
    stop: StopPlan | None


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return BODY_COLOURS[int(rng.integers(len(BODY_COLOURS)))]


def plan_lead(rng: np.random.Generator, config: GenerateConfig) -> LeadPlan | None:
    """Lead vehicle with one or two hard-braking events spread over the episode."""
    if rng.random() >= config.lead_vehicle_probability:
        return None
    n_events = 1 if config.duration_s < 20.0 else int(rng.integers(1, 3))
    window = (3.0, config.duration_s - 5.0)
    slots = np.linspace(window[0], window[1], n_events + 1)
    events = []
    for i in range(n_events):
        start = float(rng.uniform(slots[i], max(slots[i], slots[i + 1] - 3.0)))
        events.append(BrakeEvent(start, float(rng.uniform(1.0, 2.2)), float(rng.uniform(4.0, 6.5))))
    return LeadPlan(
        start_gap_m=float(rng.uniform(18.0, 35.0)),
        cruise_speed_mps=float(rng.uniform(0.7, 0.9)) * config.max_speed_mps,
        brake_events=tuple(events),
        colour=_colour(rng),
        green_reaction_s=float(rng.uniform(0.5, 0.8)),
    )


def plan_oncoming(
    rng: np.random.Generator, road: Road, start_road_s: float, config: GenerateConfig
) -> tuple[OncomingVehicle, ...]:
    """A platoon at one speed (so vehicles never overlap), spaced at random gaps >= 20 m."""
    speed = float(rng.uniform(0.45, 0.75)) * config.max_speed_mps
    # Vehicles must cover the road the ego sees during the episode, plus what drives into view.
    span_start = start_road_s - 60.0
    span_end = road.length_m + speed * config.duration_s
    mean_gap = 100.0 / max(config.oncoming_traffic_density, 1e-3)
    vehicles = []
    s = span_start + float(rng.uniform(0.0, mean_gap))
    while config.oncoming_traffic_density > 0 and s < span_end:
        vehicles.append(OncomingVehicle(s, speed, _colour(rng)))
        s += 20.0 + float(rng.exponential(mean_gap))
    return tuple(vehicles)


def plan_stop(
    rng: np.random.Generator,
    road: Road,
    lane: Lane,
    free_time_s: np.ndarray,
    free_lane_s: np.ndarray,
    config: GenerateConfig,
) -> StopPlan | None:
    """Put a stop line where the ego would be ~40-65 % into the episode, on the straightest bit.

    `free_time_s` / `free_lane_s` is the ego's motion without traffic; the ego then reaches the
    line early enough to stop, wait and pull away within the episode.
    """
    if rng.random() >= config.stop_event_probability:
        return None
    frac = float(rng.uniform(0.4, 0.5))
    lane_lo = float(np.interp(frac * config.duration_s, free_time_s, free_lane_s))
    lane_hi = float(np.interp((frac + 0.15) * config.duration_s, free_time_s, free_lane_s))
    candidates = lane.road_s_of(np.linspace(lane_lo, lane_hi, 24))
    half = int(40.0 / (road.s[1] - road.s[0]))
    best, best_cost = float(candidates[0]), np.inf
    for cand in candidates:
        i = int(np.searchsorted(road.s, cand))
        cost = float(np.abs(road.kappa[max(0, i - half) : i + half]).max())
        if cost < best_cost - 1e-6:
            best, best_cost = float(cand), cost
    return StopPlan(
        line_road_s_m=best,
        wait_s=float(rng.uniform(2.0, 3.5)),
        ego_green_reaction_s=float(rng.uniform(0.7, 1.1)),
    )
