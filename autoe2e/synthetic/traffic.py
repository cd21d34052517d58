"""Other road users, traffic lights and obstacles: what the ego has to see and react to.

* A lead vehicle in the ego lane that cruises below the ego's speed limit (so the ego catches
  up and follows) and brakes hard every few seconds, lighting a full-width brake-lamp bar.
* Oncoming vehicles in the other lane at a constant speed (visual clutter the planner must
  learn to ignore).
* A traffic light with a stop line. It is green while the ego is far away and turns red once
  the ego is close enough to see it (but far enough to stop comfortably); drivers react to the
  change after a human delay, stop, and pull away with a delay after it turns green again. The
  camera therefore shows each change before the ego state does, and the map shows no light.
* An obstacle the map cannot give (episodes without a lead vehicle): a works truck stopped in
  the ego lane with a large amber board on its back. The ego notices it a human perception
  delay (1-1.6 s) after it comes into view and brakes to stop behind it; once the ego waits
  there the truck turns off the road to the right, and the ego pulls away after a delay.
* A side road joining from the right (episodes without a lead vehicle), with a bus on it that
  either waits there or drives on without slowing and crosses in front of the ego. The cue is
  motion only: any single frame of the waiting bus could be a frame of the crossing one, so
  only the 1 Hz history (the world model's input) tells, seconds before the bus reaches the
  give-way line. The ego notices it a perception delay after it pulls out, brakes to yield
  and goes on once the bus has crossed its lane. The map does not show the side road.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoe2e.config import GenerateConfig
from autoe2e.synthetic.road import EGO_LANE_OFFSET_M, Lane, Road

VEHICLE_LENGTH_M = 4.5
VEHICLE_WIDTH_M = 1.8
VEHICLE_HEIGHT_M = 1.5
#: Body colours: no reds, ambers or yellows, so a red blob in the image is a brake lamp or a
#: red light and an amber blob is the works truck's board.
BODY_COLOURS: tuple[tuple[int, int, int], ...] = (
    (40, 70, 150),
    (200, 200, 205),
    (30, 30, 35),
    (90, 140, 90),
    (110, 85, 150),
    (120, 120, 130),
    (60, 130, 170),
    (240, 240, 240),
)
#: Traffic light position relative to the stop line: far enough beyond it that the signal head
#: stays inside the narrow front camera's vertical field of view while the ego waits at the line.
LIGHT_AHEAD_OF_LINE_M = 22.0
LIGHT_LATERAL_OFFSET_M = -5.0
#: A cue counts as visible once it is inside the front camera's view and at most this far away:
#: the distances at which the stored 112 x 64 frames still show it (a lamp or the board is
#: ~3.5 px there). The light turns red and the ego notices the truck only once they are visible,
#: and scenario.json starts the stop and obstacle events there.
LIGHT_VISIBLE_RANGE_M = 80.0
OBSTACLE_VISIBLE_RANGE_M = 90.0
#: The works truck: bigger than a car, so its board is several pixels at 100 m and 112 x 64.
TRUCK_LENGTH_M = 6.0
TRUCK_WIDTH_M = 2.5
TRUCK_HEIGHT_M = 3.0
TRUCK_COLOUR = (235, 235, 230)
#: Turn-off path of the truck: a quarter circle to the right, then straight away from the road.
TURN_RADIUS_M = 9.0
TURN_ACCEL_MPS2 = 1.5
TURN_SPEED_MPS = 6.0
#: The truck counts as out of the ego lane once its centre is this far right of the lane centre.
TRUCK_CLEAR_OFFSET_M = 3.0
#: Drawn until it is this far along its turn-off path (well out of the front camera's view).
TRUCK_GONE_PATH_M = TURN_RADIUS_M * math.pi / 2 + 30.0
#: The side road crosses the ego's road at this angle, its right arm pointing ahead-right: a bus
#: on that arm stays inside the narrow front camera's view for seconds while it approaches (on a
#: perpendicular road it would enter the view only a moment before reaching the junction).
SIDE_ROAD_ANGLE_DEG = 45.0
#: Half its width (across its own axis) and the length of each arm from the junction centre.
SIDE_ROAD_HALF_WIDTH_M = 3.0
SIDE_ROAD_ARM_M = 60.0
#: Vehicles on the side road keep to their right: centre this far from its axis, on the far side
#: from the approaching ego.
SIDE_LANE_OFFSET_M = 1.5
#: The give-way line across the right arm is this far right of the ego road's centre line, ...
GIVE_WAY_OFFSET_M = 5.0
#: ... which is this far along the arm from the junction centre.
GIVE_WAY_ARM_M = GIVE_WAY_OFFSET_M / math.sin(math.radians(SIDE_ROAD_ANGLE_DEG))
#: The side road's vehicle is a bus: 3 s before it pulls out the ego is 60-90 m away, where a
#: car would be 1-2 px tall at 112 x 64 but a bus is 3-5 px, so its approach shows in the 1 Hz
#: history before it pulls out. Its one colour no other object has (magenta, neither
#: red nor amber) lets a colour detector follow it; the waiting and the crossing bus share it.
SIDE_VEHICLE_LENGTH_M = 10.0
SIDE_VEHICLE_WIDTH_M = 2.5
SIDE_VEHICLE_HEIGHT_M = 3.0
SIDE_VEHICLE_COLOUR = (200, 50, 190)


def side_vehicle_pixels(image: np.ndarray) -> np.ndarray:
    """`[H, W, 3]` uint8 frame -> bool mask of the bus's pixels: bright R and B, G well below
    both (no other object is magenta; shading and JPEG keep it inside this band)."""
    r, g, b = (image[..., i].astype(np.int32) for i in range(3))
    return (r >= 110) & (b >= 110) & (g <= 0.6 * np.minimum(r, b))


#: Range at which the stored 112 x 64 front frames still show the bus.
SIDE_VEHICLE_VISIBLE_RANGE_M = 100.0
#: The junction is a 45 km/h zone from this far before it: at 20 m/s the ego would be out of
#: that range until ~2 s before it reacts to a crossing bus; at 12.5 m/s the bus is in view,
#: approaching, for 3-4 s before it pulls out. Waiting and crossing buses alike: the zone says
#: nothing about which it is.
JUNCTION_ZONE_M = 150.0
JUNCTION_SPEED_MPS = 12.5
#: The shortest `junction_pull_out_lead_s` allowed: at the zone's 12.5 m/s, after the longest
#: perception delay (0.8 s, 10 m) the ego still needs ~10 m of its hardest braking (8 m/s^2,
#: jerk-limited) to stop before the side road; 1.8 s leaves it that (tests/test_motion_cues.py).
MIN_PULL_OUT_LEAD_S = 1.8


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
    #: Human delay between a light change and the lead driver's reaction.
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
    #: The light turns red when the ego's front is this far from the line (or earlier, at the
    #: distance it needs to stop at `red_decel_mps2` after its reaction delay).
    red_gap_m: float
    red_decel_mps2: float
    #: Human delay between the light turning red and the ego starting to brake.
    ego_red_reaction_s: float
    #: Seconds between the ego coming to a standstill and the light turning green.
    wait_s: float
    #: Human delay between the light turning green and the ego pulling away.
    ego_green_reaction_s: float


@dataclass(frozen=True)
class ObstaclePlan:
    """A works truck stopped in the ego lane at `road_s_m` (its centre) until it turns off."""

    road_s_m: float
    #: Human delay between the truck coming into view and the ego noticing it.
    perception_s: float
    #: Deceleration of the braking curve the ego then follows to stop behind it.
    brake_decel_mps2: float
    #: Seconds between the ego coming to a standstill behind it and the truck pulling off.
    wait_s: float
    #: Human delay between the truck leaving the lane and the ego pulling away.
    ego_go_reaction_s: float


@dataclass(frozen=True)
class JunctionPlan:
    """A side road crossing the ego's road at `road_s_m` and a bus on its right-hand arm.

    A bus that pulls out drives towards the road at `speed_mps` throughout (it never slows for
    the junction) and crosses both lanes, its front passing the give-way line at
    `pull_out_time_s`; a waiting bus stands with its front `wait_back_m` behind that line for
    the whole episode. The two look alike in any one frame; they differ in motion.
    """

    road_s_m: float
    pulls_out: bool
    speed_mps: float
    #: Seconds between the bus pulling out and the ego reaching the side road, had it not
    #: yielded; `pull_out_time_s` follows from it and a drive past a waiting bus.
    pull_out_lead_s: float
    wait_back_m: float
    #: Human delay between the bus crossing the give-way line and the ego noticing it.
    perception_s: float
    #: Deceleration of the braking curve the ego then follows towards the side road's edge.
    brake_decel_mps2: float
    #: Human delay between the bus leaving the ego lane and the ego going on.
    ego_go_reaction_s: float
    pull_out_time_s: float = math.nan

    def speed_zone(self, lane: Lane) -> tuple[float, float, float]:
        """(from, to, speed): the 45 km/h zone in ego-lane arc length."""
        centre = float(lane.lane_s_of(self.road_s_m))
        return centre - JUNCTION_ZONE_M, centre + SIDE_ROAD_HALF_WIDTH_M, JUNCTION_SPEED_MPS

    def arrival_time_s(self, lane: Lane, time_s: np.ndarray, lane_s: np.ndarray) -> float:
        """When an ego driving (`time_s`, `lane_s`) has its front at the side road's edge."""
        return float(np.interp(self.near_edge_lane_s(lane) - VEHICLE_LENGTH_M / 2, lane_s, time_s))

    def near_edge_lane_s(self, lane: Lane) -> float:
        """Ego-lane arc length of the side road's near edge: where a yielding ego must stop."""
        return float(lane.lane_s_of(self.road_s_m)) + side_road_near_edge_m()

    def arm_position_m(self, t: np.ndarray | float) -> np.ndarray:
        """Where the bus's centre is at time `t`: metres along the right arm from the junction
        centre (negative once a crossing bus is on the far arm)."""
        t = np.asarray(t, np.float64)
        front = np.full_like(t, GIVE_WAY_ARM_M + self.wait_back_m)
        if self.pulls_out:
            front = GIVE_WAY_ARM_M - self.speed_mps * (t - self.pull_out_time_s)
        return front + SIDE_VEHICLE_LENGTH_M / 2

    def clear_time_s(self) -> float | None:
        """When the crossing bus has left the ego lane: its rear corner past the point where
        the side road's axis meets the ego road's centre line (the junction centre)."""
        if not self.pulls_out:
            return None
        path = GIVE_WAY_ARM_M + SIDE_VEHICLE_LENGTH_M + SIDE_VEHICLE_WIDTH_M
        return self.pull_out_time_s + path / self.speed_mps


@dataclass(frozen=True)
class TrafficPlan:
    lead: LeadPlan | None
    oncoming: tuple[OncomingVehicle, ...]
    stop: StopPlan | None
    obstacle: ObstaclePlan | None = None
    junction: JunctionPlan | None = None


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return BODY_COLOURS[int(rng.integers(len(BODY_COLOURS)))]


def plan_lead(rng: np.random.Generator, config: GenerateConfig) -> LeadPlan | None:
    """Lead vehicle that brakes hard every ~4-7 s (about three times in 24 s).

    Brakes are short (0.8-1.6 s) so the lead is back above walking pace before the next one;
    a brake that falls while it is slow or stopping for a light is skipped by the simulator.
    """
    if rng.random() >= config.lead_vehicle_probability:
        return None
    events = []
    start = float(rng.uniform(2.0, 4.0))
    while start < config.duration_s - 3.0:
        duration = float(rng.uniform(0.8, 1.6))
        events.append(BrakeEvent(start, duration, float(rng.uniform(4.0, 6.0))))
        start += duration + float(rng.uniform(3.0, 5.5))
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


def ego_lane_s_between(
    free_time_s: np.ndarray, free_lane_s: np.ndarray, times_s: tuple[float, float]
) -> tuple[float, float]:
    """Lane arc lengths where a simulated ego (`free_time_s`, `free_lane_s`) is at `times_s`."""
    return (
        float(np.interp(times_s[0], free_time_s, free_lane_s)),
        float(np.interp(times_s[1], free_time_s, free_lane_s)),
    )


def _straightest(
    road: Road, lane: Lane, lane_range: tuple[float, float], before_m: float, after_m: float
) -> float:
    """Road arc length, among lane positions in `lane_range`, whose surroundings (`before_m`
    behind to `after_m` ahead) curve least: the narrow front camera then sees the object all the
    way through the approach."""
    candidates = lane.road_s_of(np.linspace(lane_range[0], lane_range[1], 24))
    ds = road.s[1] - road.s[0]
    best, best_cost = float(candidates[0]), np.inf
    for cand in candidates:
        i = int(np.searchsorted(road.s, cand))
        lo, hi = max(0, i - int(before_m / ds)), i + int(after_m / ds) + 1
        cost = float(np.abs(road.kappa[lo:hi]).max())
        if cost < best_cost - 1e-6:
            best, best_cost = float(cand), cost
    return best


def plan_stop(
    rng: np.random.Generator,
    road: Road,
    lane: Lane,
    lane_range: tuple[float, float],
    config: GenerateConfig,
) -> StopPlan | None:
    """A stop line on the straightest bit of `lane_range` (lane arc lengths the caller chose
    from a simulation of the drive, so the ego reaches it in time to stop and pull away)."""
    if rng.random() >= config.stop_event_probability:
        return None
    line = _straightest(road, lane, lane_range, 110.0, 30.0)
    return StopPlan(
        line_road_s_m=line,
        red_gap_m=float(rng.uniform(45.0, 70.0)),
        red_decel_mps2=float(rng.uniform(0.9, 1.1)) * config.comfortable_decel_mps2,
        ego_red_reaction_s=float(rng.uniform(0.6, 1.0)),
        wait_s=float(rng.uniform(2.0, 3.5)),
        ego_green_reaction_s=float(rng.uniform(0.7, 1.1)),
    )


def plan_obstacle(
    rng: np.random.Generator,
    road: Road,
    lane: Lane,
    lane_range: tuple[float, float],
    config: GenerateConfig,
) -> ObstaclePlan | None:
    """A works truck on the straightest stretch of `lane_range` (the 130 m before it are what
    the front camera must see while the ego approaches)."""
    if rng.random() >= config.obstacle_probability:
        return None
    where = _straightest(road, lane, lane_range, 130.0, 10.0)
    return ObstaclePlan(
        road_s_m=where,
        perception_s=float(rng.uniform(1.0, 1.6)),
        brake_decel_mps2=float(rng.uniform(0.9, 1.1)) * config.comfortable_decel_mps2,
        wait_s=float(rng.uniform(1.0, 2.5)),
        ego_go_reaction_s=float(rng.uniform(0.6, 1.0)),
    )


def turn_off_offset(path_m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose of the turning truck after `path_m` metres along its turn-off path, relative to
    where it stood: (forward m, left m, heading change rad). A quarter circle of
    `TURN_RADIUS_M` to the right, then straight on, perpendicular to the road."""
    a = np.maximum(np.asarray(path_m, np.float64), 0.0)
    arc = TURN_RADIUS_M * math.pi / 2
    phi = np.minimum(a, arc) / TURN_RADIUS_M
    beyond = np.maximum(a - arc, 0.0)
    forward = TURN_RADIUS_M * np.sin(phi)
    left = -TURN_RADIUS_M * (1.0 - np.cos(phi)) - beyond
    return forward, left, -phi


def turn_off_path(elapsed_s: np.ndarray | float) -> np.ndarray:
    """Distance along the turn-off path `elapsed_s` after the truck pulls off (accelerates at
    `TURN_ACCEL_MPS2` up to `TURN_SPEED_MPS`)."""
    t = np.maximum(np.asarray(elapsed_s, np.float64), 0.0)
    t_cap = TURN_SPEED_MPS / TURN_ACCEL_MPS2
    ramp = 0.5 * TURN_ACCEL_MPS2 * np.minimum(t, t_cap) ** 2
    return ramp + TURN_SPEED_MPS * np.maximum(t - t_cap, 0.0)


def clear_delay_s() -> float:
    """Seconds from pulling off until the truck's centre is `TRUCK_CLEAR_OFFSET_M` right of the
    lane centre (out of the ego lane)."""
    path = TURN_RADIUS_M * math.acos(1.0 - TRUCK_CLEAR_OFFSET_M / TURN_RADIUS_M)
    t_cap = TURN_SPEED_MPS / TURN_ACCEL_MPS2
    ramp = 0.5 * TURN_ACCEL_MPS2 * t_cap**2
    if path <= ramp:
        return math.sqrt(2.0 * path / TURN_ACCEL_MPS2)
    return t_cap + (path - ramp) / TURN_SPEED_MPS


def side_road_axes(road: Road, road_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The junction at road arc length `road_s`: its centre (x, y) on the road's centre line,
    the unit vector along the right arm (ahead-right at `SIDE_ROAD_ANGLE_DEG`) and the unit
    vector across the side road towards the lane its approaching vehicles keep to."""
    x, y, theta, _ = road.at(road_s)
    arm_heading = float(theta) - math.radians(SIDE_ROAD_ANGLE_DEG)
    arm = np.array([math.cos(arm_heading), math.sin(arm_heading)])
    return np.array([float(x), float(y)]), arm, np.array([-arm[1], arm[0]])


def side_road_near_edge_m() -> float:
    """Arc length, relative to the junction centre, at which the ego lane's centre meets the
    side road's near edge (negative: before the centre)."""
    angle = math.radians(SIDE_ROAD_ANGLE_DEG)
    axis = -EGO_LANE_OFFSET_M / math.tan(angle)  # where the axis crosses the ego lane centre
    return axis - SIDE_ROAD_HALF_WIDTH_M / math.sin(angle)


def plan_junction(
    rng: np.random.Generator, road_s_m: float, config: GenerateConfig
) -> JunctionPlan:
    """A side road at `road_s_m` (the caller makes the road straight for `JUNCTION_ZONE_M`
    before it, what the front camera sees during the approach) and its bus.

    A crossing bus passes the give-way line `junction_pull_out_lead_s` (default 2.4-3.4 s)
    before the ego would reach the side road (the caller times it, from a drive past a waiting
    bus), so the ego has to brake firmly but (at the default) comfortably. A waiting bus stands
    0-25 m back from the line: as far up the arm as a crossing bus is while the camera shows it
    approaching, so its position in one frame does not give it away.
    """
    return JunctionPlan(
        road_s_m=road_s_m,
        pulls_out=bool(rng.random() < config.junction_pull_out_probability),
        speed_mps=float(rng.uniform(4.0, 7.0)),
        pull_out_lead_s=float(rng.uniform(*config.junction_pull_out_lead_s)),
        wait_back_m=float(rng.uniform(0.0, 25.0)),
        perception_s=float(rng.uniform(0.4, 0.8)),
        brake_decel_mps2=float(rng.uniform(0.9, 1.1)) * config.comfortable_decel_mps2,
        ego_go_reaction_s=float(rng.uniform(0.6, 1.0)),
    )
