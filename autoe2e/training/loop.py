"""The training loop: composed of small stateful parts, resumable at any optimizer step.

The parts (each in its own module): the loaders (`data`: streaming train loader with a
state_dict, full val split), the micro-step and guarded optimizer step (`step`), the metrics
window (`metrics`), validation and best-checkpoint selection (`validation`), and the checkpoint
manager (`checkpointing`) that saves and restores the `state_dict()` of every stateful part
together: model (+ EMA target), optimizer, progress, loader position, RNGs.

Design choices that come from upstream failures: bf16 autocast without a GradScaler on CUDA
(fp16 + scaler skipped every step), fp32 on CPU; gradient accumulation instead of tiny noisy
batches; the EMA target is updated once per optimizer step; the best checkpoint is chosen on
validation ADE of held-out episodes, and the test episodes are never touched here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from autoe2e import storage
from autoe2e.config import ModelConfig, TrainConfig, to_dict
from autoe2e.evaluation.collect import to_device
from autoe2e.model import AutoE2E, checkpoint_bytes, load_into
from autoe2e.training import data as run_data
from autoe2e.training import distributed
from autoe2e.training.checkpointing import (
    CheckpointManager,
    Stateful,
    collect_state,
    identity,
    restore_state,
)
from autoe2e.training.metrics import MetricsWindow, log_window
from autoe2e.training.runtime import DatasetFactory, autocast_dtype, keep_freed_cpu_memory
from autoe2e.training.schedule import lr_factor
from autoe2e.training.schedule import progress as schedule_progress
from autoe2e.training.state import Progress, RNGState
from autoe2e.training.step import GuardedOptimizer, TrainingError, forward_backward
from autoe2e.training.validation import BestCheckpoint, validate
from autoe2e.training.warm_start import initial_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_NAME", "LAST_NAME", "TrainResult", "TrainingError", "train"]

CHECKPOINT_NAME = "best.pt"
#: The weights at the end of training, next to the best-on-validation ones.
LAST_NAME = "last.pt"
SUMMARY_NAME = "train_summary.json"


@dataclass
class TrainResult:
    checkpoint_uri: str
    run_id: str | None
    best_val_ade_m: float
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)


def _flat_params(model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    params = {f"model.{k}": v for k, v in to_dict(model_cfg).items()}
    params.update({f"train.{k}": v for k, v in to_dict(train_cfg).items()})
    return params


def train(
    manifest_uri: str,
    out_uri: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    tracking: Any | None = None,
    dataset_factory: DatasetFactory | None = None,
) -> TrainResult:
    """Train on the manifest's train episodes, select on val, write `<out_uri>/best.pt` and
    `<out_uri>/last.pt`; continue from the newest checkpoint under `out_uri` if there is one.

    `tracking` is an `autoe2e.tracking.Tracker` (or None); `dataset_factory` lets tests and
    benchmarks supply map-style datasets with the sample layout instead of the manifest's
    shards (they are streamed the same way).
    """
    keep_freed_cpu_memory()  # ~1.5x faster CPU steps (see there)
    try:
        return _Run(manifest_uri, out_uri, model_cfg, train_cfg, tracking, dataset_factory)()
    finally:
        if tracking is not None:  # also when training failed: the curves up to the failure
            tracking.flush()


class _Run:
    def __init__(
        self,
        manifest_uri: str,
        out_uri: str,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        tracking: Any | None,
        factory: DatasetFactory | None,
    ) -> None:
        model_cfg.validate()
        cfg.validate()
        self.manifest_uri, self.out_uri = manifest_uri, out_uri
        self.model_cfg, self.cfg = model_cfg, cfg
        self.info = info = distributed.setup()
        torch.manual_seed(cfg.seed + info.rank)
        self.data = run_data.build(manifest_uri, model_cfg, cfg, info, factory)
        self.manager = CheckpointManager(out_uri)
        if info.is_main:
            storage.check_writable(out_uri)  # before the first step, not after an hour
        self.core = AutoE2E(model_cfg)
        self.progress = Progress(global_workers=self.data.train.global_workers)
        self.identity = identity(model_cfg, cfg)
        resumed = self.manager.latest(self.identity)
        if resumed is None and cfg.init_checkpoint:
            self._warm_start(tracking)
        self.core.to(info.device)
        self.model: torch.nn.Module = self.core
        if info.enabled:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.core,
                device_ids=[info.device.index] if info.device.type == "cuda" else None,
                find_unused_parameters=not model_cfg.use_world_model,
            )
        self.optimizer = torch.optim.AdamW(
            self.core.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.guard = GuardedOptimizer(self.core, self.optimizer, cfg)
        self.parts: dict[str, Stateful] = {
            "model": self.core,
            "optimizer": self.optimizer,
            "progress": self.progress,
            "rng": RNGState(info),
        }
        if resumed is not None:
            self._resume(*resumed)
        self.amp = autocast_dtype(cfg.precision, info.device)
        self.tracker = tracking if info.is_main else None
        self.best = BestCheckpoint(
            storage.join_uri(out_uri, CHECKPOINT_NAME),
            self.core,
            self.progress,
            {
                "split": self.data.split,
                "cameras": self.data.cameras,
                "manifest_uri": manifest_uri,
                "train_config": to_dict(cfg),
                "run_id": self.tracker.run_id if self.tracker is not None else None,
            },
        )
        self.total_steps = self._total_steps()

    # ------------------------------------------------------------------ setup
    def _warm_start(self, tracking: Any | None) -> None:
        cfg = self.cfg
        tracking_uri = getattr(tracking, "tracking_uri", None) or os.environ.get(
            "MLFLOW_TRACKING_URI"
        )
        data = initial_checkpoint(cfg.init_checkpoint, cfg.init_checkpoint_optional, tracking_uri)
        if data is not None:
            extra = load_into(self.core, data, source=cfg.init_checkpoint)
            logger.info(
                "warm start from %s (trained %s steps, val ADE %s m)",
                cfg.init_checkpoint,
                extra.get("step"),
                extra.get("val_ade_m"),
            )

    def _resume(self, uri: str, state: dict[str, Any]) -> None:
        """Every rank restores the same checkpoint (rank 0 wrote it); the loader position is
        restored only mid-epoch and only for the worker layout the order was made for."""
        restore_state(self.parts, state)
        progress, workers = self.progress, self.data.train.global_workers
        if progress.epoch_batches and progress.global_workers == workers:
            self.data.train_loader.load_state_dict(state["loader"])
        elif progress.epoch_batches:
            logger.warning(
                "%s was written with %d loader workers in all, this run has %d: the epoch "
                "order differs, so epoch %d restarts from its beginning (its first %d batches "
                "are seen again; nothing is skipped)",
                uri, progress.global_workers, workers, progress.epoch, progress.epoch_batches,
            )  # fmt: skip
            progress.epoch_batches = 0
        progress.global_workers = workers
        logger.info(
            "resuming from %s: step %d, epoch %d after %d batches",
            uri, progress.step, progress.epoch, progress.epoch_batches,
        )  # fmt: skip

    def _total_steps(self) -> int:
        cfg, train = self.cfg, self.data.train
        total = sum(
            math.ceil(train.batches_per_rank(e) / cfg.grad_accum_steps) for e in range(cfg.epochs)
        )
        return min(total, cfg.max_steps) if cfg.max_steps else total

    def _checkpoint(self) -> None:
        """Save every part (a collective: every rank takes part, rank 0 writes)."""
        state = collect_state(self.parts)
        state["identity"] = self.identity
        if self.progress.epoch_batches:
            state["loader"] = self.data.train_loader.state_dict()
        if self.info.is_main:
            self.manager.save(self.progress.step, state)

    # ------------------------------------------------------------------ run
    def __call__(self) -> TrainResult:
        cfg, info, progress, tracker = self.cfg, self.info, self.progress, self.tracker
        if tracker is not None:
            if progress.step == 0:
                tracker.log_params(_flat_params(self.model_cfg, cfg))
                # the configs as one file too (params shorten long values)
                configs = {"model": to_dict(self.model_cfg), "train": to_dict(cfg)}
                tracker.log_dict("config.json", configs)
            else:  # the first attempt logged them; MLflow refuses to change a logged value
                tracker.set_tags({"resumed_from_step": str(progress.step)})
            tracker.set_tags(
                {
                    "stage": "train",
                    "manifest_uri": self.manifest_uri,
                    "cameras": ",".join(self.data.cameras),
                }
            )
            tracker.start_system_metrics()
        # A progress bar (step, loss, samples/s, ETA) for a person at a terminal; pods and CI
        # get the periodic log lines instead.
        size = shutil.get_terminal_size((100, 20))  # a 0 x 0 terminal would hide the bar
        self.bar = tqdm(
            total=self.total_steps,
            initial=progress.step,
            unit="step",
            ncols=size.columns,
            nrows=size.lines,
            disable=not (info.is_main and sys.stderr.isatty()),
        )
        self.start = time.monotonic() - progress.elapsed_s
        self.window = MetricsWindow(self.model_cfg.future_steps)
        self.last: dict[str, float] = {}
        try:
            for epoch in range(progress.epoch, cfg.epochs):
                if self._epoch(epoch):
                    break
        finally:
            self.bar.close()
        return self._finish()

    def _elapsed(self) -> float:
        return time.monotonic() - self.start

    def _done(self) -> bool:
        cfg = self.cfg
        return bool(
            (cfg.max_steps and self.progress.step >= cfg.max_steps)
            or (cfg.time_budget_s and self._elapsed() >= cfg.time_budget_s)
        )

    def _epoch(self, epoch: int) -> bool:
        """One epoch (or what is left of it); True when training should stop."""
        cfg, info, progress = self.cfg, self.info, self.progress
        train = self.data.train
        train.set_epoch(epoch)
        batches = train.batches_per_rank(epoch)
        plan = train.plan(epoch)
        logger.info(
            "epoch %d: %d batches per rank, %d samples (%d re-served and %d left out to even "
            "out batches across %d loader workers%s)",
            epoch, batches, plan.samples, plan.padded, plan.dropped, train.global_workers,
            ", shards split by row group" if plan.split else "",
        )  # fmt: skip
        if progress.epoch != epoch:
            progress.epoch, progress.epoch_batches = epoch, 0
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        finite, stop = True, False
        wait_start = time.monotonic()
        for raw in self.data.train_loader:
            if cfg.max_steps and progress.step >= cfg.max_steps:
                stop = True  # a resumed run that had already finished its steps
                break
            self.window.add_wait(time.monotonic() - wait_start)
            i = progress.epoch_batches  # the batch's position in the whole epoch
            self._log_samples(raw)
            batch = to_device(raw, info.device)
            terms = forward_backward(
                self.model, self.core, batch, cfg, self.amp, self.window, epoch
            )
            finite = finite and all(math.isfinite(v) for v in terms.values())
            progress.epoch_batches = i + 1
            if (i + 1) % cfg.grad_accum_steps and i + 1 != batches:
                wait_start = time.monotonic()
                continue
            self._optimizer_step(terms, finite, epoch)
            finite = True
            if self._done():
                stop = True
                break
            wait_start = time.monotonic()
        if self.info.is_main:
            self._validate(epoch)
        distributed.barrier(info)
        if not stop:
            progress.epoch, progress.epoch_batches = epoch + 1, 0
        return stop

    def _log_samples(self, raw: dict[str, Any]) -> None:
        """With AUTOE2E_SAMPLE_LOG_DIR set, every rank appends the (episode, timestamp) of each
        sample it trains on to `rank-<r>.jsonl` there: to audit what a run saw (which data a
        rank read, what a resumed run repeated)."""
        folder = os.environ.get("AUTOE2E_SAMPLE_LOG_DIR")
        if not folder:
            return
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"rank-{self.info.rank}.jsonl"), "a") as handle:
            for episode, t in zip(raw["episode_id"], raw["timestamp_s"].tolist(), strict=True):
                handle.write(json.dumps([episode, round(float(t), 4)]) + "\n")

    def _optimizer_step(self, terms: dict[str, float], finite: bool, epoch: int) -> None:
        cfg, info, progress = self.cfg, self.info, self.progress
        elapsed = self._elapsed()
        frac = schedule_progress(progress.step, self.total_steps, elapsed, cfg.time_budget_s)
        lr = cfg.lr * lr_factor(progress.step, cfg.warmup_steps, frac)
        outcome = self.guard.step(progress.step, frac, lr, finite, info.enabled)
        if not outcome.applied:
            progress.skipped_steps += 1
            logger.warning(
                "step %d skipped: non-finite loss or gradient (%s, grad norm %s); %d in a row",
                progress.step, terms, outcome.grad_norm, self.guard.consecutive_bad,
            )  # fmt: skip
            if self.tracker is not None:
                skipped = {"train/skipped_steps": float(progress.skipped_steps)}
                self.tracker.log_metrics(skipped, step=progress.step, wait=False)
            self.guard.check_divergence(progress.step, terms, self.manager.last_saved or "none yet")
            return
        progress.step += 1
        self.window.steps += 1
        self.bar.update(1)
        step = progress.step
        if step % cfg.log_every_steps == 0 or step == 1:
            # every rank, the same steps: all of them take part in the all-gather
            distributed.check_in_sync(list(self.core.trainable_parameters()), info, step)
            samples = step * cfg.grad_accum_steps * cfg.batch_size * info.world_size
            self.last = self.window.summary(
                {
                    "train/skipped_steps": float(progress.skipped_steps),
                    "train/lr": lr,
                    "train/grad_norm": outcome.grad_norm,
                    "train/ema_momentum": outcome.ema_momentum,
                    "train/samples_per_s": samples / max(self._elapsed(), 1e-9),
                }
            )
            log_window(self.last, step, epoch, self.tracker, self.bar)
            self.window.reset()
        if cfg.val_every_steps and step % cfg.val_every_steps == 0:
            if info.is_main:
                self._validate(epoch)
            distributed.barrier(info)
        every = cfg.checkpoint_every_steps
        if every and step % every == 0:
            progress.elapsed_s = self._elapsed()
            self._checkpoint()

    def _validate(self, epoch: int) -> None:
        val = validate(self.core, self.data.val_loader, self.info.device, self.amp)
        val["epoch"] = float(epoch)
        logger.info("epoch %d validation %s", epoch, {k: round(v, 4) for k, v in val.items()})
        if self.tracker is not None:
            self.tracker.log_metrics(val, step=self.progress.step, wait=False)
        self.best.offer(val, self.progress.step, epoch)
        self.model.train()

    def _finish(self) -> TrainResult:
        info, progress, tracker = self.info, self.progress, self.tracker
        progress.elapsed_s = self._elapsed()
        best = progress.best_metrics
        metrics = {**self.last, **{f"best_{k}": v for k, v in best.items()}}
        metrics["train/steps"] = float(progress.step)
        metrics["train/skipped_steps"] = float(progress.skipped_steps)
        metrics["train/wall_s"] = progress.elapsed_s
        run_id = tracker.run_id if tracker is not None else None
        self._checkpoint()
        checkpoint_uri = self.best.uri
        if info.is_main:
            last_uri = storage.join_uri(self.out_uri, LAST_NAME)
            extra = {k: v for k, v in self.best.extra.items()}
            extra.update(step=progress.step, run_id=run_id)
            storage.write_bytes(last_uri, checkpoint_bytes(self.core, extra))
            # the selected weights as an MLflow model: `mlflow.pytorch.load_model(policy_uri)`
            policy_uri = tracker.log_policy(self._best_model()) if tracker is not None else None
            summary = {
                "checkpoint_uri": checkpoint_uri,
                "last_uri": last_uri,
                "policy_uri": policy_uri,
                "run_id": run_id,
                "split": self.data.split,
                "metrics": metrics,
            }
            storage.write_bytes(
                storage.join_uri(self.out_uri, SUMMARY_NAME),
                json.dumps(summary, indent=2, sort_keys=True).encode(),
            )
            if tracker is not None:
                tracker.log_metrics({"train/wall_s": progress.elapsed_s}, step=progress.step)
                tracker.log_artifact_bytes(
                    CHECKPOINT_NAME, storage.read_bytes(checkpoint_uri), artifact_path="checkpoint"
                )
                tracker.log_artifact_bytes(
                    LAST_NAME, storage.read_bytes(last_uri), artifact_path="last"
                )
                tracker.log_dict(SUMMARY_NAME, summary)
        distributed.teardown(info)
        return TrainResult(checkpoint_uri, run_id, progress.best_ade, progress.step, metrics)

    def _best_model(self) -> AutoE2E:
        """The selected weights as a module (what `mlflow.pytorch.load_model` gives back)."""
        from autoe2e.model import load_model

        model, _ = load_model(storage.read_bytes(self.best.uri), self.best.uri)
        return model.eval()
