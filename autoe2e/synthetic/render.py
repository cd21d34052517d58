"""Pinhole camera rig and the per-frame renderer.

Cameras are level (pitch = roll = 0) pinholes mounted on the ego. Per camera, the ground point
of every pixel ray is computed once in the ego frame; a frame then costs one rigid transform of
those points, a gather from the ground texture (mip level chosen per pixel from its footprint),
a distance haze blend, a gather from the skyline panorama and a few depth-sorted rectangles for
vehicles, posts, trees and traffic lights. That keeps rendering around a millisecond per view.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass

import numpy as np

from autoe2e.config import GenerateConfig
from autoe2e.contract import CameraExtrinsics, CameraInfo, CameraIntrinsics
from autoe2e.synthetic.world import (
    HAZE_COLOUR,
    HILL_ROWS,
    MIP_LEVELS,
    PANORAMA_HEIGHT,
    PANORAMA_MAX_ELEVATION,
    PANORAMA_WIDTH,
    Billboards,
    World,
)

#: Mount yaw (degrees, left positive) for well-known camera names.
KNOWN_YAWS_DEG: dict[str, float] = {
    "front": 0.0,
    "front_left": 45.0,
    "front_right": -45.0,
    "left": 90.0,
    "right": -90.0,
    "rear_left": 135.0,
    "rear_right": -135.0,
    "rear": 180.0,
}
CAMERA_HEIGHT_M = 1.5
#: Ground beyond this distance is pure haze; haze grows with distance up to it.
MAX_GROUND_DISTANCE_M = 250.0
NEAR_M = 0.3


@dataclass(frozen=True)
class CameraModel:
    name: str
    intrinsics: CameraIntrinsics
    extrinsics: CameraExtrinsics

    def info(self) -> CameraInfo:
        return CameraInfo(intrinsics=self.intrinsics, extrinsics=self.extrinsics, start_time_s=0.0)


def camera_fov_deg(config: GenerateConfig, name: str) -> float:
    """Horizontal FOV of camera `name`: its `camera_fov_deg` entry, else `horizontal_fov_deg`."""
    return float(config.camera_fov_deg.get(name, config.horizontal_fov_deg))


def camera_rig(config: GenerateConfig) -> list[CameraModel]:
    """Cameras from the config: known names get their usual yaw, unknown names spread evenly;
    each gets its own FOV (a narrow front camera keeps distant cues several pixels wide)."""
    n = len(config.cameras)
    width, height = config.image_width, config.image_height
    rig = []
    for i, name in enumerate(config.cameras):
        fx = (width / 2) / math.tan(math.radians(camera_fov_deg(config, name)) / 2)
        intr = CameraIntrinsics(
            fx=fx, fy=fx, cx=width / 2, cy=height / 2, width=width, height=height
        )
        yaw_deg = KNOWN_YAWS_DEG.get(name, 360.0 * i / n)
        yaw = math.radians(yaw_deg)
        # Mount on a 4.5 x 1.8 m body: roof front / roof rear / mirrors for side views.
        mount_x = 1.2 * math.cos(yaw) if abs(math.cos(yaw)) > 0.5 else 0.5
        mount_y = 0.9 * math.sin(yaw) if abs(math.sin(yaw)) > 0.5 else 0.0
        extr = CameraExtrinsics(
            x_m=round(mount_x, 3), y_m=round(mount_y, 3), z_m=CAMERA_HEIGHT_M, yaw_rad=yaw
        )
        rig.append(CameraModel(name, intr, extr))
    return rig


def forward_camera(config: GenerateConfig) -> CameraModel:
    """The view the ego (and scenario.json's visibility times) judge cues by: the "front"
    camera, else the rig's camera looking most nearly ahead (within 45 deg), else a virtual
    forward camera with the default FOV (a rig of side and rear cameras only)."""
    rig = camera_rig(config)
    named = [cam for cam in rig if cam.name == "front"]
    if named:
        return named[0]
    ahead = [cam for cam in rig if abs(math.remainder(cam.extrinsics.yaw_rad, 2 * math.pi)) < 0.8]
    if ahead:
        return min(ahead, key=lambda cam: abs(math.remainder(cam.extrinsics.yaw_rad, 2 * math.pi)))
    virtual = dataclasses.replace(config, cameras=["front"], camera_fov_deg={})
    return camera_rig(virtual)[0]


@dataclass(frozen=True)
class Box:
    """A vehicle as an oriented box, with a lamp bar across its rear face (lit when braking) or,
    for the works truck, a lit `rear_panel` (z0, z1, colour) covering the rear face instead."""

    x: float
    y: float
    heading: float
    length: float
    width: float
    height: float
    colour: tuple[int, int, int]
    brake_on: bool = False
    rear_panel: tuple[float, float, tuple[int, int, int]] | None = None


#: Brake lamps: saturated red when lit and a dark red when off, so a brake shows as a change of
#: luminance (~100 vs ~45 luma) as well as of colour; chroma alone does not survive 4:2:0 twice.
BRAKE_ON = (255, 40, 30)
BRAKE_OFF = (90, 25, 25)
#: The lamp bar spans the whole rear face (1.8 x 0.55 m): ~8 x 2.5 px at 30 m in a 45 deg,
#: 112 px wide view, where two separate lamps would be ~2 px each.
LAMP_Z0_M, LAMP_Z1_M = 0.5, 1.05
HEADLIGHT = (250, 245, 210)
GLASS = (45, 55, 70)
UNDERBODY = (25, 25, 25)


class CameraView:
    """Everything about one camera that does not change from frame to frame."""

    def __init__(self, camera: CameraModel, world: World) -> None:
        self.camera = camera
        self.world = world
        intr, extr = camera.intrinsics, camera.extrinsics
        self.width, self.height = intr.width, intr.height
        self.fx, self.fy, self.cx, self.cy = intr.fx, intr.fy, intr.cx, intr.cy
        self.mount = np.array([extr.x_m, extr.y_m])
        self.mount_z = extr.z_m
        self.mount_yaw = extr.yaw_rad
        self.tan_half = (self.width / 2) / self.fx
        uu, vv = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        left = (-(uu - self.cx) / self.fx).ravel()
        up = (-(vv - self.cy) / self.fy).ravel()
        cos_y, sin_y = math.cos(self.mount_yaw), math.sin(self.mount_yaw)
        dx, dy = cos_y - sin_y * left, sin_y + cos_y * left
        ground = up < -1e-9
        t = np.where(ground, self.mount_z / np.maximum(-up, 1e-9), np.inf)
        dist = t * np.sqrt(1.0 + left**2)
        near = ground & (dist < MAX_GROUND_DISTANCE_M)

        # Mip level from the pixel footprint (geometric mean of the lateral and radial extent).
        tex = world.texture
        footprint = dist / self.fx * np.sqrt(np.maximum(dist / self.mount_z, 1.0))
        level = np.clip(
            np.floor(np.log2(np.maximum(footprint / tex.resolution_m, 1e-9))), 0, MIP_LEVELS - 1
        ).astype(np.int64)
        idx = np.flatnonzero(near)
        self.ground_idx = idx
        self.ground_x = (self.mount[0] + t[idx] * dx[idx]).astype(np.float32)
        self.ground_y = (self.mount[1] + t[idx] * dy[idx]).astype(np.float32)
        # Per-pixel texel scale, level size and offset into the flat pyramid.
        lv = level[idx]
        shapes = np.array([lvl.shape for lvl in tex.levels], np.int32)
        self.inv_texel = (1.0 / (tex.resolution_m * 2.0**lv)).astype(np.float32)
        self.level_h = shapes[lv, 0]
        self.level_w = shapes[lv, 1]
        self.level_base = np.array(tex.offsets[:-1], np.int32)[lv]
        self.outside_index = np.int32(tex.offsets[-1])
        haze_w = np.clip(dist[idx] / MAX_GROUND_DISTANCE_M, 0.0, 1.0) ** 1.3
        w = np.round(haze_w * 256).astype(np.uint32)
        # Haze blend on packed RGBA words: red/blue and green/alpha each sit in 16-bit lanes,
        # and c * (256 - w) + h * w <= 255 * 256 never carries into the next lane.
        hr, hg, hb = (int(c) for c in HAZE_COLOUR)
        self.keep_w = (256 - w).astype(np.uint32)
        self.haze_rb = (hr * w) | ((hb * w) << 16)
        self.haze_ga = (hg * w) | ((255 * w) << 16)

        # Sky: above the hills it depends on elevation only and is drawn once into the
        # background; only the hill band is looked up per frame by azimuth.
        sky = np.flatnonzero(~ground)
        elev = np.arctan2(up[sky], np.sqrt(1.0 + left[sky] ** 2))
        rows = np.clip(elev / PANORAMA_MAX_ELEVATION * PANORAMA_HEIGHT, 0, PANORAMA_HEIGHT - 1)
        rows = rows.astype(np.int64)
        band = rows < HILL_ROWS
        self.background = np.full(self.height * self.width, pack_rgb(HAZE_COLOUR), np.uint32)
        self.background[sky[~band]] = world.panorama[rows[~band] * PANORAMA_WIDTH]
        self.sky_idx = sky[band]
        self.sky_row_base = rows[band] * PANORAMA_WIDTH
        az = self.mount_yaw + np.arctan(left[sky[band]])
        self.sky_col = np.floor(az / (2 * np.pi) * PANORAMA_WIDTH).astype(np.int64)

    # ------------------------------------------------------------------ ground and sky
    def _ground(self, img: np.ndarray, x: float, y: float, yaw: float) -> None:
        c, s = math.cos(yaw), math.sin(yaw)
        gx, gy = self.ground_x, self.ground_y
        tex = self.world.texture
        ix = (((x - tex.x0) + c * gx - s * gy) * self.inv_texel).astype(np.int32)
        iy = (((y - tex.y0) + s * gx + c * gy) * self.inv_texel).astype(np.int32)
        out = (ix < 0) | (iy < 0) | (ix >= self.level_w) | (iy >= self.level_h)
        flat_idx = self.level_base + iy * self.level_w + ix
        flat_idx[out] = self.outside_index
        packed = tex.flat[flat_idx]
        rb = ((packed & 0x00FF00FF) * self.keep_w + self.haze_rb) >> 8
        ga = ((packed >> 8) & 0x00FF00FF) * self.keep_w + self.haze_ga
        img[self.ground_idx] = (rb & 0x00FF00FF) | (ga & 0xFF00FF00)

    def _sky(self, img: np.ndarray, yaw: float) -> None:
        shift = int(math.floor(yaw / (2 * np.pi) * PANORAMA_WIDTH))
        cols = (self.sky_col + shift) & (PANORAMA_WIDTH - 1)
        img[self.sky_idx] = self.world.panorama[self.sky_row_base + cols]

    # ------------------------------------------------------------------ objects
    def _to_camera(
        self, px: np.ndarray, py: np.ndarray, cam_x: float, cam_y: float, cam_yaw: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """World points -> (forward, left) distances in the camera frame."""
        c, s = math.cos(cam_yaw), math.sin(cam_yaw)
        rx, ry = px - cam_x, py - cam_y
        return c * rx + s * ry, -s * rx + c * ry

    def _rect(self, img: np.ndarray, u0: float, u1: float, v0: float, v1: float, word: int) -> None:
        """Fill a pixel rectangle; anything that overlaps the image covers at least one pixel."""
        if u1 <= 0 or v1 <= 0 or u0 >= self.width or v0 >= self.height:
            return
        a = max(int(u0 + 0.5), 0)
        b = min(max(int(u1 + 0.5), a + 1), self.width)
        c = max(int(v0 + 0.5), 0)
        d = min(max(int(v1 + 0.5), c + 1), self.height)
        img[c:d, a:b] = word

    def _draw_box(
        self, img: np.ndarray, box: Box, cam: tuple[float, float, float], dist: float
    ) -> None:
        """Underbody, body, glass cabin, then the lights on the face turned to the camera.

        Plain float arithmetic: a box is a handful of points, too few for numpy to pay off.
        """
        cam_x, cam_y, cam_yaw = cam
        cc, cs = math.cos(cam_yaw), math.sin(cam_yaw)
        ch, sh = math.cos(box.heading), math.sin(box.heading)
        rx, ry = box.x - cam_x, box.y - cam_y
        f0, l0 = cc * rx + cs * ry, -cs * rx + cc * ry
        # Box axes (forward, left) expressed in the camera frame.
        ff, fl = cc * ch + cs * sh, -cs * ch + cc * sh
        lf, ll = -cc * sh + cs * ch, cs * sh + cc * ch
        hl, hw = box.length / 2, box.width / 2
        haze = min(dist / MAX_GROUND_DISTANCE_M, 1.0) ** 1.3
        fx, fy, cx, cy, mz = self.fx, self.fy, self.cx, self.cy, self.mount_z

        def fill(points: tuple, z0: float, z1: float, colour: tuple, glow: bool = False) -> None:
            us, vs = [], []
            behind = 0
            for px, py in points:
                f = f0 + px * ff + py * lf
                if f < NEAR_M:
                    behind += 1
                    f = NEAR_M
                u = cx - fx * (l0 + px * fl + py * ll) / f
                us.append(u)
                vs.append(cy - fy * (z1 - mz) / f)
                vs.append(cy - fy * (z0 - mz) / f)
            if behind == len(points):
                return
            # Lit lamps and panels are emissive: they lose half as much contrast to haze.
            self._rect(
                img, min(us), max(us), min(vs), max(vs), _word(colour, haze / 2 if glow else haze)
            )

        corners = ((hl, hw), (hl, -hw), (-hl, -hw), (-hl, hw))
        belt = 0.45 * box.height + 0.4
        fill(corners, 0.0, 0.35, UNDERBODY)
        fill(corners, 0.3, belt, box.colour)
        cab_front, cab_rear, cab_w = 0.25 * hl, -0.75 * hl, 0.9 * hw
        cabin = ((cab_front, cab_w), (cab_front, -cab_w), (cab_rear, -cab_w), (cab_rear, cab_w))
        fill(cabin, belt, box.height, GLASS)
        # Rear face with brake lights when seen from behind, headlights when seen from the front.
        cam_rel = -(rx * ch + ry * sh)
        if cam_rel < -hl:
            if box.rear_panel is not None:
                z0, z1, panel = box.rear_panel
                fill(((-hl, -hw), (-hl, hw)), z0, z1, panel, glow=True)
                return
            lamp = BRAKE_ON if box.brake_on else BRAKE_OFF
            fill(((-hl, -hw), (-hl, hw)), LAMP_Z0_M, LAMP_Z1_M, lamp, glow=box.brake_on)
        elif cam_rel > hl:
            for y0, y1 in ((0.35 * hw, hw), (-hw, -0.35 * hw)):
                fill(((hl, y0), (hl, y1)), 0.5, 0.95, HEADLIGHT)

    def render_rgba(
        self,
        ego_x: float,
        ego_y: float,
        ego_yaw: float,
        boxes: list[Box],
        billboards: Billboards,
    ) -> np.ndarray:
        """One frame as (H, W, 4) uint8 RGBA (alpha 255): the encoder's fast path."""
        img = self.background.copy()
        c, s = math.cos(ego_yaw), math.sin(ego_yaw)
        cam_x = ego_x + c * self.mount[0] - s * self.mount[1]
        cam_y = ego_y + s * self.mount[0] + c * self.mount[1]
        cam_yaw = ego_yaw + self.mount_yaw
        self._ground(img, ego_x, ego_y, ego_yaw)
        self._sky(img, cam_yaw)
        img = img.reshape(self.height, self.width)
        cam = (cam_x, cam_y, cam_yaw)

        # Billboards, projected all at once; boxes are few and projected one by one.
        f, lft = self._to_camera(billboards.x, billboards.y, *cam)
        hw = billboards.half_width
        vis = (f > NEAR_M) & (f < MAX_GROUND_DISTANCE_M)
        vis &= np.abs(lft) - hw < f * self.tan_half * 1.05 + 0.5
        sel = np.flatnonzero(vis)
        fs, ls, hs = f[sel], lft[sel], hw[sel]
        u0 = (self.cx - self.fx * (ls + hs) / fs).tolist()
        u1 = (self.cx - self.fx * (ls - hs) / fs).tolist()
        v0 = (self.cy - self.fy * (billboards.z1[sel] - self.mount_z) / fs).tolist()
        v1 = (self.cy - self.fy * (billboards.z0[sel] - self.mount_z) / fs).tolist()
        haze = (np.minimum(fs / MAX_GROUND_DISTANCE_M, 1.0) ** 1.3)[:, None]
        colours = billboards.colour[sel] * (1.0 - haze) + np.array(HAZE_COLOUR) * haze
        words = pack_rgb_array(colours.astype(np.uint8)).tolist()
        # Depth order, far to near; ties keep list order (pole before lamp).
        depth = (fs - 1e-6 * np.arange(len(sel))).tolist()
        items: list[tuple[float, int, int]] = [(depth[i], 0, i) for i in range(len(sel))]
        for j, box in enumerate(boxes):
            bf, bl = self._to_camera(np.array([box.x]), np.array([box.y]), *cam)
            reach = box.length
            if (
                bf[0] + reach > NEAR_M
                and bf[0] < MAX_GROUND_DISTANCE_M
                and abs(bl[0]) - reach < (max(bf[0], 0.0) + reach) * self.tan_half * 1.05
            ):
                items.append((float(math.hypot(bf[0], bl[0])), 1, j))
        items.sort(key=lambda item: -item[0])
        for dist, kind, i in items:
            if kind == 1:
                self._draw_box(img, boxes[i], cam, dist)
            else:
                self._rect(img, u0[i], u1[i], v0[i], v1[i], words[i])
        return img.view(np.uint8).reshape(self.height, self.width, 4)

    def render(
        self,
        ego_x: float,
        ego_y: float,
        ego_yaw: float,
        boxes: list[Box],
        billboards: Billboards,
    ) -> np.ndarray:
        """One RGB frame (H, W, 3) uint8 for the ego pose and the dynamic objects."""
        rgba = self.render_rgba(ego_x, ego_y, ego_yaw, boxes, billboards)
        return np.ascontiguousarray(rgba[..., :3])


def pack_rgb(colour: tuple[int, int, int] | np.ndarray) -> int:
    """RGB -> one RGBA uint32 word (alpha 255) as laid out in memory on this machine."""
    r, g, b = (int(c) for c in colour[:3])
    if sys.byteorder == "little":
        return r | (g << 8) | (b << 16) | (255 << 24)
    return (r << 24) | (g << 16) | (b << 8) | 255


def pack_rgb_array(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) packed RGBA uint32."""
    rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return np.ascontiguousarray(rgba).view(np.uint32)[:, 0]


def _word(colour: tuple[int, int, int], haze: float) -> int:
    """Packed colour after blending `haze` (0..1) of the haze colour into it."""
    keep = 1.0 - haze
    return pack_rgb(
        tuple(int(c * keep + h * haze) for c, h in zip(colour, HAZE_COLOUR, strict=True))
    )
