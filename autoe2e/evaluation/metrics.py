"""Open-loop displacement metrics and the analytic motion baselines.

Convention (named in every report): for one sample, the L2 error at step t is the Euclidean
distance between predicted and true (x, y) at that step; ADE is the mean of the L2 error over
the valid steps of the sample, FDE is the L2 error at the last step (samples whose last step is
missing are excluded), L2@h is the error *at* horizon h seconds and ADE@h the mean L2 over the
steps up to h (ADE@3s is the figure upstream reported). Dataset-level numbers are means over
samples.
"""

from __future__ import annotations

import torch

METRIC_CONVENTION = (
    "L2@h = Euclidean error at time h (not averaged up to h); ADE@h = mean L2 over the valid "
    "steps up to h; ADE = mean L2 over all valid steps of a sample (6.4 s); FDE = L2 at the "
    "last step (samples with it valid); dataset values are sample means; bootstrap CIs "
    "resample episodes"
)


def l2_errors(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`[B, T, 2]` x2 -> `[B, T]` Euclidean errors (float64 for stable sums)."""
    return torch.linalg.vector_norm(pred.double() - target.double(), dim=-1)


def horizon_index(horizon_s: float, dt_s: float, steps: int) -> int:
    """Step index whose time (index + 1) * dt equals `horizon_s`; errors name the fix."""
    index = round(horizon_s / dt_s) - 1
    if index < 0 or index >= steps or abs((index + 1) * dt_s - horizon_s) > 1e-6:
        raise ValueError(
            f"horizon {horizon_s} s is not on the trajectory grid (dt={dt_s} s, {steps} steps "
            f"up to {steps * dt_s:.1f} s); use multiples of dt within that range"
        )
    return index


def per_sample_errors(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    horizon_indices: dict[str, int],
) -> dict[str, torch.Tensor]:
    """Per-sample ADE/FDE/L2@h `[B]` with NaN where undefined (no valid step / step missing)."""
    err = l2_errors(pred, target)
    mask = valid.bool()
    count = mask.sum(dim=1)
    nan = torch.full_like(err[:, 0], float("nan"))
    ade = torch.where(count > 0, (err * mask).sum(dim=1) / count.clamp(min=1), nan)
    out = {"ade": ade, "fde": torch.where(mask[:, -1], err[:, -1], nan)}
    for name, idx in horizon_indices.items():
        out[name] = torch.where(mask[:, idx], err[:, idx], nan)
        # ADE@h: mean L2 over the valid steps up to h (the convention upstream reported)
        head, head_mask = err[:, : idx + 1], mask[:, : idx + 1]
        n = head_mask.sum(dim=1)
        mean = (head * head_mask).sum(dim=1) / n.clamp(min=1)
        out["ade_" + name.removeprefix("l2_")] = torch.where(n > 0, mean, nan)
    return out


def constant_velocity(ego_history: torch.Tensor, steps: int, dt_s: float) -> torch.Tensor:
    """Current speed straight ahead in the ego frame: x = v t, y = 0. `[B, E, 4]` -> `[B, T, 2]`."""
    speed = ego_history[:, -1, 0].double()
    t = torch.arange(1, steps + 1, dtype=torch.float64, device=ego_history.device) * dt_s
    x = speed[:, None] * t[None]
    return torch.stack([x, torch.zeros_like(x)], dim=-1)


def constant_turn_rate_velocity(ego_history: torch.Tensor, steps: int, dt_s: float) -> torch.Tensor:
    """CTRV closed form: x = v/w sin(w t), y = v/w (1 - cos(w t)); the w -> 0 limit is CV."""
    speed = ego_history[:, -1, 0].double()[:, None]
    yaw_rate = ego_history[:, -1, 2].double()[:, None]
    t = (torch.arange(1, steps + 1, dtype=torch.float64, device=ego_history.device) * dt_s)[None]
    small = yaw_rate.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(yaw_rate), yaw_rate)
    x = torch.where(small, speed * t, speed / safe * torch.sin(safe * t))
    y = torch.where(small, torch.zeros_like(x), speed / safe * (1 - torch.cos(safe * t)))
    return torch.stack([x, y], dim=-1)
