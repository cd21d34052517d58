"""Ego telemetry on the 10 Hz grid: interpolation, ego-history features and ego-frame targets.

Telemetry arrives at its own rate (>= 10 Hz by contract); samples need it at grid times. Yaw is
unwrapped before interpolating so a heading crossing +-pi does not swing through zero, and a
window is only valid when it lies inside the recording and crosses no telemetry gap longer than
`MAX_EGO_GAP_S` (interpolating across a hole would invent motion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from autoe2e.contract import EGO_COLUMNS
from autoe2e.data.schema import EGO_HISTORY_FEATURES

#: Longest telemetry interval a window may interpolate across (2x the 10 Hz contract period).
MAX_EGO_GAP_S = 0.2


@dataclass
class EgoTrack:
    """Telemetry columns as float64 arrays with yaw unwrapped."""

    t: np.ndarray
    columns: dict[str, np.ndarray]

    @classmethod
    def from_table(cls, table: pa.Table) -> EgoTrack:
        cols = {
            name: np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
            for name in EGO_COLUMNS
        }
        cols["yaw_rad"] = np.unwrap(cols["yaw_rad"])
        return cls(t=cols["timestamp_s"], columns=cols)

    @property
    def start_s(self) -> float:
        return float(self.t[0])

    @property
    def end_s(self) -> float:
        return float(self.t[-1])

    def at(self, name: str, times: np.ndarray) -> np.ndarray:
        """Linear interpolation of one column at ``times`` (callers check `covers` first)."""
        return np.interp(times, self.t, self.columns[name])

    def covers(self, times: np.ndarray) -> np.ndarray:
        """Per time: inside the recording and not inside a gap longer than MAX_EGO_GAP_S."""
        times = np.asarray(times, dtype=np.float64)
        inside = (times >= self.t[0] - 1e-9) & (times <= self.t[-1] + 1e-9)
        idx = np.clip(np.searchsorted(self.t, times, side="right"), 1, len(self.t) - 1)
        step = self.t[idx] - self.t[idx - 1]
        on_sample = np.isclose(times, self.t[idx - 1], atol=1e-9) | np.isclose(
            times, self.t[idx], atol=1e-9
        )
        return inside & ((step <= MAX_EGO_GAP_S + 1e-9) | on_sample)

    def ego_history(self, times: np.ndarray) -> np.ndarray:
        """[..., 4] features (EGO_HISTORY_FEATURES order) at ``times``, raw units."""
        return np.stack([self.at(name, times) for name in EGO_HISTORY_FEATURES], axis=-1)

    def pose(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.at("x_m", times), self.at("y_m", times), self.at("yaw_rad", times)


def to_ego_frame(
    x: np.ndarray, y: np.ndarray, ego_x: np.ndarray, ego_y: np.ndarray, ego_yaw: np.ndarray
) -> np.ndarray:
    """World points -> ego frame at the given pose (x forward, y left); broadcasts, [..., 2]."""
    dx, dy = x - ego_x, y - ego_y
    cos, sin = np.cos(ego_yaw), np.sin(ego_yaw)
    return np.stack([cos * dx + sin * dy, -sin * dx + cos * dy], axis=-1)


def future_trajectory(track: EgoTrack, t: float, steps: int, dt_s: float) -> np.ndarray:
    """[steps, 2] future positions at t + dt*(1..steps) in the ego frame at t."""
    times = t + dt_s * np.arange(1, steps + 1)
    fx, fy, _ = track.pose(times)
    ex, ey, eyaw = track.pose(np.array([t]))
    return to_ego_frame(fx, fy, ex[0], ey[0], eyaw[0])
