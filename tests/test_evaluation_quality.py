"""Evaluation beyond the headline: ADE@h, test-time ablations, trained camera-free
baselines, world-model diagnostics (per-horizon null predictors, RankMe)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluation import StraightRoad, tiny_cfg
from test_report_html import _image_check

from autoe2e.config import ConfigError, EvalConfig
from autoe2e.evaluation import EvaluationError, evaluate, per_sample_errors
from autoe2e.evaluation.diagnostics import rankme
from autoe2e.model import AutoE2E, checkpoint_bytes

SPLIT = {"train": ["t1"], "val": ["v1"], "test": ["x1", "x2", "x3"]}
CAMERAS = ["front", "left"]


class NoisyRoad(StraightRoad):
    """StraightRoad with random images per sample, so camera ablations change something."""

    def __getitem__(self, i: int) -> dict[str, object]:
        item = super().__getitem__(i)
        g = torch.Generator().manual_seed(i)
        for key in ("images", "history_images", "future_images"):
            item[key] = torch.rand(item[key].shape, generator=g)
        return item


def test_ade_up_to_a_horizon_is_the_mean_of_the_steps_up_to_it() -> None:
    pred = torch.zeros(1, 10, 2)
    pred[0, :, 1] = torch.arange(1, 11).float()
    errors = per_sample_errors(pred, torch.zeros(1, 10, 2), torch.ones(1, 10, dtype=bool), {
        "l2_0.5s": 4
    })  # fmt: skip
    assert float(errors["l2_0.5s"][0]) == pytest.approx(5.0)
    assert float(errors["ade_0.5s"][0]) == pytest.approx(3.0)  # mean of 1..5


def test_rankme_counts_the_effective_dimensions() -> None:
    rng = np.random.default_rng(0)
    assert rankme(np.eye(32)) == pytest.approx(32.0, rel=1e-6)
    collapsed = np.outer(rng.normal(size=500), rng.normal(size=32))
    assert rankme(collapsed) < 1.5
    assert rankme(rng.normal(size=(2000, 32))) > 25


def test_camera_free_baselines_ignore_what_they_must_not_see() -> None:
    with pytest.raises(ConfigError, match="use_world_model=false"):
        dataclasses.replace(tiny_cfg(), input_ablation="no_camera").validate()
    torch.manual_seed(0)
    base = dataclasses.replace(tiny_cfg(), use_world_model=False)
    ds = NoisyRoad(base, ["a"], CAMERAS)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    other = dict(batch, images=torch.rand(batch["images"].shape))
    other_map = dict(
        batch, map_raster=torch.rand(batch["map_raster"].shape), map_valid=torch.ones(2)
    )
    for mode, changed, ignored in (
        ("no_camera", other, True),
        ("ego_only", other_map, True),
        ("none", other, False),
    ):
        model = AutoE2E(dataclasses.replace(base, input_ablation=mode).validate()).eval()
        with torch.no_grad():
            # a map/camera-sensitive head: make the planner's output depend on everything
            for p in model.planner.parameters():
                p.add_(0.05 * torch.randn_like(p))
            same = torch.equal(model(batch).trajectory, model(changed).trajectory)
        assert same is ignored, mode


def _checkpoint(tmp_path, name: str, cfg, split: dict[str, list[str]] = SPLIT) -> str:
    torch.manual_seed(1)
    model = AutoE2E(cfg)
    with torch.no_grad():  # non-zero history projection and head: every input matters
        for p in model.planner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / f"{name}.pt"
    path.write_bytes(checkpoint_bytes(model, {"split": split, "cameras": CAMERAS}))
    return str(path)


def test_report_has_ablations_trained_baselines_and_world_model_diagnostics(tmp_path) -> None:
    cfg = tiny_cfg()
    model = _checkpoint(tmp_path, "model", cfg)
    ego_only = _checkpoint(
        tmp_path, "ego", dataclasses.replace(cfg, use_world_model=False, input_ablation="ego_only")
    )
    report = evaluate(
        "fake://m",
        model,
        str(tmp_path / "eval"),
        EvalConfig(
            batch_size=4, horizons_s=[1.0, 2.0], baseline_checkpoints={"ego_only": ego_only}
        ),
        dataset_factory=lambda m, episodes, f: NoisyRoad(cfg, episodes, CAMERAS),
    )
    ablations = report["ablations"]
    assert set(ablations) == {"cameras_blanked", "cameras_shuffled", "history_zeroed"}
    assert report["key_metric"] == "ade"  # 3 s is not among these horizons
    for entry in ablations.values():
        assert entry["ratio_to_model"] is not None and entry["ratio_to_model"] != 1.0
    trained = report["trained_baselines"]["ego_only"]
    assert trained["ade_m"] > 0 and "ci95" in trained and trained["ratio_to_model"] > 0
    diagnostics = report["world_model_diagnostics"]
    per_horizon = diagnostics["per_horizon"]
    assert set(per_horizon["l1"]) == {"model", "copy_last_frame", "mean_target"}
    assert all(len(v) == cfg.future_steps for v in per_horizon["cosine"].values())
    assert 0 < diagnostics["rankme_predictions_over_dim"] <= 1
    assert diagnostics["std_per_dim_targets_mean"] > 0
    assert diagnostics["samples_used"] == report["num_samples"]
    # report.html: tables, plots and bird's-eye samples, every image loads in a browser
    page = Path(report["report_html_uri"])
    assert page == tmp_path / "eval" / "report.html"
    assert "Bird&#x27;s-eye samples" in page.read_text() or "Bird's-eye samples" in page.read_text()
    checked = _image_check(page, tmp_path)
    assert checked["total"] >= 4 and checked["failed"] == [] and checked["external"] == []


def test_a_trained_baseline_from_another_split_is_refused_unless_episodes_are_chosen(
    tmp_path, caplog
) -> None:
    cfg = tiny_cfg()
    model = _checkpoint(tmp_path, "model", cfg)
    off_cfg = dataclasses.replace(cfg, use_world_model=False)
    other = _checkpoint(
        tmp_path, "other", off_cfg, {"train": ["x1"], "val": ["v1"], "test": ["t1", "x2", "x3"]}
    )
    eval_cfg = EvalConfig(batch_size=4, horizons_s=[1.0], baseline_checkpoints={"off": other})
    factory = lambda m, episodes, f: NoisyRoad(cfg, episodes, CAMERAS)  # noqa: E731
    with pytest.raises(EvaluationError, match=r"baseline off .*other\.pt.*TrainConfig\.split_seed"):
        evaluate("fake://m", model, str(tmp_path / "a"), eval_cfg, dataset_factory=factory)
    # episodes chosen by the caller: the splits may differ; a leak into training is reported
    report = evaluate(
        "fake://m", model, str(tmp_path / "b"), eval_cfg, ["x1", "x2"], dataset_factory=factory
    )
    assert report["trained_baselines"]["off"]["ade_m"] > 0
    assert "baseline off" in caplog.text and "['x1']" in caplog.text
