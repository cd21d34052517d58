"""Training: episode split, masked losses, a tiny overfit, and the full `train` loop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_configs import tiny_model_config
from torch.utils.data import Dataset

from autoe2e.config import ConfigError, ModelConfig, TrainConfig
from autoe2e.model import AutoE2E, TargetEncoder, load_model
from autoe2e.splits import split_episodes
from autoe2e.training import TrainingError, train
from autoe2e.training.losses import jepa_l1, jepa_l1_per_step, time_weights, trajectory_l1
from autoe2e.training.metrics import MetricsWindow
from autoe2e.training.schedule import lr_factor, progress
from autoe2e.training.step import forward_backward, history_keep_mask

torch.set_num_threads(2)

CAMERAS = ["front", "left", "right", "rear"]


class FakeShards(Dataset):
    """ShardDataset stand-in: per-episode speed/yaw rate/acceleration, with the acceleration
    also written into the front camera's brightness (so cameras carry information)."""

    def __init__(self, cfg: ModelConfig, episodes: list[str] | None, per_episode: int = 6) -> None:
        self.cfg = cfg
        self.cameras = CAMERAS[:3]
        self._all = [f"ep{i}" for i in range(6)]
        self.episodes = self._all if episodes is None else list(episodes)
        self.per_episode = per_episode

    def episode_ids(self) -> list[str]:
        return list(self._all)

    def __len__(self) -> int:
        return len(self.episodes) * self.per_episode

    def __getitem__(self, i: int) -> dict[str, object]:
        cfg = self.cfg
        ep = self.episodes[i // self.per_episode]
        k = self._all.index(ep)
        g = torch.Generator().manual_seed(i)
        speed, yaw_rate, accel = 4.0 + k, 0.02 * (k - 3), 0.5 * (k % 3 - 1)
        v, h, w = len(self.cameras), cfg.image_height, cfg.image_width
        images = torch.rand(v, 3, h, w, generator=g) * 0.2
        images[0] += 0.4 + 0.3 * accel
        ego = torch.zeros(cfg.ego_history_steps, 4)
        ego[:, 0], ego[:, 1], ego[:, 2] = speed, accel, yaw_rate
        t = torch.arange(1, cfg.trajectory_steps + 1) * 0.1
        x = speed * t + 0.5 * accel * t**2
        y = 0.5 * speed * yaw_rate * t**2
        valid = torch.ones(cfg.trajectory_steps, dtype=torch.bool)
        valid[-(i % 3) :] = i % 3 == 0  # some samples lose their last steps
        return {
            "images": images,
            "camera_index": torch.arange(v),
            "history_images": torch.rand(cfg.history_len, v, 3, h, w, generator=g),
            "history_valid": torch.tensor([i % 2 == 0] + [True] * (cfg.history_len - 1)),
            "future_images": torch.rand(cfg.future_steps, v, 3, h, w, generator=g),
            "future_valid": torch.tensor([True] * (cfg.future_steps - 1) + [i % 2 == 1]),
            "map_raster": torch.zeros(3, cfg.map_raster_size, cfg.map_raster_size),
            "map_valid": torch.tensor(0.0),
            "ego_history": ego,
            "future_trajectory": torch.stack([x, y], dim=-1),
            "trajectory_valid": valid,
            "episode_id": ep,
            "timestamp_s": float(i),
        }


def factory_for(cfg: ModelConfig):
    return lambda manifest, episodes, frames: FakeShards(cfg, episodes)


def test_split_is_deterministic_disjoint_and_complete() -> None:
    ids = [f"episode-{i:03d}" for i in range(20)]
    split = split_episodes(ids, 0.2, 0.2, seed=3)
    assert split == split_episodes(list(reversed(ids)), 0.2, 0.2, seed=3)
    assert sorted(split["train"] + split["val"] + split["test"]) == ids
    assert len(split["test"]) == 4 and len(split["val"]) == 4 and len(split["train"]) == 12
    assert split != split_episodes(ids, 0.2, 0.2, seed=4)
    # With only 3 episodes every part still gets one.
    small = split_episodes(["a", "b", "c"], 0.1, 0.1)
    assert all(len(v) == 1 for v in small.values())
    with pytest.raises(ValueError, match="at least 3 episodes"):
        split_episodes(["a", "b"], 0.2, 0.2)
    with pytest.raises(ValueError, match="unique"):
        split_episodes(["a", "a", "b"], 0.2, 0.2)


def test_paired_history_loss_is_the_mean_of_both_plans_of_every_sample() -> None:
    """With `history_loss="paired"` every sample is planned with and without its history and
    the trajectory term is the mean of the two losses; the dropout draw is not used."""
    torch.manual_seed(0)
    model = AutoE2E(tiny_model_config())
    torch.nn.init.normal_(model.planner.history_proj.weight)  # give the history an influence
    torch.nn.init.normal_(model.planner.head[1].weight, std=0.1)
    model.eval()  # fixed BatchNorm statistics: the passes below differ only by the history
    shards = FakeShards(model.cfg, None)
    batch = torch.utils.data.default_collate([shards[i] for i in range(0, 36, 4)])
    window = MetricsWindow(model.cfg.future_steps)
    train_cfg = TrainConfig(history_loss="paired", history_dropout=0.5, jepa_weight=0.0)
    terms = forward_backward(model, model, batch, train_cfg, None, window)

    def l1(plan: torch.Tensor) -> float:
        target, valid = batch["future_trajectory"], batch["trajectory_valid"]
        return float(trajectory_l1(plan, target, valid))

    with torch.no_grad():
        full, none = l1(model(batch).trajectory), l1(model(batch, history_off=True).trajectory)
    assert full != pytest.approx(none)
    assert terms["traj_l1"] == pytest.approx(0.5 * (full + none), rel=1e-5)
    # the same batch under dropout plans each sample once, half of them without history
    dropout = forward_backward(model, model, batch, TrainConfig(jepa_weight=0.0), None, window)
    assert dropout["traj_l1"] != pytest.approx(terms["traj_l1"])


def test_history_dropout_mask_is_a_function_of_the_sample_and_epoch() -> None:
    """Not of the global RNG nor of the batch layout: DDP, workers and resume draw the same."""
    cfg = TrainConfig(history_dropout=0.5, seed=3)
    batch = {
        "episode_id": [f"ep{i % 7}" for i in range(2048)],
        "timestamp_s": torch.arange(2048) * 0.1,
    }
    torch.manual_seed(0)
    first = history_keep_mask(batch, cfg, epoch=1)
    torch.manual_seed(1)  # the global RNG does not matter
    assert torch.equal(first, history_keep_mask(batch, cfg, epoch=1))
    half = {k: v[1024:] for k, v in batch.items()}  # the same samples in another batch
    assert torch.equal(first[1024:], history_keep_mask(half, cfg, epoch=1))
    assert not torch.equal(first, history_keep_mask(batch, cfg, epoch=2))
    assert not torch.equal(first, history_keep_mask(batch, TrainConfig(history_dropout=0.5), 1))
    assert first.dtype == torch.bool and 0.45 < float(first.float().mean()) < 0.55
    assert history_keep_mask(batch, TrainConfig(history_dropout=0.0), 1) is None


def test_masked_losses_ignore_invalid_steps() -> None:
    pred = torch.zeros(1, 4, 2)
    target = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [100.0, 0.0], [100.0, 0.0]]])
    valid = torch.tensor([[True, True, False, False]])
    assert float(trajectory_l1(pred, target, valid)) == pytest.approx(1.0)
    assert float(trajectory_l1(pred, target, torch.zeros_like(valid))) == 0.0
    jp = torch.zeros(1, 2, 3)
    jt = torch.stack([torch.full((3,), 2.0), torch.full((3,), 50.0)])[None]
    assert float(jepa_l1(jp, jt, torch.tensor([[True, False]]))) == pytest.approx(2.0)


def test_trajectory_time_weighting_maths() -> None:
    assert torch.equal(time_weights(4, "none"), torch.ones(4))
    assert torch.allclose(time_weights(4, "linear"), torch.tensor([1.0, 0.75, 0.5, 0.25]))
    pred = torch.zeros(1, 4, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    assert float(trajectory_l1(pred, target, valid)) == pytest.approx(2.5)
    # (1*1 + 0.75*2 + 0.5*3 + 0.25*4) / (1 + 0.75 + 0.5 + 0.25) = 5 / 2.5
    assert float(trajectory_l1(pred, target, valid, "linear")) == pytest.approx(2.0)
    # Masked steps drop out of numerator and denominator: only the last step (weight 1/4).
    last = torch.tensor([[False, False, False, True]])
    assert float(trajectory_l1(pred, target, last, "linear")) == pytest.approx(4.0)
    assert float(trajectory_l1(pred, target, torch.zeros_like(valid), "linear")) == 0.0
    with pytest.raises(ValueError, match="'cubic'"):
        trajectory_l1(pred, target, valid, "cubic")
    with pytest.raises(ConfigError, match="trajectory_time_weighting"):
        TrainConfig(trajectory_time_weighting="cubic").validate()


def test_per_horizon_jepa_l1() -> None:
    pred = torch.zeros(2, 3, 4)
    target = torch.tensor([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])[:, :, None].expand(2, 3, 4)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    sums, counts = jepa_l1_per_step(pred, target, valid)
    assert torch.equal(counts, torch.tensor([2.0, 1.0, 0.0]))
    assert torch.equal(sums, torch.tensor([6.0, 2.0, 0.0]))
    assert float(jepa_l1(pred, target, valid)) == pytest.approx(8.0 / 3.0)


def test_schedule_warms_up_then_decays_with_time_or_steps() -> None:
    assert lr_factor(0, 10, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 10, 0.0) == pytest.approx(1.0)
    assert lr_factor(50, 10, 1.0) == pytest.approx(0.05)
    assert progress(5, 10, elapsed_s=90, time_budget_s=100) == pytest.approx(0.9)
    assert progress(5, 10, elapsed_s=90, time_budget_s=0) == pytest.approx(0.5)


def test_overfits_a_fixed_batch() -> None:
    torch.manual_seed(0)
    cfg = tiny_model_config()
    model = AutoE2E(cfg)
    data = FakeShards(cfg, None)
    batch = torch.utils.data.default_collate([data[i] for i in range(0, 36, 4)])
    # Make the targets something the kinematic prior cannot produce on its own.
    batch["future_trajectory"][..., 1] += torch.linspace(0, 3, cfg.trajectory_steps)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(batch)
        loss = trajectory_l1(out.trajectory, batch["future_trajectory"], batch["trajectory_valid"])
        jepa = jepa_l1(
            out.jepa_prediction, model.jepa_targets(batch["future_images"]), batch["future_valid"]
        )
        (loss + 0.2 * jepa).backward()
        opt.step()
        opt.zero_grad()
        model.target.update(model.backbone, 0.99)
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.4 * losses[0], losses


def test_train_writes_best_checkpoint_and_updates_ema_per_optimizer_step(
    tmp_path, monkeypatch
) -> None:
    calls = []
    original = TargetEncoder.update

    def counting_update(self, online, momentum):
        calls.append(momentum)
        return original(self, online, momentum)

    monkeypatch.setattr(TargetEncoder, "update", counting_update)
    cfg = tiny_model_config()
    tcfg = TrainConfig(
        epochs=2,
        batch_size=4,
        grad_accum_steps=2,
        warmup_steps=2,
        log_every_steps=1,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    result = train(
        "fake://manifest", str(tmp_path / "out"), cfg, tcfg, dataset_factory=factory_for(cfg)
    )
    # 4 train episodes x 6 samples = 24 -> 6 micro-batches -> 3 optimizer steps per epoch.
    split = split_episodes([f"ep{i}" for i in range(6)], 0.2, 0.2, 0)
    micro = math.ceil(len(split["train"]) * 6 / 4)
    assert result.steps == 2 * math.ceil(micro / 2)
    assert len(calls) == result.steps
    assert calls[0] == pytest.approx(0.996) and calls[-1] > calls[0]
    assert math.isfinite(result.best_val_ade_m)
    assert result.run_id is None
    model, extra = load_model((tmp_path / "out" / "best.pt").read_bytes())
    assert extra["split"] == split
    assert extra["cameras"] == CAMERAS[:3]
    assert extra["val_ade_m"] == pytest.approx(result.best_val_ade_m)
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["checkpoint_uri"] == result.checkpoint_uri
    assert result.metrics["best_val/ade_m"] == pytest.approx(result.best_val_ade_m)
    per_horizon = [result.metrics[f"train/jepa_l1_h{k}"] for k in range(1, cfg.future_steps + 1)]
    assert all(math.isfinite(v) and v > 0 for v in per_horizon)
    assert f"train/jepa_l1_h{cfg.future_steps + 1}" not in result.metrics


def test_time_budget_and_max_steps_stop_training(tmp_path) -> None:
    cfg = tiny_model_config(use_world_model=False)
    tcfg = TrainConfig(
        epochs=50,
        batch_size=4,
        max_steps=2,
        val_fraction=0.2,
        test_fraction=0.2,
        trajectory_time_weighting="linear",
    )
    result = train("fake://m", str(tmp_path / "a"), cfg, tcfg, dataset_factory=factory_for(cfg))
    assert result.steps == 2
    tcfg = TrainConfig(epochs=50, batch_size=4, time_budget_s=0.01)
    result = train("fake://m", str(tmp_path / "b"), cfg, tcfg, dataset_factory=factory_for(cfg))
    assert result.steps == 1


def test_the_split_follows_split_seed_not_the_training_seed(tmp_path) -> None:
    """Another training seed must be scored on the same test episodes (champion vs challenger)."""
    cfg = tiny_model_config(use_world_model=False)
    ids = [f"ep{i}" for i in range(6)]
    other = next(
        s
        for s in range(1, 50)
        if split_episodes(ids, 0.2, 0.2, s) != split_episodes(ids, 0.2, 0.2, 0)
    )

    def split_of(name: str, **fields) -> dict:
        tcfg = TrainConfig(
            epochs=1, batch_size=4, max_steps=1, val_fraction=0.2, test_fraction=0.2, **fields
        )
        train("fake://m", str(tmp_path / name), cfg, tcfg, dataset_factory=factory_for(cfg))
        return load_model((tmp_path / name / "best.pt").read_bytes())[1]["split"]

    assert split_of("a", seed=3) == split_of("b", seed=4) == split_episodes(ids, 0.2, 0.2, 0)
    assert split_of("c", seed=3, split_seed=other) == split_episodes(ids, 0.2, 0.2, other)


def test_too_many_cameras_for_the_model_is_a_config_error(tmp_path) -> None:
    cfg = tiny_model_config(max_cameras=2)
    with pytest.raises(ConfigError, match="max_cameras=2.*3 cameras"):
        train("fake://m", str(tmp_path), cfg, TrainConfig(), dataset_factory=factory_for(cfg))


def test_frozen_target_never_changes_while_the_backbone_trains(tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(TargetEncoder, "update", lambda self, online, m: calls.append(m))
    cfg = tiny_model_config()
    tcfg = TrainConfig(epochs=1, batch_size=4, warmup_steps=1, jepa_target="frozen", seed=3)
    result = train(
        "fake://manifest", str(tmp_path / "out"), cfg, tcfg, dataset_factory=factory_for(cfg)
    )
    assert result.steps > 0 and calls == []
    torch.manual_seed(tcfg.seed)  # the initial weights train() started from
    initial = AutoE2E(cfg).backbone.state_dict()
    trained, _ = load_model((tmp_path / "out" / "best.pt").read_bytes())
    target = trained.target.module.state_dict()
    for name, value in initial.items():
        torch.testing.assert_close(target[name], value, msg=f"target {name} changed")
    moved = [
        n
        for n, v in trained.backbone.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, initial[n])
    ]
    assert moved, "the online backbone did not train"


class PoisonedShards(FakeShards):
    """FakeShards whose future trajectories are NaN for the episodes in `poisoned`."""

    def __init__(self, cfg: ModelConfig, episodes: list[str] | None, poisoned: set[str]) -> None:
        super().__init__(cfg, episodes)
        self.poisoned = poisoned

    def __getitem__(self, i: int) -> dict[str, object]:
        item = super().__getitem__(i)
        if item["episode_id"] in self.poisoned:
            item["future_trajectory"] = torch.full_like(item["future_trajectory"], float("nan"))
        return item


def test_non_finite_steps_are_skipped_and_counted(tmp_path) -> None:
    cfg = tiny_model_config(use_world_model=False)
    tcfg = TrainConfig(
        epochs=2, batch_size=2, warmup_steps=1, log_every_steps=1, seed=1, max_nonfinite_steps=50
    )
    split = split_episodes([f"ep{i}" for i in range(6)], 0.2, 0.2, 1)
    bad = {split["train"][0]}  # one training episode carries NaN targets
    result = train(
        "fake://m",
        str(tmp_path),
        cfg,
        tcfg,
        dataset_factory=lambda m, episodes, f: PoisonedShards(cfg, episodes, bad),
    )
    assert result.metrics["train/skipped_steps"] > 0
    assert result.steps > 0
    trained, _ = load_model((tmp_path / "last.pt").read_bytes())
    assert all(torch.isfinite(p).all() for p in trained.parameters())


def test_training_that_only_diverges_aborts_naming_the_step(tmp_path) -> None:
    cfg = tiny_model_config(use_world_model=False)
    tcfg = TrainConfig(epochs=2, batch_size=2, max_nonfinite_steps=2)
    everything = {f"ep{i}" for i in range(6)}
    with pytest.raises(TrainingError, match=r"2 optimizer steps in a row.*step 0.*none yet"):
        train(
            "fake://m",
            str(tmp_path),
            cfg,
            tcfg,
            dataset_factory=lambda m, episodes, f: PoisonedShards(cfg, episodes, everything),
        )
