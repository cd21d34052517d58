"""Validation on the full val split and selection of the best checkpoint by val ADE.

Every val sample counts: consecutive 10 Hz samples are correlated, but selecting on a
subsample (every 4th, as this code once did) made the choice of checkpoint noisy.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from autoe2e import storage
from autoe2e.evaluation.collect import collect, nanmean
from autoe2e.model import AutoE2E, checkpoint_bytes
from autoe2e.training.state import Progress

logger = logging.getLogger(__name__)


def validate(
    model: AutoE2E, loader: Any, device: torch.device, amp: torch.dtype | None
) -> dict[str, float]:
    collected = collect(model, loader, device, [], autocast_dtype=amp)
    metrics = {
        "val/ade_m": nanmean(collected.planners["model"]["ade"]),
        "val/fde_m": nanmean(collected.planners["model"]["fde"]),
        "val/cv_ade_m": nanmean(collected.planners["constant_velocity"]["ade"]),
        "val/ctrv_ade_m": nanmean(collected.planners["ctrv"]["ade"]),
        "val/samples": float(len(collected.episode_ids)),
    }
    for name, values in collected.jepa.items():
        metrics[f"val/jepa_l1_{name}"] = nanmean(values)
    return metrics


class BestCheckpoint:
    """Writes `best.pt` whenever validation ADE improves (the best so far lives in Progress,
    so a resumed run keeps comparing against it)."""

    def __init__(self, uri: str, core: AutoE2E, progress: Progress, extra: dict[str, Any]):
        self.uri, self.core, self.progress, self.extra = uri, core, progress, extra

    def offer(self, metrics: dict[str, float], step: int, epoch: int) -> bool:
        ade = metrics["val/ade_m"]
        if not (ade < self.progress.best_ade or not self.progress.best_metrics):
            return False
        self.progress.best_ade, self.progress.best_metrics = ade, dict(metrics)
        extra = {**self.extra, "step": step, "epoch": epoch, "val_ade_m": ade}
        storage.write_bytes(self.uri, checkpoint_bytes(self.core, extra))
        logger.info("new best val ADE %.3f m -> %s", ade, self.uri)
        return True
