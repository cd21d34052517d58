"""Run the model and every baseline over a loader and keep per-sample errors.

Shared by the per-epoch validation in training and by `evaluate`, so the numbers a checkpoint
was selected with and the numbers in the report are computed the same way. World-model windows
are always fed (evaluating without them left 3/4 of the visual history zero upstream).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from autoe2e.evaluation.metrics import (
    constant_turn_rate_velocity,
    constant_velocity,
    horizon_index,
    per_sample_errors,
)
from autoe2e.model import AutoE2E

PLANNERS = ("model", "constant_velocity", "ctrv")
WORLD_MODEL_PREDICTORS = ("model", "copy_last_frame", "zeros")


@dataclass
class Collected:
    """Per-sample results, aligned lists (one entry per sample)."""

    episode_ids: list[str] = field(default_factory=list)
    #: current ego speed (m/s) per sample, for speed-bin breakdowns
    speeds: list[float] = field(default_factory=list)
    #: planner -> metric name -> per-sample values (NaN where undefined)
    planners: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: predictor -> per-sample JEPA L1 (NaN where no future frame is valid)
    jepa: dict[str, list[float]] = field(default_factory=dict)

    def add(self, bucket: dict[str, list[float]], key: str, values: torch.Tensor) -> None:
        bucket.setdefault(key, []).extend(values.double().cpu().tolist())


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def _per_sample_jepa(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    diff = (pred.float() - target.float()).abs().flatten(2).mean(dim=2)  # [B, F]
    mask = valid.to(diff.dtype)
    count = mask.sum(dim=1)
    value = (diff * mask).sum(dim=1) / count.clamp(min=1)
    return torch.where(count > 0, value, torch.full_like(value, float("nan")))


@torch.no_grad()
def collect(
    model: AutoE2E,
    batches: Iterable[dict[str, Any]],
    device: torch.device,
    horizons_s: list[float],
    autocast_dtype: torch.dtype | None = None,
    max_batches: int = 0,
) -> Collected:
    """Evaluate `model` (in eval mode) and the CV / CTRV / world-model baselines."""
    cfg = model.cfg
    steps, dt = cfg.trajectory_steps, cfg.trajectory_dt_s
    indices = {f"l2_{h:g}s": horizon_index(h, dt, steps) for h in horizons_s}
    was_training = model.training
    model.eval()
    out = Collected()
    try:
        for n, raw in enumerate(batches):
            if max_batches and n >= max_batches:
                break
            batch = to_device(raw, device)
            with torch.autocast(
                device.type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                result = model(batch)
            target = batch["future_trajectory"].float()
            valid = batch["trajectory_valid"]
            ego = batch["ego_history"].float()
            preds = {
                "model": result.trajectory.float(),
                "constant_velocity": constant_velocity(ego, steps, dt).to(target.device),
                "ctrv": constant_turn_rate_velocity(ego, steps, dt).to(target.device),
            }
            for name, pred in preds.items():
                bucket = out.planners.setdefault(name, {})
                for metric, values in per_sample_errors(pred, target, valid, indices).items():
                    out.add(bucket, metric, values)
            if result.jepa_prediction is not None and "future_images" in batch:
                targets = model.jepa_targets(batch["future_images"])
                current = model.jepa_targets(batch["images"][:, None])  # [B, 1, V, C, g, g]
                fvalid = batch["future_valid"]
                out.add(
                    out.jepa, "model", _per_sample_jepa(result.jepa_prediction, targets, fvalid)
                )
                out.add(
                    out.jepa,
                    "copy_last_frame",
                    _per_sample_jepa(current.expand_as(targets), targets, fvalid),
                )
                out.add(
                    out.jepa, "zeros", _per_sample_jepa(torch.zeros_like(targets), targets, fvalid)
                )
            out.episode_ids.extend(str(e) for e in raw["episode_id"])
            out.speeds.extend(ego[:, -1, 0].double().cpu().tolist())
    finally:
        model.train(was_training)
    return out


def nanmean(values: list[float]) -> float:
    t = torch.tensor(values, dtype=torch.float64)
    t = t[~torch.isnan(t)]
    return float(t.mean()) if t.numel() else float("nan")
