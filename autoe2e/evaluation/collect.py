"""Run the model and every baseline over a loader and keep per-sample errors.

Shared by the per-epoch validation in training and by `evaluate`, so the numbers a checkpoint
was selected with and the numbers in the report are computed the same way. World-model windows
are always fed (evaluating without them left 3/4 of the visual history zero upstream).

`evaluate` also asks for test-time ablations of the same model (cameras blanked, camera order
shuffled, world-model history zeroed: does it use what it is given?) and world-model
diagnostics (per-horizon JEPA L1 and cosine next to null predictors, feature statistics for
collapse checks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
#: Test-time ablations of the trained model (same weights, altered inputs).
ABLATIONS = ("cameras_blanked", "cameras_shuffled", "history_zeroed")
#: About this many samples' JEPA features are kept for the diagnostics that need the whole set
#: (mean target, per-dimension std, RankMe): every n-th sample of a larger set.
DIAGNOSTIC_SAMPLES = 2048


@dataclass
class Collected:
    """Per-sample results, aligned lists (one entry per sample)."""

    episode_ids: list[str] = field(default_factory=list)
    timestamps_s: list[float] = field(default_factory=list)
    #: current ego speed (m/s) per sample, for speed-bin breakdowns
    speeds: list[float] = field(default_factory=list)
    #: planner -> metric name -> per-sample values (NaN where undefined)
    planners: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: ablation -> metric name -> per-sample values
    ablations: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: predictor -> per-sample JEPA L1 (NaN where no future frame is valid)
    jepa: dict[str, list[float]] = field(default_factory=dict)
    #: predictor -> [F] sums and counts of per-horizon L1 / cosine over valid samples
    jepa_horizon_l1: dict[str, np.ndarray] = field(default_factory=dict)
    jepa_horizon_cos: dict[str, np.ndarray] = field(default_factory=dict)
    jepa_horizon_count: np.ndarray | None = None
    #: kept (subsampled) predictions and targets [N, F, V, C, g, g] (float16) with masks [N, F]
    kept_predictions: list[np.ndarray] = field(default_factory=list)
    kept_targets: list[np.ndarray] = field(default_factory=list)
    kept_valid: list[np.ndarray] = field(default_factory=list)

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


def _horizon_stats(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Per-horizon sums over valid samples of L1 and of the cosine between the per-location
    feature vectors (channel axis 3 of [B, F, V, C, g, g])."""
    pred, target = pred.float(), target.float()
    mask = valid.float()
    l1 = (pred - target).abs().flatten(2).mean(dim=2)
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=3, eps=1e-8).flatten(2).mean(2)
    return (
        (l1 * mask).sum(dim=0).double().cpu().numpy(),
        (cos * mask).sum(dim=0).double().cpu().numpy(),
    )


def _blank(batch: dict[str, Any]) -> dict[str, Any]:
    out = dict(batch)
    for key in ("images", "history_images"):
        if isinstance(out.get(key), torch.Tensor) and out[key].dim() >= 4:
            out[key] = torch.zeros_like(out[key])
    return out


def _shuffle_views(batch: dict[str, Any]) -> dict[str, Any]:
    """Each view gets another camera's images (a cyclic shift), camera indices unchanged."""
    out = dict(batch)
    out["images"] = torch.roll(batch["images"], shifts=1, dims=1)
    history = batch.get("history_images")
    if isinstance(history, torch.Tensor) and history.dim() == 6:
        out["history_images"] = torch.roll(history, shifts=1, dims=2)
    return out


@torch.no_grad()
def collect(
    model: AutoE2E,
    batches: Iterable[dict[str, Any]],
    device: torch.device,
    horizons_s: list[float],
    autocast_dtype: torch.dtype | None = None,
    max_batches: int = 0,
    ablations: bool = False,
    diagnostics: int = 0,
) -> Collected:
    """Evaluate `model` (in eval mode) and the CV / CTRV / world-model baselines; with
    `ablations`, also the model on blanked / shuffled cameras and without its history; with
    `diagnostics` = n > 0, the per-horizon world-model statistics, keeping the features of every
    n-th sample for the whole-set ones."""
    cfg = model.cfg
    steps, dt = cfg.trajectory_steps, cfg.trajectory_dt_s
    indices = {f"l2_{h:g}s": horizon_index(h, dt, steps) for h in horizons_s}
    was_training = model.training
    model.eval()
    out = Collected()
    seen = 0

    def run(batch: dict[str, Any], **kwargs: Any) -> Any:
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            return model(batch, **kwargs)

    try:
        for n, raw in enumerate(batches):
            if max_batches and n >= max_batches:
                break
            batch = to_device(raw, device)
            result = run(batch)
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
            if ablations:
                variants = {"cameras_blanked": run(_blank(batch))}
                if batch["images"].shape[1] > 1:
                    variants["cameras_shuffled"] = run(_shuffle_views(batch))
                if cfg.use_world_model:
                    variants["history_zeroed"] = run(batch, history_off=True)
                for name, variant in variants.items():
                    bucket = out.ablations.setdefault(name, {})
                    errors = per_sample_errors(variant.trajectory.float(), target, valid, indices)
                    for metric, values in errors.items():
                        out.add(bucket, metric, values)
            if result.jepa_prediction is not None and "future_images" in batch:
                _world_model(model, batch, result, out, diagnostics, seen)
            out.episode_ids.extend(str(e) for e in raw["episode_id"])
            out.timestamps_s.extend(float(t) for t in raw["timestamp_s"])
            out.speeds.extend(ego[:, -1, 0].double().cpu().tolist())
            seen += len(raw["episode_id"])
    finally:
        model.train(was_training)
    return out


def _world_model(
    model: AutoE2E,
    batch: dict[str, Any],
    result: Any,
    out: Collected,
    diagnostics: int,
    seen: int,
) -> None:
    targets = model.jepa_targets(batch["future_images"])
    fvalid = batch["future_valid"]
    prediction = result.jepa_prediction
    copy_last = result.jepa_anchor[:, None].expand_as(targets)  # the current frame's targets
    out.add(out.jepa, "model", _per_sample_jepa(prediction, targets, fvalid))
    out.add(out.jepa, "copy_last_frame", _per_sample_jepa(copy_last, targets, fvalid))
    out.add(out.jepa, "zeros", _per_sample_jepa(torch.zeros_like(targets), targets, fvalid))
    if not diagnostics:
        return
    for name, pred in (("model", prediction), ("copy_last_frame", copy_last)):
        l1, cos = _horizon_stats(pred, targets, fvalid)
        out.jepa_horizon_l1[name] = out.jepa_horizon_l1.get(name, 0) + l1
        out.jepa_horizon_cos[name] = out.jepa_horizon_cos.get(name, 0) + cos
    count = fvalid.float().sum(dim=0).double().cpu().numpy()
    out.jepa_horizon_count = (
        count if out.jepa_horizon_count is None else out.jepa_horizon_count + count
    )
    # keep every `diagnostics`-th sample for the whole-set statistics (mean target, std, RankMe)
    keep = torch.arange(len(targets))[(torch.arange(len(targets)) + seen) % diagnostics == 0]
    out.kept_predictions.append(prediction[keep].float().cpu().numpy().astype(np.float16))
    out.kept_targets.append(targets[keep].float().cpu().numpy().astype(np.float16))
    out.kept_valid.append(fvalid[keep].bool().cpu().numpy())


def nanmean(values: list[float]) -> float:
    t = torch.tensor(values, dtype=torch.float64)
    t = t[~torch.isnan(t)]
    return float(t.mean()) if t.numel() else float("nan")
