"""How the quality benchmark turns evaluation reports into its targets when the model is trained
with several seeds: Q1-Q4 from the seed-mean ADE@3s, Q5-Q7 as means of each model's own values,
every target with its per-seed values and the number of runs that met it; and how `--jobs`
runs trainings side by side (the same weights as one at a time, valid work kept on a failure)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from episode_factory import TINY_PREPARE, write_episode
from processes import child_pids, kill_once_ready, still_running_after
from tiny_configs import shard_model_config

from autoe2e import pipeline
from autoe2e.config import TrainConfig
from autoe2e.model.checkpoint import read_checkpoint
from autoe2e.training import train
from benchmarks import quality  # importable by name, so --jobs can run it in child processes


def _entry(ade: float, **extra: Any) -> dict[str, Any]:
    return {
        "ade_3s_m": ade,
        "ci95": {"ade_3s_m": [ade - 0.1, ade + 0.1]},
        "minus_model_ade_3s_m": 0.0,
        "minus_model_ade_3s_ci95": [-0.01, 0.01],
        **extra,
    }


def _report(
    model: float,
    blanked: float,
    jepa_l1: list[float],
    copy_l1: list[float],
    rankme: float | None,
    trained: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The fields of `autoe2e.evaluation.evaluate`'s report that the benchmark reads."""
    return {
        "planner": {
            "model": _entry(model),
            "baselines": {"constant_velocity": _entry(2.0), "ctrv": _entry(1.8)},
        },
        "trained_baselines": {name: _entry(ade) for name, ade in (trained or {}).items()},
        "ablations": {
            "cameras_blanked": _entry(blanked, ratio_to_model=blanked / model),
            "history_zeroed": _entry(model + 0.01),
        },
        "world_model_diagnostics": {
            "per_horizon": {"l1": {"model": jepa_l1, "copy_last_frame": copy_l1}},
            "rankme_predictions_over_dim": rankme,
        },
        "num_episodes": 30,
        "num_samples": 3390,
    }


def _two_seeds(
    second_rankme: float | None = 0.2, by_scenario: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    trained = {
        "world_model_off": 0.50,
        "ego_only": 0.80,
        "no_camera": 0.70,
        "world_model_off_seed107": 0.40,
        "model_seed107": 0.44,
    }
    first = _report(0.40, 2.0, [0.9, 0.8], [1.0, 1.0], 0.4, trained)
    if by_scenario is not None:
        first["by_scenario"] = by_scenario
    second = _report(0.44, 0.88, [0.5, 1.1], [1.0, 1.0], second_rankme)
    return quality._summarise(first, 7, 60.0, {}, 1000, {7: first, 107: second})


def test_targets_are_scored_on_every_training_seed() -> None:
    result = _two_seeds()
    assert result["train_seeds"] == [7, 107]
    # Q4: ratio of the seed means (0.42 / 0.45), not a mean of the per-seed ratios (0.8, 1.1)
    assert result["Q4"]["value"] == pytest.approx(0.42 / 0.45)
    assert result["Q4"]["per_train_seed"] == pytest.approx([0.8, 1.1])
    assert result["Q4"]["met"] and result["Q4"]["met_runs"] == 1
    # ... and its spread: each on-run (0.40, 0.44) against each off-run (0.50, 0.40)
    pairings = result["Q4"]["pairings"]
    assert (pairings["min"], pairings["max"]) == pytest.approx((0.8, 1.1))
    assert (pairings["met"], pairings["of"]) == (2, 4)  # 0.8 and 0.88; not 1.0 or 1.1
    # Q1-Q3 divide the mean model ADE by baselines trained (or computed) once
    assert result["Q1"]["value"] == pytest.approx(0.42 / 2.0)
    assert result["Q2"]["value"] == pytest.approx(0.42 / 0.80)
    assert result["Q3"]["value"] == pytest.approx(0.42 / 0.70)
    # Q5: the worst horizon of the per-horizon means (0.7, 0.95), although seed 107 alone
    # loses to copy-last at the second horizon
    assert result["Q5"]["per_horizon"] == pytest.approx([0.7, 0.95])
    assert result["Q5"]["value"] == pytest.approx(0.95) and result["Q5"]["met"]
    assert result["Q5"]["per_train_seed"] == pytest.approx([0.9, 1.1])
    assert result["Q5"]["met_runs"] == 1
    # Q6 / Q7: means of each model's own ablation and diagnostics
    assert result["Q6"]["value"] == pytest.approx((5.0 + 2.0) / 2)
    assert result["Q7"]["value"] == pytest.approx(0.3) and result["Q7"]["met"]
    assert result["Q7"]["met_runs"] == 1


def test_the_table_names_each_seed_and_how_many_runs_met(capsys: pytest.CaptureFixture) -> None:
    quality._print(_two_seeds())
    text = capsys.readouterr().out
    assert (
        "seed 107: model 0.440 m (history zeroed 0.450), world model off 0.400 m; Q1 0.220" in text
    )
    assert "Q4 world model on / off ADE@3s" in text and "met in 1 of 2 training runs" in text
    assert "any on-run / off-run pairing 0.800-1.100, met in 2 of 4" in text


def test_q4_is_broken_down_by_scenario_on_the_seed_means(capsys: pytest.CaptureFixture) -> None:
    by_scenario = [
        {"scenario": "crossing_vehicle", "samples": 90, "episodes": 3, "model_ade_3s_m": 0.2,
         "model_seed107_ade_3s_m": 0.3, "world_model_off_ade_3s_m": 0.4,
         "world_model_off_seed107_ade_3s_m": 0.6},
        # a replicate without a value here: no mean of the rest
        {"scenario": "obstacle", "samples": 10, "episodes": 1, "model_ade_3s_m": 0.5,
         "world_model_off_ade_3s_m": 0.4, "world_model_off_seed107_ade_3s_m": 0.4},
    ]  # fmt: skip
    result = _two_seeds(by_scenario=by_scenario)
    crossing, obstacle = result["q4_by_scenario"]
    assert crossing["scenario"] == "crossing_vehicle" and crossing["episodes"] == 3
    assert crossing["model_ade_3s_m"] == pytest.approx(0.25)
    assert crossing["world_model_off_ade_3s_m"] == pytest.approx(0.5)
    assert crossing["ratio"] == pytest.approx(0.5)
    assert obstacle["model_ade_3s_m"] is None and obstacle["ratio"] is None
    quality._print(result)
    text = capsys.readouterr().out
    assert "Q4 in crossing_vehicle" in text
    assert "on 0.250 m / off 0.500 m = 0.500 (3 episodes)" in text
    assert "Q4 in obstacle" not in text


def test_a_run_without_a_value_leaves_the_target_unmet() -> None:
    result = _two_seeds(second_rankme=None)
    assert result["Q7"]["value"] is None and not result["Q7"]["met"]
    assert result["Q7"]["per_train_seed"] == [0.4, None]


def test_one_training_seed_reads_the_single_report() -> None:
    trained = {"world_model_off": 0.5, "ego_only": 0.8, "no_camera": 0.7}
    report = _report(0.45, 0.9, [0.9], [1.0], 0.35, trained)
    result = quality._summarise(report, 7, 60.0, {}, 1000)
    assert result["Q4"]["value"] == pytest.approx(0.9) and result["Q4"]["met_runs"] == 1
    assert result["Q6"]["value"] == pytest.approx(2.0)
    assert result["per_train_seed"][0]["train_seed"] == 7


def test_input_hashes_name_the_kind_of_file_that_changed(tmp_path: Path) -> None:
    for episode in ("ep0007_0000", "ep0007_0001"):
        (tmp_path / episode / "cameras").mkdir(parents=True)
        (tmp_path / episode / "cameras" / "front.mp4").write_bytes(b"video " + episode.encode())
        (tmp_path / episode / "ego.parquet").write_bytes(b"ego " + episode.encode())
    before = quality._inputs_by_file_name(tmp_path)
    assert sorted(before) == ["ego.parquet", "front.mp4"]
    # the benchmark's completion marker is not an input
    (tmp_path / ".complete-seed-7-n-2").write_text("ok\n")
    assert quality._inputs_by_file_name(tmp_path) == before
    (tmp_path / "ep0007_0001" / "ego.parquet").write_bytes(b"ego changed")
    after = quality._inputs_by_file_name(tmp_path)
    assert after["front.mp4"] == before["front.mp4"]
    assert after["ego.parquet"] != before["ego.parquet"]


@pytest.mark.parametrize("steps", [4, 10, 1000])
def test_a_stopped_benchmark_training_leaves_a_checkpoint_at_every_validation(steps: int) -> None:
    """Under --keep an interrupted training resumes from its newest checkpoint: one must exist at
    every validation point, or a session end throws the replicate's training away."""
    cfg = quality.train_config(7, steps)
    assert cfg.checkpoint_every_steps > 0
    assert cfg.val_every_steps % cfg.checkpoint_every_steps == 0
    assert (cfg.seed, cfg.split_seed, cfg.max_steps) == (7, 7, steps)


def test_model_and_train_overrides_are_parsed_checked_and_kept_apart() -> None:
    """--model-set / --train-set change the ModelConfig / TrainConfig every variant trains with;
    a field the benchmark sets itself, an unknown field or a value the config refuses is named,
    and each override set trains in its own folder of a --keep world (resuming another
    config's checkpoint fails)."""
    model = quality.parse_model_overrides(
        ['world_model_frames="pooled"', "world_model_stage=-1", "target_grid=2"]
    )
    assert model == {"world_model_frames": "pooled", "world_model_stage": -1, "target_grid": 2}
    config = quality.model_config(model)  # on top of the benchmark's own model settings
    assert (config.world_model_frames, config.target_grid, config.target_layer) == (
        "pooled",
        2,
        quality.BENCHMARK_MODEL["target_layer"],
    )
    with pytest.raises(ValueError, match="use_world_model"):
        quality.parse_model_overrides(["use_world_model=false"])  # what Q4 compares
    with pytest.raises(ValueError, match="target_gird=4"):
        quality.parse_model_overrides(["target_gird=4"])  # misspelt field
    with pytest.raises(ValueError, match="world_model_frames"):
        quality.parse_model_overrides(['world_model_frames="pixels"'])  # refused by ModelConfig
    assert quality.runs_folder({}) == "runs"  # the benchmark as it is
    assert quality.runs_folder(dict(quality.BENCHMARK_MODEL)) == "runs"  # the same, spelt out
    folders = {quality.runs_folder(m) for m in ({}, model, {"target_grid": 2})}
    assert len(folders) == 3
    assert quality.runs_folder(model) == quality.runs_folder(dict(reversed(model.items())))
    training = quality.parse_train_overrides(['trajectory_time_weighting="none"'])
    assert training == {"trajectory_time_weighting": "none"}
    assert quality.runs_folder(model, training) not in folders
    assert quality.runs_folder({}, training) not in folders
    with pytest.raises(ValueError, match="--steps"):
        quality.parse_train_overrides(["max_steps=10"])  # the budget every variant shares
    with pytest.raises(ValueError, match="trajectory_time_weighting"):
        quality.parse_train_overrides(['trajectory_time_weighting="cubic"'])


def test_the_benchmark_trains_on_its_own_world_model_and_training_settings() -> None:
    """Without options the benchmark is the side-road world with the later pull-out, the world
    model that reads cells of the stride-8 map, and the near-term-weighted trajectory loss with
    every sample planned with and without the history, for every variant."""
    world = quality.world_config(7, 150)
    assert world.junction_probability == quality.BENCHMARK_WORLD["junction_probability"]
    assert quality.world_config(7, 150, {"junction_probability": 0.3}).junction_probability == 0.3
    model = quality.model_config()
    assert (model.name, model.world_model_frames, model.world_model_stage) == ("demo", "cells", 2)
    train = quality.train_config(7, 1000)
    assert (train.trajectory_time_weighting, train.history_loss) == ("linear", "paired")
    assert world.junction_pull_out_lead_s == [2.0, 3.0]
    assert (train.seed, train.split_seed, train.max_steps) == (7, 7, 1000)


def test_world_overrides_are_parsed_and_bad_ones_are_named() -> None:
    world = quality.parse_world_overrides(
        ["junction_probability=0.85", 'camera_fov_deg={"front": 40}']
    )
    assert world == {"junction_probability": 0.85, "camera_fov_deg": {"front": 40}}
    config = quality.world_config(8, 20, world)
    assert (config.seed, config.num_episodes, config.junction_probability) == (8, 20, 0.85)
    with pytest.raises(ValueError, match="junction_probabilty=0.5"):
        quality.parse_world_overrides(["junction_probabilty=0.5"])  # misspelt field
    with pytest.raises(ValueError, match="--seed"):
        quality.parse_world_overrides(["seed=3"])  # the world's seed has its own option
    with pytest.raises(ValueError, match="not JSON"):
        quality.parse_world_overrides(["junction_probability=high"])


@pytest.mark.parametrize("marker", ["ok", '{"junction_probability": 0.85}'])
def test_a_kept_folder_of_another_world_is_refused_before_anything_runs(
    tmp_path: Path, marker: str
) -> None:
    """--keep reuses a generated world; with other --world overrides that would silently score
    the old world under the new name."""
    (tmp_path / "episodes").mkdir()
    (tmp_path / "episodes" / ".complete-seed-7-n-150").write_text(marker + "\n")
    with pytest.raises(SystemExit, match="another --keep folder"):
        quality.run(7, 10, tmp_path, world={"junction_probability": 0.5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episodes"]  # nothing generated


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("jobs")
    for i in range(4):
        write_episode(root / "episodes", f"ep{i}", duration_s=6.0, heading=0.3 * i)
    config = dataclasses.replace(TINY_PREPARE, workers=1)
    return pipeline.prepare_stage(str(root / "episodes"), str(root / "data"), config).manifest_uri


def _trainings(manifest: str, folder: Path) -> list[tuple[Any, tuple[Any, ...]]]:
    """A world-model training and one without, with their own seeds, as `run` schedules them."""
    model = shard_model_config()
    off = dataclasses.replace(model, use_world_model=False)
    tcfg = TrainConfig(
        epochs=1, max_steps=3, batch_size=4, warmup_steps=1, val_fraction=0.25, test_fraction=0.25
    )
    return [
        (train, (manifest, str(folder / name), cfg, dataclasses.replace(tcfg, seed=seed)))
        for name, cfg, seed in (("off", off, 1), ("model", model, 2))
    ]


def _weights(checkpoint_uri: str) -> dict[str, torch.Tensor]:
    return read_checkpoint(Path(checkpoint_uri).read_bytes())["state_dict"]


def test_two_jobs_at_a_time_train_the_same_weights_as_one_at_a_time(
    tiny_manifest: str, tmp_path: Path
) -> None:
    serial = quality._in_parallel(1, _trainings(tiny_manifest, tmp_path / "serial"))
    parallel = quality._in_parallel(2, _trainings(tiny_manifest, tmp_path / "parallel"))
    # results come back in the order of the calls, whatever order they ran in
    assert [Path(r.checkpoint_uri).parent.name for r in parallel] == ["off", "model"]
    for one, two in zip(serial, parallel, strict=True):
        assert one.steps == two.steps == 3
        first, second = _weights(one.checkpoint_uri), _weights(two.checkpoint_uri)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first)
    # two different trainings, so equal weights above are not equal by construction
    off, model = (_weights(result.checkpoint_uri) for result in serial)
    assert any(not torch.equal(off[key], model[key]) for key in off.keys() & model.keys())


def test_a_failing_job_raises_after_the_running_one_has_saved_its_training(
    tiny_manifest: str, tmp_path: Path
) -> None:
    good, bad = _trainings(tiny_manifest, tmp_path)
    broken = (bad[0], (str(tmp_path / "no-such-manifest.json"), *bad[1][1:]))
    with pytest.raises(Exception, match="no-such-manifest"):
        quality._in_parallel(2, [good, broken])
    assert (tmp_path / "off" / "best.pt").exists()  # valid work is kept for a --keep rerun


_HOLDER = """
import time
from benchmarks import quality

if __name__ == "__main__":
    quality._in_parallel(2, [(time.sleep, (300,)), (time.sleep, (300,))])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_workers_of_a_killed_benchmark_stop_instead_of_training_on(tmp_path: Path) -> None:
    """A rerun under --keep must not meet a worker of the killed run still writing its folder."""
    # two workers and the spawn context's resource tracker
    workers = kill_once_ready(_HOLDER, [], tmp_path, lambda pid: len(child_pids(pid)) >= 3)
    assert still_running_after(workers, 30) == set()
