"""Longitudinal driving model for the ego and the lead vehicle (both follow their lane centre).

Speed is the only control: lateral motion is exact lane following, so the telemetry is
kinematically consistent by construction (yaw rate = speed x curvature of the driven lane,
accel = d speed / dt of the simulated speed). The longitudinal command is the minimum of

* speed tracking of a curve-aware profile: v <= sqrt(a_lat_max / |kappa|), capped at the speed
  limit and pre-braked backwards at a gentle deceleration, so the ego slows seconds *before* a
  curve (the curve is in the images before it shows in the ego state);
* car following (IDM) behind the lead vehicle, using the lead's state as seen with a human
  perception delay (brake lights appear in the camera before the ego reacts);
* stopping at a red light's stop line at the constant deceleration v^2 / (2 gap).

The command passes through a jerk limit, so acceleration is continuous and future motion is
predictable from the past.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from autoe2e.config import GenerateConfig
from autoe2e.synthetic.road import Lane
from autoe2e.synthetic.traffic import VEHICLE_LENGTH_M, BrakeEvent, TrafficPlan

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


def speed_profile(lane: Lane, v_cap: float, a_lat: float, decel: float) -> np.ndarray:
    """Highest speed per lane sample that respects lateral accel and can brake for what follows.

    Backward pass: v[i] = min(limit[i], sqrt(v[i+1]^2 + 2 decel ds)).
    """
    limit = np.minimum(v_cap, np.sqrt(a_lat / np.maximum(np.abs(lane.kappa), 1e-9)))
    out = limit.copy()
    ds = np.diff(lane.s)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], math.sqrt(out[i + 1] ** 2 + 2.0 * decel * ds[i]))
    return out


@dataclass
class Motion:
    """Simulated longitudinal motion at `SIM_DT_S`, lane arc length along the ego lane."""

    t: np.ndarray
    ego_s: np.ndarray
    ego_v: np.ndarray
    ego_a: np.ndarray
    lead_s: np.ndarray | None = None
    lead_v: np.ndarray | None = None
    lead_a: np.ndarray | None = None
    lead_brake_light: np.ndarray | None = None
    green_time_s: float | None = None
    ego_stop_time_s: float | None = None
    ego_go_time_s: float | None = None
    #: Brake events the lead actually executed (events while it stops for a light are skipped).
    lead_brake_events: list[BrakeEvent] = field(default_factory=list)
    min_gap_m: float = math.inf


@dataclass
class _Vehicle:
    s: float
    v: float
    a: float = 0.0
    stopping: bool = False

    def step(self, a_des: float, dt: float) -> float:
        """Apply the jerk-limited command; returns the realised acceleration dv/dt."""
        if self.v <= 0.0 and a_des <= 0.0:
            self.a = 0.0  # standing still on the brakes
            return 0.0
        a_des = max(a_des, -MAX_BRAKE_MPS2)
        jerk = EMERGENCY_JERK_MPS3 if a_des < -2.5 else JERK_MPS3
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
    """
    gap = line_s - STOP_MARGIN_M - (veh.s + VEHICLE_LENGTH_M / 2)
    if not red or gap < -STOP_MARGIN_M:
        veh.stopping = False
        return math.inf
    if gap <= 0.05:
        veh.stopping = True
        return -MAX_BRAKE_MPS2
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


def simulate(
    lane: Lane,
    plan: TrafficPlan,
    config: GenerateConfig,
    start_s: float,
    start_v: float,
    duration_s: float,
) -> Motion:
    """Run ego (and lead) from `start_s` / `start_v` for `duration_s`; see module docstring."""
    comf = config.comfortable_decel_mps2
    profile = speed_profile(
        lane, config.max_speed_mps, config.max_lateral_accel_mps2, CURVE_DECEL_FRACTION * comf
    )
    n = int(round(duration_s / SIM_DT_S)) + 1
    t = np.arange(n) * SIM_DT_S
    ego = _Vehicle(start_s, start_v)
    ego_s, ego_v, ego_a = np.empty(n), np.empty(n), np.zeros(n)
    lead = None
    if plan.lead is not None:
        lead = _Vehicle(start_s + VEHICLE_LENGTH_M + plan.lead.start_gap_m, start_v)
        lead_cap = plan.lead.cruise_speed_mps
        lead_s, lead_v, lead_a = np.empty(n), np.empty(n), np.zeros(n)
        lead_light = np.zeros(n, dtype=bool)
    line_s = lane.lane_s_of(plan.stop.line_road_s_m) if plan.stop else math.inf
    stop_decel = 0.5 * comf
    delay_steps = int(round(PERCEPTION_DELAY_S / SIM_DT_S))
    motion = Motion(t=t, ego_s=ego_s, ego_v=ego_v, ego_a=ego_a)
    green = math.inf
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
        # Light state: green once the ego has waited; each driver sees it after a delay.
        if plan.stop is not None and math.isinf(green):
            gap_line = line_s - (ego.s + VEHICLE_LENGTH_M / 2)
            if ego.v < 0.05 and 0.0 < gap_line < LIGHT_TRIGGER_RANGE_M:
                green = now + plan.stop.wait_s
                motion.ego_stop_time_s = float(now)
        if (
            motion.ego_stop_time_s is not None
            and motion.ego_go_time_s is None
            and now > green
            and ego.v > 0.1
        ):
            motion.ego_go_time_s = float(now)
        # Lead vehicle.
        if lead is not None:
            a_cmd = _track(profile, lane, lead, lead_cap, comf)
            red_for_lead = now < green + plan.lead.green_reaction_s
            a_cmd = min(a_cmd, _stop_command(lead, line_s, red_for_lead, stop_decel))
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
            lead_light[k] = a_cmd < -0.8 or lead.v < 0.3
        # Ego: min of profile tracking, car following and the stop line.
        a_cmd = _track(profile, lane, ego, config.max_speed_mps, comf)
        if lead is not None:
            j = max(0, k - delay_steps)
            seen_s = lead_s[j] + lead_v[j] * (now - t[j])
            a_cmd = min(a_cmd, _idm(ego, seen_s, lead_v[j], comf))
        red_for_ego = now < green + (plan.stop.ego_green_reaction_s if plan.stop else 0.0)
        a_cmd = min(a_cmd, _stop_command(ego, line_s, red_for_ego, stop_decel))
        ego_a[k] = ego.step(a_cmd, SIM_DT_S)
    ego_a[-1] = ego_a[-2]
    if lead is not None:
        lead_a[-1] = lead_a[-2]
        lead_light[-1] = lead_light[-2]
        motion.lead_s, motion.lead_v, motion.lead_a = lead_s, lead_v, lead_a
        motion.lead_brake_light = lead_light
        motion.lead_brake_events = [ev for ev in plan.lead.brake_events if ev in started]
    motion.green_time_s = None if math.isinf(green) else float(green)
    return motion
