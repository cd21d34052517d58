"""Masked losses: trajectory L1 (optionally time-weighted) and the world model's JEPA L1."""

from __future__ import annotations

import torch

TIME_WEIGHTINGS = ("none", "linear")


def time_weights(steps: int, mode: str = "none") -> torch.Tensor:
    """Per-step weights `[T]` of the trajectory L1.

    "none": all 1. "linear": step k (1-based) of T gets (T - k + 1) / T, from 1 at the first
    step down to 1/T at the last. Metric errors grow with the horizon, so an unweighted mean is
    dominated by the far steps that the current observation pins down least; down-weighting
    them keeps the near-term plan, which the controller executes, from being traded away.
    """
    if mode == "none":
        return torch.ones(steps)
    if mode == "linear":
        return torch.arange(steps, 0, -1, dtype=torch.float32) / steps
    raise ValueError(f"trajectory time weighting {mode!r} is unknown; use one of {TIME_WEIGHTINGS}")


def trajectory_l1(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, time_weighting: str = "none"
) -> torch.Tensor:
    """Weighted mean |pred - target| over valid steps and both coordinates (0 if none valid).

    With `time_weighting="none"` this is the plain mean over valid steps (metres).
    """
    weights = time_weights(pred.shape[-2], time_weighting).to(pred.device, pred.dtype)
    mask = (valid.to(pred.dtype) * weights)[..., None]
    return ((pred - target).abs() * mask).sum() / (2 * mask.sum()).clamp(min=1e-12)


def jepa_l1_per_step(
    pred: torch.Tensor, target: torch.Tensor, future_valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-horizon JEPA L1: (sum over valid samples `[F]`, number of valid samples `[F]`)."""
    diff = (pred.float() - target.float()).abs().flatten(2).mean(dim=2)  # [B, F]
    mask = future_valid.to(diff.dtype)
    return (diff * mask).sum(dim=0), mask.sum(dim=0)


def jepa_l1(pred: torch.Tensor, target: torch.Tensor, future_valid: torch.Tensor) -> torch.Tensor:
    """Mean L1 over valid future steps; pred/target `[B, F, ...]`, future_valid `[B, F]`."""
    sums, counts = jepa_l1_per_step(pred, target, future_valid)
    return sums.sum() / counts.sum().clamp(min=1)
