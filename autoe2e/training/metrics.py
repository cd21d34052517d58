"""Per-step training metrics: accumulated over a logging window, then logged once.

Logging goes to the log, the progress bar and (rank 0) MLflow through its background queue
(`Tracker.log_metrics(wait=False)`), so a slow tracking server never stalls a step
(benchmarks/train.py (b) measures the cost).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)


class MetricsWindow:
    """Sums of the loss terms, per-horizon JEPA L1 and data-wait time since the last log."""

    def __init__(self, future_steps: int) -> None:
        self.future_steps = future_steps
        self.reset()

    def reset(self) -> None:
        self.sums = {"loss": 0.0, "traj_l1": 0.0, "jepa_l1": 0.0}
        self.micro = 0
        self.steps = 0
        self.data_wait_s = 0.0
        self.horizon_sums = torch.zeros(self.future_steps, dtype=torch.float64)
        self.horizon_counts = torch.zeros(self.future_steps, dtype=torch.float64)

    def add_micro(self, terms: dict[str, float]) -> None:
        self.micro += 1
        for key in self.sums:
            self.sums[key] += terms[key]

    def add_horizons(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        self.horizon_sums += sums.detach().double().cpu()
        self.horizon_counts += counts.detach().double().cpu()

    def add_wait(self, seconds: float) -> None:
        self.data_wait_s += seconds

    def summary(self, extra: dict[str, float]) -> dict[str, float]:
        """The window's means (`train/...`) plus `extra` (lr, grad norm, ...)."""
        micro = max(self.micro, 1)
        out = {f"train/{k}": v / micro for k, v in self.sums.items()}
        for k, (s, c) in enumerate(zip(self.horizon_sums, self.horizon_counts, strict=True)):
            if c > 0:  # horizons with no valid sample are left out
                out[f"train/jepa_l1_h{k + 1}"] = float(s / c)
        out["train/data_wait_s_per_step"] = self.data_wait_s / max(self.steps, 1)
        out.update(extra)
        return out


def log_window(
    metrics: dict[str, float], step: int, epoch: int, tracker: Any | None, bar: Any
) -> None:
    logger.info("epoch %d step %d %s", epoch, step, {k: round(v, 4) for k, v in metrics.items()})
    bar.set_postfix(
        loss=f"{metrics['train/loss']:.3f}",
        samples_s=f"{metrics['train/samples_per_s']:.1f}",
        refresh=False,
    )
    if tracker is not None:
        tracker.log_metrics(metrics, step=step, wait=False)
