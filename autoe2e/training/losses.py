"""Masked losses: trajectory L1 and the world model's JEPA L1."""

from __future__ import annotations

import torch


def trajectory_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over valid steps and both coordinates (0 when nothing is valid)."""
    mask = valid.to(pred.dtype)[..., None]
    return ((pred - target).abs() * mask).sum() / (2 * mask.sum()).clamp(min=1)


def jepa_l1(pred: torch.Tensor, target: torch.Tensor, future_valid: torch.Tensor) -> torch.Tensor:
    """Mean L1 over valid future steps; pred/target `[B, F, ...]`, future_valid `[B, F]`."""
    diff = (pred.float() - target.float()).abs().flatten(2).mean(dim=2)  # [B, F]
    mask = future_valid.to(diff.dtype)
    return (diff * mask).sum() / mask.sum().clamp(min=1)
