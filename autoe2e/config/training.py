"""Optimisation settings (`autoe2e train`)."""

from __future__ import annotations

from dataclasses import dataclass

from autoe2e.config._common import _require


@dataclass
class TrainConfig:
    """Optimisation settings for `autoe2e train`."""

    epochs: int = 4
    max_steps: int = 0  # 0 = no limit beyond epochs
    time_budget_s: float = 0.0  # 0 = no wall-clock limit
    batch_size: int = 32
    grad_accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    jepa_weight: float = 0.2
    #: Probability that a training sample's visual history is zeroed before the planner sees it
    #: (whole history, per sample; never at evaluation; only with history_loss="dropout").
    #: See AutoE2E.forward for why.
    history_dropout: float = 0.5
    #: How the planner learns to plan both with and without the history. "dropout": each
    #: sample's history is zeroed with probability `history_dropout` (one plan per sample).
    #: "paired": every sample is planned twice, with its history and with it zeroed, and the
    #: trajectory loss is the mean of the two (`history_dropout` unused): both plans learn
    #: from every sample, so the planner's own camera path is not trained on a fraction of
    #: the data only. Costs a second pass of the planner (not of the backbone) per sample.
    history_loss: str = "dropout"
    #: "none" = plain mean L1 over the 64 steps; "linear" = step k of T weighted (T - k + 1) / T
    #: (1 at 0.1 s down to 1/T at 6.4 s). Errors in metres grow with the horizon, so the plain
    #: mean is dominated by far steps that the current observation determines least; "linear"
    #: keeps the near-term, control-relevant part of the plan from being traded away for them.
    trajectory_time_weighting: str = "none"
    ema_momentum_start: float = 0.996
    ema_momentum_end: float = 1.0
    #: JEPA target encoder: "ema" (EMA of the online backbone, updated every optimizer step) or
    #: "frozen" (the backbone as initialised/loaded, never updated; V-JEPA 2-AC style).
    jepa_target: str = "ema"
    precision: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU; or "bf16" / "fp32"
    #: DataLoader worker processes per rank (each streams its own shards; 0 = in the process).
    num_workers: int = 0
    #: Samples each loader worker shuffles among (a shard is read whole, then its samples mix
    #: with those of earlier shards in this buffer). Larger = better mixing, more memory.
    shuffle_buffer: int = 2048
    #: Every rank must yield the same number of batches (DDP all-reduces each step): "pad"
    #: re-serves samples of a worker's own stream to fill it up, "drop" cuts every worker to
    #: the shortest. Either way the count is logged.
    uneven_batches: str = "pad"
    #: Batches each worker prepares ahead (only with num_workers > 0).
    prefetch_factor: int = 2
    #: Validate (full val split) every N optimizer steps as well as at each epoch end; 0 = only
    #: at epoch ends.
    val_every_steps: int = 0
    #: MLflow unreachable: False = warn (naming the URI) and log to a local fallback store;
    #: True = fail before training starts.
    tracking_strict: bool = False
    #: Initialisation and data order; not the split (`split_seed`).
    seed: int = 0
    #: Seed of the episode-id hash that splits train / val / test. Kept apart from `seed` so a
    #: run with another training seed is scored on the same test episodes as the champion.
    split_seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    log_every_steps: int = 10
    #: Save a resumable checkpoint every N optimizer steps (and always at the end); 0 = only at
    #: the end. A restarted run continues from the newest one.
    checkpoint_every_steps: int = 100
    #: Optimizer steps with a non-finite loss or gradient are skipped (and counted); this many
    #: in a row abort training with an error naming the step and the last good checkpoint.
    max_nonfinite_steps: int = 5
    experiment: str = "autoe2e"
    #: Warm start: weights from a checkpoint file/URI or a registered model
    #: ("models:/autoe2e-demo@champion"); the ModelConfig must match. Empty = random init.
    init_checkpoint: str = ""
    #: With a models:/...@alias URI: start from scratch (with a warning) when the alias does
    #: not exist yet, e.g. the first nightly run before any champion.
    init_checkpoint_optional: bool = False

    def validate(self) -> TrainConfig:
        _require(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _require(
            self.max_nonfinite_steps >= 1, "max_nonfinite_steps", self.max_nonfinite_steps, ">= 1"
        )
        _require(
            self.checkpoint_every_steps >= 0,
            "checkpoint_every_steps",
            self.checkpoint_every_steps,
            ">= 0 (0 = only at the end)",
        )
        _require(self.num_workers >= 0, "num_workers", self.num_workers, ">= 0")
        _require(self.shuffle_buffer >= 1, "shuffle_buffer", self.shuffle_buffer, ">= 1")
        _require(
            self.uneven_batches in ("pad", "drop"),
            "uneven_batches",
            self.uneven_batches,
            'use "pad" or "drop"',
        )
        _require(self.prefetch_factor >= 1, "prefetch_factor", self.prefetch_factor, ">= 1")
        _require(
            self.val_every_steps >= 0, "val_every_steps", self.val_every_steps, ">= 0 (0 = epochs)"
        )
        _require(self.grad_accum_steps >= 1, "grad_accum_steps", self.grad_accum_steps, ">= 1")
        _require(self.lr > 0, "lr", self.lr, "> 0")
        _require(
            0 <= self.history_dropout < 1, "history_dropout", self.history_dropout, "in [0, 1)"
        )
        _require(
            self.history_loss in ("dropout", "paired"),
            "history_loss",
            self.history_loss,
            'use "dropout" or "paired"',
        )
        _require(
            self.jepa_target in ("ema", "frozen"),
            "jepa_target",
            self.jepa_target,
            'use "ema" or "frozen"',
        )
        _require(
            self.precision in ("auto", "bf16", "fp32"),
            "precision",
            self.precision,
            "one of auto, bf16, fp32 (fp16 + GradScaler skipped every step upstream)",
        )
        _require(
            self.trajectory_time_weighting in ("none", "linear"),
            "trajectory_time_weighting",
            self.trajectory_time_weighting,
            "one of none, linear",
        )
        _require(
            0 <= self.val_fraction < 1
            and 0 < self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1,
            "val_fraction/test_fraction",
            (self.val_fraction, self.test_fraction),
            "fractions in [0, 1) that sum to < 1",
        )
        return self
