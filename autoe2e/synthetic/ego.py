"""Longitudinal driving model for the ego and the lead vehicle (both follow their lane centre).

Speed is the only control: lateral motion is exact lane following, so the telemetry is
kinematically consistent by construction (yaw rate = speed x curvature of the driven lane,
accel = d speed / dt of the simulated speed). The longitudinal command is the minimum of

* speed tracking of a curve-aware profile: v <= sqrt(a_lat_max / |kappa|), capped at the speed
  limit and pre-braked backwards at a gentle deceleration, so the ego slows seconds *before* a
  curve (the curve is in the images before it shows in the ego state);
* car following (IDM) behind the lead vehicle, using the lead's state as seen with a human
  perception delay (brake lamps appear in the camera before the ego reacts);
* stopping at the stop line once the light has turned red, after a human reaction delay (the
  light changes in the camera before the ego brakes), and pulling away after it turns green;
* stopping behind a works truck in the lane: the ego notices it a perception delay after it
  comes into the front camera's view and then follows a comfortable braking curve; it pulls
  away once the truck has turned off, again after a reaction delay;
* yielding to a bus that pulls out of a side road: the ego notices it a perception delay after
  it crosses the give-way line, brakes towards the side road's edge and goes on, after a
  reaction delay, once the bus has left its lane (a bus that waits changes nothing).

The command passes through a jerk limit, so acceleration is continuous and future motion is
predictable from the past.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from autoe2e.config import GenerateConfig
from autoe2e.synthetic.render import forward_camera
from autoe2e.synthetic.road import EGO_LANE_OFFSET_M, Lane
from autoe2e.synthetic.traffic import (
    LIGHT_AHEAD_OF_LINE_M,
    LIGHT_LATERAL_OFFSET_M,
    LIGHT_VISIBLE_RANGE_M,
    OBSTACLE_VISIBLE_RANGE_M,
    TRUCK_LENGTH_M,
    VEHICLE_LENGTH_M,
    BrakeEvent,
    TrafficPlan,
    clear_delay_s,
)

#: Simulation step; outputs are interpolated to camera and telemetry times.
SIM_DT_S = 0.01
MAX_ACCEL_MPS2 = 2.0
MAX_BRAKE_MPS2 = 8.0
#: Jerk limits: comfortable, and for emergency braking behind a hard-braking lead.
JERK_MPS3 = 4.0
EMERGENCY_JERK_MPS3 = 20.0
SPEED_GAIN_1PS = 1.2
#: The speed target is read this far ahead (seconds at the current speed).
PROFILE_LOOKAHEAD_S = 0.5
#: Fraction of the comfortable deceleration used to pre-brake for curves.
CURVE_DECEL_FRACTION = 0.5
#: IDM parameters (minimum gap, time headway, accel, perception delay of the lead's state).
IDM_MIN_GAP_M = 4.0
IDM_HEADWAY_S = 1.4
IDM_ACCEL_MPS2 = 2.0
PERCEPTION_DELAY_S = 0.5
#: Front bumper stops this far before the stop line.
STOP_MARGIN_M = 1.0
#: The light turns green only once the ego has stopped within this distance of the line.
LIGHT_TRIGGER_RANGE_M = 60.0
#: The lead stops for a light that turns red only if, after its reaction delay, it can do so at
#: this deceleration (else it is too close to the line and drives on, as drivers do on amber).
LEAD_MAX_LIGHT_DECEL_MPS2 = 4.5
#: Brake lamps come on below this commanded acceleration and go off above the second one; the
#: hysteresis keeps them from flickering while the command hovers around one threshold.
LAMP_ON_MPS2, LAMP_OFF_MPS2 = -1.0, -0.3
#: The ego's front stops this far behind the works truck's rear.
OBSTACLE_GAP_M = 4.0
#: The ego notices the truck (once in view) at the latest when stopping would need this
#: multiple of its braking curve's deceleration: a fast ego cannot wait out its perception delay.
FIRM_STOP_FACTOR = 1.4
#: ... and in any case at this gap (when a bend hid the truck until then).
OBSTACLE_MIN_NOTICE_M = 25.0
#: The truck pulls off only once the ego waits within this distance behind it.
OBSTACLE_TRIGGER_RANGE_M = 30.0
#: Yielding to a crossing bus, the ego's front stops this far before the side road's edge.
JUNCTION_GAP_M = 1.5
#: A light or truck counts as in view this far inside the edge of the front camera's view.
VIEW_MARGIN_DEG = 2.0


def speed_profile(
    lane: Lane,
    v_cap: float,
    a_lat: float,
    decel: float,
    zone: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Highest speed per lane sample that respects lateral accel, a speed `zone` (from, to,
    speed in lane arc length) and can brake for what follows.

    Backward pass: v[i] = min(limit[i], sqrt(v[i+1]^2 + 2 decel ds)).
    """
    limit = np.minimum(v_cap, np.sqrt(a_lat / np.maximum(np.abs(lane.kappa), 1e-9)))
    if zone is not None:
        inside = (lane.s >= zone[0]) & (lane.s <= zone[1])
        limit[inside] = np.minimum(limit[inside], zone[2])
    out = limit.copy()
    ds = np.diff(lane.s)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], math.sqrt(out[i + 1] ** 2 + 2.0 * decel * ds[i]))
    return out


@dataclass
class Motion:
    """Simulated longitudinal motion at `SIM_DT_S`, lane arc length along the ego lane.

    Event times are seconds on the episode clock, None when the event did not happen.
    """

    t: np.ndarray
    ego_s: np.ndarray
    ego_v: np.ndarray
    ego_a: np.ndarray
    lead_s: np.ndarray | None = None
    lead_v: np.ndarray | None = None
    lead_a: np.ndarray | None = None
    lead_brake_light: np.ndarray | None = None
    #: The light turns red (it is green before), the ego reacts to it (a reaction delay
    #: later), stops, the light turns green, the ego pulls away.
    red_time_s: float | None = None
    ego_light_reaction_time_s: float | None = None
    ego_stop_time_s: float | None = None
    green_time_s: float | None = None
    ego_go_time_s: float | None = None
    #: Whether the lead stopped for the red light (False: it was too close and drove on).
    lead_stops_for_light: bool | None = None
    #: Works truck: the ego notices it (and brakes once its braking curve says so), stops
    #: behind it, the truck pulls off, is out of the ego lane, the ego pulls away.
    obstacle_ego_notice_time_s: float | None = None
    obstacle_ego_stop_time_s: float | None = None
    obstacle_pull_off_time_s: float | None = None
    obstacle_clear_time_s: float | None = None
    obstacle_ego_go_time_s: float | None = None
    #: Side road bus that pulls out: the ego notices it, stops (when it has to) and goes on.
    junction_ego_notice_time_s: float | None = None
    junction_ego_stop_time_s: float | None = None
    junction_ego_go_time_s: float | None = None
    #: Brake events the lead actually executed (events while it stops for a light are skipped).
    lead_brake_events: list[BrakeEvent] = field(default_factory=list)
    min_gap_m: float = math.inf


@dataclass
class _Vehicle:
    s: float
    v: float
    a: float = 0.0
    stopping: bool = False
    #: Commands below -hard_mps2 are emergencies and use the emergency jerk (above it, e.g. a
    #: firm stop at a light, the comfortable one).
    hard_mps2: float = 2.5
    #: Release hard braking at the emergency jerk too (the lead: a driver lifting off after a
    #: short hard brake; released at the comfortable jerk it would roll to a halt every time).
    quick_release: bool = False

    def step(self, a_des: float, dt: float) -> float:
        """Apply the jerk-limited command; returns the realised acceleration dv/dt."""
        if self.v <= 0.0 and a_des <= 0.0:
            self.a = 0.0  # standing still on the brakes
            return 0.0
        a_des = max(a_des, -MAX_BRAKE_MPS2)
        hard = a_des < -self.hard_mps2 or (self.quick_release and self.a < -self.hard_mps2)
        jerk = EMERGENCY_JERK_MPS3 if hard else JERK_MPS3
        self.a += min(max(a_des - self.a, -jerk * dt), jerk * dt)
        v_new = max(0.0, self.v + self.a * dt)
        realised = (v_new - self.v) / dt
        self.s += 0.5 * (self.v + v_new) * dt
        self.v = v_new
        return realised


def _track(profile: np.ndarray, lane: Lane, veh: _Vehicle, v_cap: float, comf: float) -> float:
    """Follow the speed profile: feed-forward of its slope (dv/dt = v dv/ds) plus a P term."""
    ahead = veh.s + veh.v * PROFILE_LOOKAHEAD_S
    target = float(np.interp(ahead, lane.s, profile))
    slope = float(np.interp(ahead + 1.0, lane.s, profile)) - target
    here = float(np.interp(veh.s, lane.s, profile))
    if here < target:  # leaving a curve: do not speed up before the limit here allows it
        target, slope = here, 0.0
    if target >= v_cap:
        target, slope = v_cap, 0.0
    command = slope * target + SPEED_GAIN_1PS * (target - veh.v)
    return min(max(command, -comf), MAX_ACCEL_MPS2)


def _stop_command(veh: _Vehicle, line_s: float, red: bool, stop_decel: float) -> float:
    """Stop at the line while the light is red (inf = no constraint).

    Follows the braking curve v_des = sqrt(2 b gap) with feed-forward -b, but never brakes
    harder than the constant deceleration v^2 / (2 gap) that stops exactly at the line; far from
    the line (or when stopped short of it) the command is positive, so the vehicle rolls up.
    A vehicle already past the line when it turns red drives on; one that was stopping for it
    and overshoots a little (jerk limits) holds there instead of driving through the red.
    """
    gap = line_s - STOP_MARGIN_M - (veh.s + VEHICLE_LENGTH_M / 2)
    if not red or (gap < -STOP_MARGIN_M and not veh.stopping):
        veh.stopping = False
        return math.inf
    if gap <= 0.05:
        # At the line: stop within the margin (gently when slow, a jerk-limited approach may
        # arrive at walking pace) and then hold.
        veh.stopping = True
        soft = veh.v * veh.v / (2.0 * max(gap + STOP_MARGIN_M, 0.05))
        return -min(MAX_BRAKE_MPS2, max(1.0, soft))
    need = veh.v * veh.v / (2.0 * gap)
    follow = -stop_decel + SPEED_GAIN_1PS * (math.sqrt(2.0 * stop_decel * gap) - veh.v)
    command = max(-need, follow)
    veh.stopping = command < 0.0
    return command


def _idm(ego: _Vehicle, lead_s: float, lead_v: float, comf: float) -> float:
    gap = max(lead_s - ego.s - VEHICLE_LENGTH_M, 0.1)
    dv = ego.v - lead_v
    desired = (
        IDM_MIN_GAP_M + ego.v * IDM_HEADWAY_S + ego.v * dv / (2 * math.sqrt(IDM_ACCEL_MPS2 * comf))
    )
    return IDM_ACCEL_MPS2 * (1.0 - (max(desired, 0.0) / gap) ** 2)


class _View:
    """Whether a point beside the ego lane is in the ego's forward view (the horizontal FOV of
    `render.forward_camera`) and within range. The light turns red and the ego notices the
    truck only once they are in view, so the cue is in the front images before the ego reacts
    even where the road bends."""

    def __init__(self, lane: Lane, config: GenerateConfig) -> None:
        self.lane = lane
        intr = forward_camera(config).intrinsics
        half = math.atan((intr.width / 2) / intr.fx)
        self.half_fov = half - math.radians(VIEW_MARGIN_DEG)

    def sees(self, ego_s: float, lane_s: float, left_m: float, max_range_m: float) -> bool:
        x, y, theta, _ = self.lane.at(ego_s)
        tx, ty, t_theta, _ = self.lane.at(lane_s)
        dx = float(tx - left_m * math.sin(t_theta) - x)
        dy = float(ty + left_m * math.cos(t_theta) - y)
        bearing = math.remainder(math.atan2(dy, dx) - float(theta), 2 * math.pi)
        return math.hypot(dx, dy) <= max_range_m and abs(bearing) <= self.half_fov


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else float(value)


def simulate(
    lane: Lane,
    plan: TrafficPlan,
    config: GenerateConfig,
    start_s: float,
    start_v: float,
    duration_s: float,
) -> Motion:
    """Run ego (and lead) from `start_s` / `start_v` for `duration_s`; see module docstring."""
    if plan.lead is not None and plan.obstacle is not None:
        raise ValueError("a lead vehicle and a works truck in one lane are not modelled")
    if plan.junction is not None and (plan.lead or plan.obstacle or plan.stop):
        raise ValueError("a side road bus goes only with a free ego (no lead, truck or light)")
    comf = config.comfortable_decel_mps2
    zone = plan.junction.speed_zone(lane) if plan.junction is not None else None
    profile = speed_profile(
        lane,
        config.max_speed_mps,
        config.max_lateral_accel_mps2,
        CURVE_DECEL_FRACTION * comf,
        zone,
    )
    n = int(round(duration_s / SIM_DT_S)) + 1
    t = np.arange(n) * SIM_DT_S
    hard = comf + 0.5
    ego = _Vehicle(start_s, start_v, hard_mps2=hard)
    ego_s, ego_v, ego_a = np.empty(n), np.empty(n), np.zeros(n)
    lead = None
    if plan.lead is not None:
        lead = _Vehicle(
            start_s + VEHICLE_LENGTH_M + plan.lead.start_gap_m,
            start_v,
            hard_mps2=hard,
            quick_release=True,
        )
        lead_cap = plan.lead.cruise_speed_mps
        lead_s, lead_v, lead_a = np.empty(n), np.empty(n), np.zeros(n)
        lead_light = np.zeros(n, dtype=bool)
    stop = plan.stop
    line_s = float(lane.lane_s_of(stop.line_road_s_m)) if stop else math.inf
    view = _View(lane, config)
    if stop is not None:
        light_s = float(lane.lane_s_of(stop.line_road_s_m + LIGHT_AHEAD_OF_LINE_M))
        light_left = LIGHT_LATERAL_OFFSET_M - EGO_LANE_OFFSET_M
    obstacle = plan.obstacle
    # A virtual stop line that halts the ego's front OBSTACLE_GAP_M behind the truck's rear.
    truck_rear = (
        float(lane.lane_s_of(obstacle.road_s_m)) - TRUCK_LENGTH_M / 2 if obstacle else math.inf
    )
    truck_line = truck_rear - OBSTACLE_GAP_M + STOP_MARGIN_M
    junction = plan.junction if plan.junction is not None and plan.junction.pulls_out else None
    if junction is not None:
        # Yield: the ego's front stops JUNCTION_GAP_M before the side road's near edge.
        side_edge = junction.near_edge_lane_s(lane)
        junction_line = side_edge - JUNCTION_GAP_M + STOP_MARGIN_M
        junction_from = junction.pull_out_time_s + junction.perception_s
        junction_until = junction.clear_time_s() + junction.ego_go_reaction_s
    delay_steps = int(round(PERCEPTION_DELAY_S / SIM_DT_S))
    motion = Motion(t=t, ego_s=ego_s, ego_v=ego_v, ego_a=ego_a)
    red = green = math.inf
    lead_stops = False
    seen = noticed = pull_off = math.inf
    lamp = False
    started: set = set()
    skipped: set = set()
    for k in range(n):
        now = t[k]
        ego_s[k], ego_v[k] = ego.s, ego.v
        if lead is not None:
            lead_s[k], lead_v[k] = lead.s, lead.v
            motion.min_gap_m = min(motion.min_gap_m, lead.s - ego.s - VEHICLE_LENGTH_M)
        if k == n - 1:
            break
        front = ego.s + VEHICLE_LENGTH_M / 2
        # Light: red once the ego is close enough (and can still stop), green once it waited.
        if stop is not None and math.isinf(red):
            gap_line = line_s - STOP_MARGIN_M - front
            need = ego.v * stop.ego_red_reaction_s + ego.v**2 / (2.0 * stop.red_decel_mps2)
            if 0.0 < gap_line <= max(stop.red_gap_m, need + 2.0) and view.sees(
                ego.s, light_s, light_left, LIGHT_VISIBLE_RANGE_M
            ):
                red = float(now)
                if lead is not None:
                    lead_gap = line_s - STOP_MARGIN_M - (lead.s + VEHICLE_LENGTH_M / 2)
                    reaction_m = lead.v * plan.lead.green_reaction_s
                    lead_need = reaction_m + lead.v**2 / (2.0 * LEAD_MAX_LIGHT_DECEL_MPS2)
                    lead_stops = bool(lead_gap > lead_need + 1.0)
        if stop is not None and now >= red and math.isinf(green):
            gap_line = line_s - (ego.s + VEHICLE_LENGTH_M / 2)
            if ego.v < 0.05 and 0.0 < gap_line < LIGHT_TRIGGER_RANGE_M:
                green = now + stop.wait_s
                motion.ego_stop_time_s = float(now)
        if (
            motion.ego_stop_time_s is not None
            and motion.ego_go_time_s is None
            and now > green
            and ego.v > 0.1
        ):
            motion.ego_go_time_s = float(now)
        # Works truck: noticed a perception delay after it comes into view.
        if obstacle is not None:
            gap_truck = truck_rear - OBSTACLE_GAP_M - front
            if math.isinf(seen) and view.sees(ego.s, truck_rear, 0.0, OBSTACLE_VISIBLE_RANGE_M):
                seen = float(now)
            if math.isinf(noticed):
                # After the perception delay, or as soon as seen when waiting that long would
                # need harder than a firm stop (a fast ego), or at the last moment.
                firm = ego.v**2 / (2.0 * FIRM_STOP_FACTOR * obstacle.brake_decel_mps2) + 2.0
                late = not math.isinf(seen) and gap_truck <= firm
                if (
                    now >= seen + obstacle.perception_s
                    or late
                    or gap_truck <= OBSTACLE_MIN_NOTICE_M
                ):
                    noticed = float(now)
            elif math.isinf(pull_off) and ego.v < 0.05 and gap_truck < OBSTACLE_TRIGGER_RANGE_M:
                pull_off = now + obstacle.wait_s
                motion.obstacle_ego_stop_time_s = float(now)
            clear = pull_off + clear_delay_s()
            if (
                motion.obstacle_ego_stop_time_s is not None
                and motion.obstacle_ego_go_time_s is None
                and now > clear
                and ego.v > 0.1
            ):
                motion.obstacle_ego_go_time_s = float(now)
        # Lead vehicle.
        if lead is not None:
            a_cmd = _track(profile, lane, lead, lead_cap, comf)
            reaction = plan.lead.green_reaction_s
            red_for_lead = lead_stops and red + reaction <= now < green + reaction
            a_cmd = min(a_cmd, _stop_command(lead, line_s, red_for_lead, 0.5 * comf))
            # A brake event starts only when the lead is cruising (not stopping for the light).
            for ev in plan.lead.brake_events:
                if ev in skipped:
                    continue
                if ev not in started and now >= ev.start_time_s:
                    if lead.stopping or lead.v < 6.0:
                        skipped.add(ev)
                        continue
                    started.add(ev)
                if ev in started and now < ev.start_time_s + ev.duration_s:
                    a_cmd = -ev.decel_mps2
            lead_a[k] = lead.step(a_cmd, SIM_DT_S)
            if a_cmd < LAMP_ON_MPS2 or lead.v < 0.3:
                lamp = True
            elif a_cmd > LAMP_OFF_MPS2:
                lamp = False
            lead_light[k] = lamp
        # Ego: min of profile tracking, car following, the stop line, the works truck, the bus.
        a_cmd = _track(profile, lane, ego, config.max_speed_mps, comf)
        if lead is not None:
            j = max(0, k - delay_steps)
            seen_s = lead_s[j] + lead_v[j] * (now - t[j])
            a_cmd = min(a_cmd, _idm(ego, seen_s, lead_v[j], comf))
        if stop is not None:
            red_for_ego = red + stop.ego_red_reaction_s <= now < green + stop.ego_green_reaction_s
            a_cmd = min(a_cmd, _stop_command(ego, line_s, red_for_ego, stop.red_decel_mps2))
        if obstacle is not None:
            blocked = noticed <= now < pull_off + clear_delay_s() + obstacle.ego_go_reaction_s
            a_cmd = min(a_cmd, _stop_command(ego, truck_line, blocked, obstacle.brake_decel_mps2))
        if junction is not None:
            yielding = junction_from <= now < junction_until
            a_cmd = min(
                a_cmd, _stop_command(ego, junction_line, yielding, junction.brake_decel_mps2)
            )
            if yielding and ego.v < 0.05 and motion.junction_ego_stop_time_s is None:
                motion.junction_ego_stop_time_s = float(now)
            # Goes on: rolls again after a stop, else is released from yielding.
            rolling = motion.junction_ego_stop_time_s is None or ego.v > 0.1
            if now >= junction_until and motion.junction_ego_go_time_s is None and rolling:
                motion.junction_ego_go_time_s = float(now)
        ego_a[k] = ego.step(a_cmd, SIM_DT_S)
    ego_a[-1] = ego_a[-2]
    if lead is not None:
        lead_a[-1] = lead_a[-2]
        lead_light[-1] = lead_light[-2]
        motion.lead_s, motion.lead_v, motion.lead_a = lead_s, lead_v, lead_a
        motion.lead_brake_light = lead_light
        motion.lead_brake_events = [ev for ev in plan.lead.brake_events if ev in started]
    if stop is not None:
        motion.red_time_s = _finite(red)
        if not math.isinf(red) and red + stop.ego_red_reaction_s <= duration_s:
            motion.ego_light_reaction_time_s = red + stop.ego_red_reaction_s
        if lead is not None and motion.red_time_s is not None:
            motion.lead_stops_for_light = lead_stops
    motion.green_time_s = _finite(green) if green <= duration_s else None
    if junction is not None and junction_from <= duration_s:
        motion.junction_ego_notice_time_s = float(junction_from)
    if obstacle is not None:
        motion.obstacle_ego_notice_time_s = _finite(noticed)
        if pull_off <= duration_s:
            motion.obstacle_pull_off_time_s = float(pull_off)
        if pull_off + clear_delay_s() <= duration_s:
            motion.obstacle_clear_time_s = float(pull_off + clear_delay_s())
    return motion
