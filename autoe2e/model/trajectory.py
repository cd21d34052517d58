"""Turn a handful of control coefficients into a smooth 64-step trajectory.

The planner does not regress 128 free numbers: it predicts coefficients of a low-order smooth
basis for longitudinal acceleration and for a yaw-rate correction, and a kinematic unicycle is
integrated from the current measured speed and yaw rate. This makes every output physically
smooth by construction, and with all coefficients at zero the output is exactly the
constant-turn-rate-and-velocity rollout, so training starts from a sane prior instead of from
noise (upstream learned planners lost to constant velocity).
"""

from __future__ import annotations

import math

import torch


def bernstein_basis(num_coeffs: int, steps: int) -> torch.Tensor:
    """`[K, T]` Bernstein polynomials of degree K-1 sampled at the T step times in (0, 1]."""
    t = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    n = num_coeffs - 1
    rows = [math.comb(n, k) * t**k * (1 - t) ** (n - k) for k in range(num_coeffs)]
    return torch.stack(rows).float()


def integrate_controls(
    speed0: torch.Tensor,
    accel: torch.Tensor,
    yaw_rate: torch.Tensor,
    dt: float,
) -> torch.Tensor:
    """Unicycle rollout in the ego frame (x forward, y left).

    speed0 `[B]`, accel and yaw_rate `[B, T]` (per step) -> positions `[B, T, 2]` at
    t = dt, 2 dt, ... Speed is clamped at zero (vehicles stop, they do not reverse here); each
    step uses the mean speed and the mid-step heading, so a constant speed and zero yaw rate
    give exactly x = v t.
    """
    speed = torch.clamp(speed0[:, None] + torch.cumsum(accel, dim=1) * dt, min=0.0)
    prev_speed = torch.cat([speed0[:, None].clamp(min=0.0), speed[:, :-1]], dim=1)
    heading = torch.cumsum(yaw_rate, dim=1) * dt
    mid_heading = heading - 0.5 * yaw_rate * dt
    step = 0.5 * (speed + prev_speed) * dt
    x = torch.cumsum(step * torch.cos(mid_heading), dim=1)
    y = torch.cumsum(step * torch.sin(mid_heading), dim=1)
    return torch.stack([x, y], dim=-1)
