"""The training loop: episode split, AdamW + warmup/cosine, accumulation, EMA, validation.

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
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from autoe2e import storage
from autoe2e.config import ConfigError, ModelConfig, TrainConfig, to_dict
from autoe2e.evaluation.collect import collect, nanmean, to_device
from autoe2e.model import AutoE2E, checkpoint_bytes, ema_momentum, load_into
from autoe2e.splits import split_episodes
from autoe2e.training import distributed
from autoe2e.training.checkpointing import (
    CheckpointManager,
    identity,
    rng_state,
    set_rng_state,
)
from autoe2e.training.losses import jepa_l1_per_step, trajectory_l1
from autoe2e.training.runtime import DatasetFactory, autocast_dtype, shard_dataset_factory
from autoe2e.training.sampler import EpochSampler
from autoe2e.training.schedule import lr_factor, progress
from autoe2e.training.warm_start import initial_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "best.pt"
#: The weights at the end of training, next to the best-on-validation ones.
LAST_NAME = "last.pt"
#: Per-epoch validation uses every n-th val sample. Consecutive 10 Hz samples are near
#: duplicates, and validation time counts against the CPU demo's wall-clock budget: a full pass
#: (452 samples x 36 image encodings) costs ~12 s per epoch on one core, every 4th sample ~3 s,
#: so the 150 s demo gets ~25 s more training over its 3-4 epochs (the test set stays complete).
VAL_SAMPLE_STRIDE = 4
SUMMARY_NAME = "train_summary.json"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. it diverged); the message names the step and what to do."""


@dataclass
class TrainResult:
    checkpoint_uri: str
    run_id: str | None
    best_val_ade_m: float
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)


def _loader(
    ds: Dataset, cfg: TrainConfig, shuffle: bool, info: distributed.DistInfo, seed: int
) -> DataLoader:
    """Batches in an order that depends only on (seed, epoch), so a resumed run can skip
    exactly the samples the interrupted one consumed (EpochSampler)."""
    sampler = EpochSampler(len(ds), seed, info.rank, info.world_size, shuffle=shuffle)  # type: ignore[arg-type]
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        drop_last=False,
    )


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
    """Train on the manifest's train episodes, select on val, write `<out_uri>/best.pt`.

    `tracking` is an `autoe2e.tracking.Tracker` (or None); `dataset_factory` lets tests and
    other data sources supply datasets with the ShardDataset item layout.
    """
    try:
        return _train(manifest_uri, out_uri, model_cfg, train_cfg, tracking, dataset_factory)
    finally:
        if tracking is not None:  # also when training failed: the curves up to the failure
            tracking.flush()


def _train(
    manifest_uri: str,
    out_uri: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    tracking: Any | None,
    dataset_factory: DatasetFactory | None,
) -> TrainResult:
    model_cfg.validate()
    train_cfg.validate()
    factory = dataset_factory or shard_dataset_factory
    info = distributed.setup()
    torch.manual_seed(train_cfg.seed + info.rank)
    frames = model_cfg.use_world_model

    full = factory(manifest_uri, None, frames)
    cameras = list(full.cameras)
    if len(cameras) > model_cfg.max_cameras:
        raise ConfigError(
            f"config field max_cameras={model_cfg.max_cameras} is invalid: the dataset has "
            f"{len(cameras)} cameras {cameras}; raise max_cameras to >= {len(cameras)}"
        )
    split = split_episodes(
        list(full.episode_ids()), train_cfg.val_fraction, train_cfg.test_fraction, train_cfg.seed
    )
    logger.info("split by episode: %s", {k: len(v) for k, v in split.items()})
    train_ds = factory(manifest_uri, split["train"], frames)
    val_ds = factory(manifest_uri, split["val"], frames)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ValueError(
            f"{manifest_uri}: empty split (train={len(train_ds)}, val={len(val_ds)} samples); "
            "prepare more samples per episode or more episodes"
        )
    train_loader = _loader(train_ds, train_cfg, True, info, train_cfg.seed)
    val_subset = Subset(val_ds, range(0, len(val_ds), VAL_SAMPLE_STRIDE))
    val_loader = _loader(
        val_subset, train_cfg, False, distributed.DistInfo(0, 1, 0, info.device), 0
    )

    model = AutoE2E(model_cfg)
    manager = CheckpointManager(out_uri)
    if info.is_main:
        storage.check_writable(out_uri)  # before the first step, not after an hour of training
    run_identity = identity(model_cfg, train_cfg)
    resumed = manager.latest(run_identity)
    if train_cfg.init_checkpoint and resumed is None:
        tracking_uri = getattr(tracking, "tracking_uri", None) or os.environ.get(
            "MLFLOW_TRACKING_URI"
        )
        data = initial_checkpoint(
            train_cfg.init_checkpoint, train_cfg.init_checkpoint_optional, tracking_uri
        )
        if data is not None:
            init_extra = load_into(model, data, source=train_cfg.init_checkpoint)
            logger.info(
                "warm start from %s (trained %s steps, val ADE %s m)",
                train_cfg.init_checkpoint,
                init_extra.get("step"),
                init_extra.get("val_ade_m"),
            )
    model = model.to(info.device)
    core = model
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(  # type: ignore[assignment]
            model,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=not model_cfg.use_world_model,
        )
    optimizer = torch.optim.AdamW(
        core.trainable_parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay
    )
    amp = autocast_dtype(train_cfg.precision, info.device)
    sampler: EpochSampler = train_loader.sampler  # type: ignore[assignment]
    batches_per_epoch = math.ceil(sampler.per_rank / train_cfg.batch_size)
    total_steps = train_cfg.epochs * math.ceil(batches_per_epoch / train_cfg.grad_accum_steps)
    if train_cfg.max_steps:
        total_steps = min(total_steps, train_cfg.max_steps)
    use_jepa = model_cfg.use_world_model and train_cfg.jepa_weight > 0

    best_ade = float("inf")
    best_metrics: dict[str, float] = {}
    step, start_epoch, skip_batches, spent_s = 0, 0, 0, 0.0
    if resumed is not None:
        resumed_uri, state = resumed
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, start_epoch, skip_batches = state["step"], state["epoch"], state["epoch_batches"]
        best_ade, best_metrics = state["best_ade"], dict(state["best_metrics"])
        spent_s = state["elapsed_s"]
        set_rng_state(state["rng"])
        logger.info(
            "resuming from %s: step %d, epoch %d after %d batches",
            resumed_uri,
            step,
            start_epoch,
            skip_batches,
        )

    def train_state(epoch: int, epoch_batches: int, elapsed_s: float) -> dict[str, Any]:
        return {
            "identity": run_identity,
            "model": core.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "epoch_batches": epoch_batches,
            "best_ade": best_ade,
            "best_metrics": best_metrics,
            "elapsed_s": elapsed_s,
            "rng": rng_state(),
        }

    tracker = tracking if info.is_main else None
    if tracker is not None:
        if resumed is None:
            tracker.log_params(_flat_params(model_cfg, train_cfg))
        else:  # the first attempt logged them; MLflow refuses to change a logged value
            tracker.set_tags({"resumed_from_step": str(step)})
        tracker.set_tags(
            {"stage": "train", "manifest_uri": manifest_uri, "cameras": ",".join(cameras)}
        )

    checkpoint_uri = storage.join_uri(out_uri, CHECKPOINT_NAME)
    # A progress bar (step, loss, samples/s, ETA) for a person at a terminal; pods and CI get
    # the periodic log lines instead.
    bar = tqdm(
        total=total_steps,
        initial=step,
        unit="step",
        # a terminal that reports no size (0 x 0) would make tqdm hide the bar
        ncols=shutil.get_terminal_size((100, 20)).columns,
        nrows=shutil.get_terminal_size((100, 20)).lines,
        disable=not (info.is_main and sys.stderr.isatty()),
    )
    start = time.monotonic() - spent_s
    stop = False
    last: dict[str, float] = {}
    #: where a resumed run would continue: (epoch, batches of it consumed)
    position = (start_epoch, skip_batches)
    skipped, consecutive_bad, window_finite = 0, 0, True
    for epoch in range(start_epoch, train_cfg.epochs):
        skip = skip_batches if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip * train_cfg.batch_size)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "traj_l1": 0.0, "jepa_l1": 0.0}
        horizon = _HorizonMeans(model_cfg.future_steps)
        micro = 0
        for j, raw in enumerate(train_loader):
            if train_cfg.max_steps and step >= train_cfg.max_steps:
                stop = True  # a resumed run that had already finished its steps
                break
            i = j + skip  # the batch's position in the whole epoch
            batch = to_device(raw, info.device)
            with torch.autocast(
                info.device.type, dtype=amp or torch.float32, enabled=amp is not None
            ):
                out = model(batch)
            traj = trajectory_l1(
                out.trajectory.float(),
                batch["future_trajectory"].float(),
                batch["trajectory_valid"],
                train_cfg.trajectory_time_weighting,
            )
            loss = traj
            jepa = torch.zeros((), device=info.device)
            if use_jepa:
                targets = core.jepa_targets(batch["future_images"])
                step_sums, step_counts = jepa_l1_per_step(
                    out.jepa_prediction, targets, batch["future_valid"]
                )
                jepa = step_sums.sum() / step_counts.sum().clamp(min=1)
                horizon.add(step_sums, step_counts)
                loss = loss + train_cfg.jepa_weight * jepa
            (loss / train_cfg.grad_accum_steps).backward()
            terms = {"loss": float(loss.detach()), "traj_l1": float(traj.detach())}
            terms["jepa_l1"] = float(jepa.detach())
            if all(math.isfinite(v) for v in terms.values()):
                micro += 1
                for key, value in terms.items():
                    sums[key] += value
            else:
                window_finite = False
            boundary = (i + 1) % train_cfg.grad_accum_steps == 0 or i + 1 == batches_per_epoch
            if not boundary:
                continue
            frac = progress(step, total_steps, time.monotonic() - start, train_cfg.time_budget_s)
            for group in optimizer.param_groups:
                group["lr"] = train_cfg.lr * lr_factor(step, train_cfg.warmup_steps, frac)
            grad_norm = torch.nn.utils.clip_grad_norm_(core.trainable_parameters(), 5.0)
            # DDP all-reduces gradients, so their norm is the same decision on every rank; the
            # local loss would not be (one rank skipping alone would hang the others).
            finite = bool(torch.isfinite(grad_norm)) and (window_finite or info.enabled)
            window_finite = True
            if not finite:
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                consecutive_bad += 1
                logger.warning(
                    "step %d skipped: non-finite loss or gradient (%s, grad norm %s); %d in a row",
                    step, terms, float(grad_norm), consecutive_bad,
                )  # fmt: skip
                if tracker is not None:
                    skipped_metric = {"train/skipped_steps": float(skipped)}
                    tracker.log_metrics(skipped_metric, step=step, wait=False)
                if consecutive_bad >= train_cfg.max_nonfinite_steps:
                    raise TrainingError(
                        f"training diverged: {consecutive_bad} optimizer steps in a row had a "
                        f"non-finite loss or gradient at step {step} (last loss terms {terms}, "
                        f"grad norm {float(grad_norm)}); last good checkpoint: "
                        f"{manager.last_saved or 'none yet'}. Lower lr, check the data for "
                        "NaN/inf, or resume from that checkpoint"
                    )
                continue
            consecutive_bad = 0
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if train_cfg.jepa_target == "ema":
                momentum = ema_momentum(
                    frac, train_cfg.ema_momentum_start, train_cfg.ema_momentum_end
                )
                core.target.update(core.backbone, momentum)
            else:  # frozen: the target stays the backbone as it was at the start
                momentum = 1.0
            step += 1
            bar.update(1)
            if step % train_cfg.log_every_steps == 0 or step == 1:
                # every rank, the same steps: all of them take part in the all-gather
                distributed.check_in_sync(list(core.trainable_parameters()), info, step)
                micro = max(micro, 1)
                last = {
                    "train/loss": sums["loss"] / micro,
                    "train/traj_l1": sums["traj_l1"] / micro,
                    "train/jepa_l1": sums["jepa_l1"] / micro,
                    "train/skipped_steps": float(skipped),
                    "train/lr": optimizer.param_groups[0]["lr"],
                    "train/grad_norm": float(grad_norm),
                    "train/ema_momentum": momentum,
                    **horizon.means("train/jepa_l1_h"),
                    "train/samples_per_s": (
                        step * train_cfg.grad_accum_steps * train_cfg.batch_size * info.world_size
                    )
                    / (time.monotonic() - start),
                }
                logger.info(
                    "epoch %d step %d %s", epoch, step, {k: round(v, 4) for k, v in last.items()}
                )
                bar.set_postfix(
                    loss=f"{last['train/loss']:.3f}",
                    samples_s=f"{last['train/samples_per_s']:.1f}",
                    refresh=False,
                )
                if tracker is not None:
                    tracker.log_metrics(last, step=step, wait=False)
                sums = dict.fromkeys(sums, 0.0)
                horizon = _HorizonMeans(model_cfg.future_steps)
                micro = 0
            position = (epoch, i + 1)
            every = train_cfg.checkpoint_every_steps
            if info.is_main and every and step % every == 0:
                manager.save(step, train_state(*position, time.monotonic() - start))
            elapsed = time.monotonic() - start
            if (train_cfg.max_steps and step >= train_cfg.max_steps) or (
                train_cfg.time_budget_s and elapsed >= train_cfg.time_budget_s
            ):
                stop = True
                break

        if info.is_main:
            val = _validate(core, val_loader, info.device, amp)
            val["epoch"] = float(epoch)
            logger.info("epoch %d validation %s", epoch, {k: round(v, 4) for k, v in val.items()})
            if tracker is not None:
                tracker.log_metrics(val, step=step)
            if val["val/ade_m"] < best_ade or not best_metrics:
                best_ade = val["val/ade_m"]
                best_metrics = dict(val)
                extra = {
                    "step": step,
                    "epoch": epoch,
                    "val_ade_m": best_ade,
                    "split": split,
                    "cameras": cameras,
                    "manifest_uri": manifest_uri,
                    "train_config": to_dict(train_cfg),
                    "run_id": tracker.run_id if tracker is not None else None,
                }
                storage.write_bytes(checkpoint_uri, checkpoint_bytes(core, extra))
                logger.info("new best val ADE %.3f m -> %s", best_ade, checkpoint_uri)
        distributed.barrier(info)
        if stop:
            break
        position = (epoch + 1, 0)

    bar.close()
    result_metrics = {**last, **{f"best_{k}": v for k, v in best_metrics.items()}}
    result_metrics["train/steps"] = float(step)
    result_metrics["train/wall_s"] = time.monotonic() - start
    run_id = tracker.run_id if tracker is not None else None
    if info.is_main:
        manager.save(step, train_state(*position, time.monotonic() - start))
        last_uri = storage.join_uri(out_uri, LAST_NAME)
        storage.write_bytes(
            last_uri,
            checkpoint_bytes(
                core,
                {
                    "step": step,
                    "split": split,
                    "cameras": cameras,
                    "manifest_uri": manifest_uri,
                    "train_config": to_dict(train_cfg),
                    "run_id": run_id,
                },
            ),
        )
        summary = {
            "checkpoint_uri": checkpoint_uri,
            "last_uri": last_uri,
            "run_id": run_id,
            "split": split,
            "metrics": result_metrics,
        }
        storage.write_bytes(
            storage.join_uri(out_uri, SUMMARY_NAME),
            json.dumps(summary, indent=2, sort_keys=True).encode(),
        )
        if tracker is not None:
            tracker.log_metrics({"train/wall_s": result_metrics["train/wall_s"]}, step=step)
            tracker.log_artifact_bytes(
                CHECKPOINT_NAME, storage.read_bytes(checkpoint_uri), artifact_path="checkpoint"
            )
            tracker.log_artifact_bytes(
                LAST_NAME, storage.read_bytes(last_uri), artifact_path="last"
            )
            tracker.log_dict(SUMMARY_NAME, summary)
    distributed.teardown(info)
    return TrainResult(checkpoint_uri, run_id, best_ade, step, result_metrics)


class _HorizonMeans:
    """Running per-horizon JEPA L1 over the micro-batches of one logging window."""

    def __init__(self, steps: int) -> None:
        self.sums = torch.zeros(steps, dtype=torch.float64)
        self.counts = torch.zeros(steps, dtype=torch.float64)

    def add(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        self.sums += sums.detach().double().cpu()
        self.counts += counts.detach().double().cpu()

    def means(self, prefix: str) -> dict[str, float]:
        """`{prefix}1..F` -> mean L1 per future step (steps with no valid sample are left out)."""
        return {
            f"{prefix}{k + 1}": float(s / c)
            for k, (s, c) in enumerate(zip(self.sums, self.counts, strict=True))
            if c > 0
        }


def _validate(
    model: AutoE2E, loader: DataLoader, device: torch.device, amp: torch.dtype | None
) -> dict[str, float]:
    collected = collect(model, loader, device, [], autocast_dtype=amp)
    metrics = {
        "val/ade_m": nanmean(collected.planners["model"]["ade"]),
        "val/fde_m": nanmean(collected.planners["model"]["fde"]),
        "val/cv_ade_m": nanmean(collected.planners["constant_velocity"]["ade"]),
        "val/ctrv_ade_m": nanmean(collected.planners["ctrv"]["ade"]),
    }
    for name, values in collected.jepa.items():
        metrics[f"val/jepa_l1_{name}"] = nanmean(values)
    return metrics
