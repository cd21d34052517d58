"""What the cameras see besides the static world at time t: the traffic light's state, the
works truck, the side road's bus, the lead and oncoming vehicles, and when a point is in a
camera's view."""

from __future__ import annotations

import math

import numpy as np

from autoe2e.synthetic import traffic
from autoe2e.synthetic.ego import SIM_DT_S, Motion
from autoe2e.synthetic.plan import VIEW_AHEAD_M, EpisodePlan
from autoe2e.synthetic.render import Box, CameraModel
from autoe2e.synthetic.road import ONCOMING_LANE_OFFSET_M, Road
from autoe2e.synthetic.world import Billboards

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


def light_position(road: Road, stop: traffic.StopPlan) -> tuple[float, float]:
    s = stop.line_road_s_m + traffic.LIGHT_AHEAD_OF_LINE_M
    x, y = road.offset(s, traffic.LIGHT_LATERAL_OFFSET_M)
    return float(x), float(y)


def light_billboards(road: Road, stop: traffic.StopPlan, red: bool) -> Billboards:
    """Pole, housing and two lamps (red above green) beyond the stop line, right of the lane."""
    x, y = light_position(road, stop)
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


def light_is_red(m: Motion, t: float) -> bool:
    """Green until it turns red as the ego approaches, red until it turns green again."""
    if m.red_time_s is None or t < m.red_time_s:
        return False
    return m.green_time_s is None or t < m.green_time_s


def truck_pose(p: EpisodePlan, t: float) -> tuple[float, float, float] | None:
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


def side_vehicle_pose(p: EpisodePlan, t: float) -> tuple[float, float, float] | None:
    """World (x, y, heading) of the side road's bus at time `t`, facing the junction; None when
    there is none, or once a crossing bus has driven off the far arm."""
    junction = p.plan.junction
    if junction is None:
        return None
    arm_m = float(junction.arm_position_m(t))
    if arm_m < -traffic.SIDE_ROAD_ARM_M:
        return None
    centre, along, across = traffic.side_road_axes(p.road, junction.road_s_m)
    x, y = centre + arm_m * along + traffic.SIDE_LANE_OFFSET_M * across
    return float(x), float(y), math.atan2(-along[1], -along[0])


def boxes_at(p: EpisodePlan, t: float, ego_road_s: float) -> list[Box]:
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
    truck = truck_pose(p, t)
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
    side = side_vehicle_pose(p, t)
    if side is not None:
        dims = (
            traffic.SIDE_VEHICLE_LENGTH_M,
            traffic.SIDE_VEHICLE_WIDTH_M,
            traffic.SIDE_VEHICLE_HEIGHT_M,
        )
        boxes.append(Box(*side, *dims, traffic.SIDE_VEHICLE_COLOUR, False))
    for veh in p.plan.oncoming:
        s = float(veh.road_s(t))
        if abs(s - ego_road_s) > VIEW_AHEAD_M or s < 0 or s > p.road.length_m:
            continue
        ox, oy = p.road.offset(s, ONCOMING_LANE_OFFSET_M)
        th = float(np.interp(s, p.road.s, p.road.theta)) + math.pi
        boxes.append(Box(float(ox), float(oy), th, L, W, H, veh.colour, False))
    return boxes


def in_view(
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
