"""Evaluation: metric conventions on hand-made trajectories, baselines, gate, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_configs import tiny_model_config

from autoe2e.config import EvalConfig, ModelConfig
from autoe2e.evaluation import (
    EvaluationError,
    constant_turn_rate_velocity,
    constant_velocity,
    evaluate,
    per_sample_errors,
)
from autoe2e.evaluation.metrics import horizon_index
from autoe2e.evaluation.report import bootstrap_ci, gate
from autoe2e.model import AutoE2E, checkpoint_bytes

torch.set_num_threads(2)


def ego_with(speed: float, yaw_rate: float = 0.0, b: int = 1) -> torch.Tensor:
    ego = torch.zeros(b, 8, 4)
    ego[:, :, 0] = speed
    ego[:, :, 2] = yaw_rate
    return ego


def test_constant_velocity_is_exact_on_a_straight_constant_speed_path() -> None:
    t = torch.arange(1, 65) * 0.1
    truth = torch.stack([12.0 * t, torch.zeros_like(t)], dim=-1)[None]
    pred = constant_velocity(ego_with(12.0), 64, 0.1)
    errors = per_sample_errors(pred, truth, torch.ones(1, 64, dtype=torch.bool), {"l2_3s": 29})
    assert float(errors["ade"][0]) == pytest.approx(0.0, abs=1e-5)
    assert float(errors["fde"][0]) == pytest.approx(0.0, abs=1e-5)
    # The same baseline is wrong on a circle; CTRV is exact there.
    radius, speed = 50.0, 10.0
    w = speed / radius
    circle = torch.stack([radius * torch.sin(w * t), radius * (1 - torch.cos(w * t))], dim=-1)
    ctrv = constant_turn_rate_velocity(ego_with(speed, w), 64, 0.1)
    assert torch.allclose(ctrv.float(), circle[None], atol=1e-4)
    cv_err = per_sample_errors(
        pred * 10 / 12, circle[None], torch.ones(1, 64, dtype=torch.bool), {}
    )
    assert float(cv_err["fde"][0]) > 10.0


def test_ade_fde_and_horizons_follow_the_named_convention() -> None:
    truth = torch.zeros(2, 10, 2)
    pred = torch.zeros(2, 10, 2)
    pred[0, :, 1] = torch.arange(1, 11).float()  # error grows 1..10 m
    pred[1, :, 0] = 3.0
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1, 4:] = False
    idx = {"l2_0.5s": horizon_index(0.5, 0.1, 10)}
    errors = per_sample_errors(pred, truth, valid, idx)
    assert float(errors["ade"][0]) == pytest.approx(5.5)  # mean of 1..10
    assert float(errors["fde"][0]) == pytest.approx(10.0)
    assert float(errors["l2_0.5s"][0]) == pytest.approx(5.0)  # error AT 0.5 s, not mean up to
    assert float(errors["ade"][1]) == pytest.approx(3.0)
    assert torch.isnan(errors["fde"][1])  # last step missing: excluded from FDE
    assert torch.isnan(errors["l2_0.5s"][1])
    with pytest.raises(ValueError, match="not on the trajectory grid"):
        horizon_index(0.25, 0.1, 10)
    with pytest.raises(ValueError, match="not on the trajectory grid"):
        horizon_index(7.0, 0.1, 64)


def test_motion_baselines_stay_on_the_device_of_their_input() -> None:
    """On a GPU, evaluation feeds them CUDA ego histories; their step times once lived on the
    CPU and the first validation pass of every CUDA training run failed on the mixed devices
    (seen on an H200). The meta device stands in for CUDA on a CPU-only machine."""
    ego = ego_with(12.0, 0.1).to("meta")
    assert constant_velocity(ego, 64, 0.1).device.type == "meta"
    assert constant_turn_rate_velocity(ego, 64, 0.1).device.type == "meta"


def test_gate_needs_limits_and_beating_constant_velocity_with_the_ci() -> None:
    cfg = EvalConfig(max_ade_m=2.0, max_fde_m=4.0)
    good = {"model": {"ade_m": 0.5, "fde_m": 1.0}}
    better = {"model_minus_cv_ade_m": -0.3, "model_minus_cv_ade_ci95": [-0.5, -0.1]}
    assert gate(good, better, cfg)["passed"]
    # better on average, but the interval reaches 0: not shown to beat constant velocity
    unsure = {"model_minus_cv_ade_m": -0.3, "model_minus_cv_ade_ci95": [-0.7, 0.05]}
    result = gate(good, unsure, cfg)
    assert not result["passed"]
    assert result["reasons"][2].startswith("FAIL: model - constant velocity ADE -0.300 m")
    # a margin: must be at least 0.2 m better at the interval's upper end
    assert not gate(good, better, EvalConfig(cv_margin_m=0.2))["passed"]
    # one episode: no interval, the mean decides and the text says so
    single = {"model_minus_cv_ade_m": -0.3, "model_minus_cv_ade_ci95": None}
    assert "no CI" in gate(good, single, cfg)["reasons"][2]
    assert gate(good, single, cfg)["passed"]
    far = {"model": {"ade_m": 2.5, "fde_m": 5.0}}
    assert [r[:4] for r in gate(far, better, cfg)["reasons"]] == ["FAIL", "FAIL", "PASS"]


def test_bootstrap_ci_resamples_episodes() -> None:
    values = np.array([1.0, 1.0, 3.0, 3.0, 5.0, np.nan])
    episodes = np.array(["a", "a", "b", "b", "c", "c"])
    lo, hi = bootstrap_ci(values, episodes)
    assert 1.0 <= lo <= values[:5].mean() <= hi <= 5.0
    assert bootstrap_ci(values[:2], episodes[:2]) is None  # one episode: no interval


def tiny_cfg() -> ModelConfig:
    return tiny_model_config(trajectory_steps=20)


class StraightRoad(torch.utils.data.Dataset):
    """Every episode drives straight at its own constant speed: CV is exact, CTRV too."""

    def __init__(self, cfg: ModelConfig, episodes: list[str], cameras: list[str]) -> None:
        self.cfg, self.episodes, self.cameras = cfg, episodes, cameras

    def __len__(self) -> int:
        return 3 * len(self.episodes)

    def __getitem__(self, i: int) -> dict[str, object]:
        cfg, v = self.cfg, len(self.cameras)
        ep = self.episodes[i // 3]
        speed = 5.0 + i // 3
        ego = torch.zeros(cfg.ego_history_steps, 4)
        ego[:, 0] = speed
        t = torch.arange(1, cfg.trajectory_steps + 1) * 0.1
        img = (cfg.image_height, cfg.image_width)
        return {
            "images": torch.full((v, 3, *img), 0.5),
            "camera_index": torch.arange(v),
            "history_images": torch.full((cfg.history_len, v, 3, *img), 0.5),
            "history_valid": torch.ones(cfg.history_len, dtype=torch.bool),
            "future_images": torch.full((cfg.future_steps, v, 3, *img), 0.5),
            "future_valid": torch.ones(cfg.future_steps, dtype=torch.bool),
            "map_raster": torch.zeros(3, cfg.map_raster_size, cfg.map_raster_size),
            "map_valid": torch.tensor(0.0),
            "ego_history": ego,
            "future_trajectory": torch.stack([speed * t, torch.zeros_like(t)], dim=-1),
            "trajectory_valid": torch.ones(cfg.trajectory_steps, dtype=torch.bool),
            "episode_id": ep,
            "timestamp_s": float(i),
        }


def test_evaluate_writes_report_on_the_test_split(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = AutoE2E(cfg)
    with torch.no_grad():  # a model that deliberately drifts left: worse than CV
        model.planner.head[1].bias[cfg.trajectory_basis_size :] = 1.0
    split = {"train": ["t1", "t2"], "val": ["v1"], "test": ["x1", "x2", "x3"]}
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(
        checkpoint_bytes(model, {"split": split, "cameras": ["front", "left"], "step": 5})
    )
    seen = {}

    def factory(manifest, episodes, frames):
        seen["episodes"], seen["frames"] = episodes, frames
        return StraightRoad(cfg, episodes, ["front", "left"])

    report = evaluate(
        "fake://m",
        str(ckpt),
        str(tmp_path / "eval"),
        EvalConfig(batch_size=4, horizons_s=[1.0, 2.0]),
        dataset_factory=factory,
    )
    assert seen == {"episodes": ["x1", "x2", "x3"], "frames": True}
    on_disk = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert on_disk["gate"] == report["gate"]
    assert report["num_samples"] == 9 and report["num_episodes"] == 3
    assert report["held_out"] is True
    assert "not averaged up to" in report["convention"]
    cv = report["planner"]["baselines"]["constant_velocity"]
    assert cv["ade_m"] == pytest.approx(0.0, abs=1e-5)
    assert report["planner"]["baselines"]["ctrv"]["fde_m"] == pytest.approx(0.0, abs=1e-5)
    model_entry = report["planner"]["model"]
    assert model_entry["ade_m"] > 0.1 and set(model_entry) >= {"l2_1s_m", "l2_2s_m", "ci95"}
    assert report["gate"]["passed"] is False
    assert any(
        r.startswith("FAIL: model - constant velocity ADE") for r in report["gate"]["reasons"]
    )
    jepa = report["world_model"]["jepa_l1"]
    # Identical frames: copying the last frame is a perfect predictor; zeros are not
    # (<= 0.8 for layer-normed targets, lower here because flat images give low-variance maps).
    assert jepa["copy_last_frame"] == pytest.approx(0.0, abs=1e-5)
    assert 0.05 < jepa["zeros"] <= 1.0
    assert report["world_model"]["beats_copy_last_frame"] is False

    with pytest.raises(EvaluationError, match="camera vocabulary"):
        evaluate(
            "fake://m",
            str(ckpt),
            str(tmp_path / "e2"),
            EvalConfig(),
            dataset_factory=lambda m, e, f: StraightRoad(cfg, e, ["front", "rear"]),
        )
