"""One training micro-step (forward + loss + backward) and the guarded optimizer step."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from autoe2e.config import TrainConfig
from autoe2e.model import AutoE2E, ema_momentum
from autoe2e.training.losses import jepa_l1_per_step, trajectory_l1
from autoe2e.training.metrics import MetricsWindow

logger = logging.getLogger(__name__)

#: Gradient clipping threshold (global L2 norm).
CLIP_GRAD_NORM = 5.0


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. it diverged); the message names the step and what to do."""


def history_keep_mask(batch: dict[str, Any], cfg: TrainConfig, epoch: int) -> torch.Tensor | None:
    """Which samples of a micro-batch the planner sees the visual history of
    (`TrainConfig.history_dropout`); None = all of them.

    Each sample's draw is a hash of (seed, epoch, episode id, timestamp) instead of a number
    from torch's global RNG, so it does not depend on where the sample lands: DDP ranks, loader
    workers and accumulation steps make the same choice as one process (tests/test_elastic.py
    compares their weights), and a run resumed mid-epoch makes the same choice as an
    uninterrupted one (the DataLoader takes a number from the global RNG whenever an epoch's
    iterator starts, which a resumed run does at another point of the stream).
    """
    if cfg.history_dropout <= 0:
        return None
    draws = [
        int(hashlib.sha256(f"{cfg.seed}:{epoch}:{e}:{float(t):.4f}".encode()).hexdigest()[:16], 16)
        / 2**64
        for e, t in zip(batch["episode_id"], batch["timestamp_s"].tolist(), strict=True)
    ]
    return torch.tensor(draws) >= cfg.history_dropout


def forward_backward(
    model: torch.nn.Module,
    core: AutoE2E,
    batch: dict[str, Any],
    cfg: TrainConfig,
    amp: torch.dtype | None,
    window: MetricsWindow,
    epoch: int = 0,
) -> dict[str, float]:
    """Loss of one micro-batch, backpropagated (scaled for accumulation); -> its terms.

    bf16 autocast on CUDA needs no GradScaler (bf16 has fp32's exponent range); fp32 on CPU.
    Non-finite terms are returned but not added to the window (the guard decides).
    `epoch` is part of the history-dropout draw (`history_keep_mask`).
    """
    device = batch["future_trajectory"].device
    paired = cfg.history_loss == "paired"
    keep = None if paired else history_keep_mask(batch, cfg, epoch)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        out = model(
            batch,
            history_keep=None if keep is None else keep.to(device),
            plan_without_history=paired,
        )

    def plan_l1(plan: torch.Tensor) -> torch.Tensor:
        return trajectory_l1(
            plan.float(),
            batch["future_trajectory"].float(),
            batch["trajectory_valid"],
            cfg.trajectory_time_weighting,
        )

    traj = plan_l1(out.trajectory)
    if out.trajectory_without_history is not None:  # "paired": the mean of both plans' losses
        traj = 0.5 * (traj + plan_l1(out.trajectory_without_history))
    loss, jepa = traj, torch.zeros((), device=device)
    if core.cfg.use_world_model and cfg.jepa_weight > 0:
        targets = core.jepa_targets(batch["future_images"])
        step_sums, step_counts = jepa_l1_per_step(
            out.jepa_prediction, targets, batch["future_valid"]
        )
        jepa = step_sums.sum() / step_counts.sum().clamp(min=1)
        window.add_horizons(step_sums, step_counts)
        loss = loss + cfg.jepa_weight * jepa
    (loss / cfg.grad_accum_steps).backward()
    terms = {
        "loss": float(loss.detach()),
        "traj_l1": float(traj.detach()),
        "jepa_l1": float(jepa.detach()),
    }
    if all(math.isfinite(v) for v in terms.values()):
        window.add_micro(terms)
    return terms


@dataclass
class StepOutcome:
    applied: bool
    grad_norm: float
    ema_momentum: float


class GuardedOptimizer:
    """Clip, check, step, update the EMA target; a non-finite step is skipped and counted,
    `max_nonfinite_steps` in a row raise `TrainingError`.

    The decision uses the all-reduced gradient norm under DDP, so every rank skips the same
    step (one rank skipping alone would hang the others); a single process also skips when a
    micro-batch's loss was non-finite.
    """

    def __init__(self, core: AutoE2E, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
        self.core, self.optimizer, self.cfg = core, optimizer, cfg
        self.consecutive_bad = 0

    def step(
        self, step: int, frac: float, lr: float, losses_finite: bool, distributed: bool
    ) -> StepOutcome:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(self.core.trainable_parameters(), CLIP_GRAD_NORM)
        )
        if not (math.isfinite(grad_norm) and (losses_finite or distributed)):
            self.optimizer.zero_grad(set_to_none=True)
            self.consecutive_bad += 1
            return StepOutcome(False, grad_norm, float("nan"))
        self.consecutive_bad = 0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.jepa_target == "ema":
            momentum = ema_momentum(frac, self.cfg.ema_momentum_start, self.cfg.ema_momentum_end)
            self.core.target.update(self.core.backbone, momentum)
        else:  # frozen: the target stays the backbone as it was at the start
            momentum = 1.0
        return StepOutcome(True, grad_norm, momentum)

    def check_divergence(self, step: int, terms: dict[str, float], last_checkpoint: str) -> None:
        if self.consecutive_bad >= self.cfg.max_nonfinite_steps:
            raise TrainingError(
                f"training diverged: {self.consecutive_bad} optimizer steps in a row had a "
                f"non-finite loss or gradient at step {step} (last loss terms {terms}); last "
                f"good checkpoint: {last_checkpoint}. Lower lr, check the data for NaN/inf, "
                "or resume from that checkpoint"
            )
