"""The whole product once, end to end: synthetic MP4 episodes -> the Flyte workflow executed
locally (prepare -> train -> evaluate) -> manifest, checkpoint, report and an MLflow run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient

from autoe2e.cli import main
from autoe2e.config import (
    EvalConfig,
    GenerateConfig,
    ModelConfig,
    PrepareConfig,
    TrainConfig,
    to_dict,
)
from autoe2e.model import load_model
from autoe2e.synthetic import generate_episodes

TINY_GENERATE = GenerateConfig(
    num_episodes=5,
    duration_s=16.0,
    seed=3,
    cameras=["front", "rear"],
    image_width=96,
    image_height=64,
)
TINY_PREPARE = PrepareConfig(image_width=48, image_height=32, sample_stride=4, map_raster_size=32)
TINY_MODEL = ModelConfig(image_width=48, image_height=32, map_raster_size=32, embed_dim=32)
TINY_TRAIN = TrainConfig(epochs=2, batch_size=8, warmup_steps=2, log_every_steps=2)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("episodes")
    ids = generate_episodes(root, TINY_GENERATE, workers=2)
    assert len(ids) == TINY_GENERATE.num_episodes
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_workflow_runs_end_to_end_locally(episodes: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FLYTE_LOCAL_CACHE_ENABLED", "false")
    from workflows.pipeline import autoe2e_pipeline

    out = tmp_path / "run"
    summary = autoe2e_pipeline(
        episodes_uri=str(episodes),
        out_uri=str(out),
        prepare_config=TINY_PREPARE,
        model_config=TINY_MODEL,
        train_config=TINY_TRAIN,
        eval_config=EvalConfig(),
    )

    # The manifest describes exactly what was written.
    dataset = Path(summary.manifest_uri).parent
    assert dataset.parent == out / "datasets"  # content-addressed: inputs + parameters
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["quarantined"] == []
    assert {e["episode_id"] for e in manifest["episodes"]} == {p.name for p in episodes.iterdir()}
    total = 0
    for shard in manifest["shards"]:
        samples = dataset / shard["path"]
        frames = dataset / shard["frames_path"]
        assert _sha256(samples) == shard["sha256"]
        assert _sha256(frames) == shard["frames_sha256"]
        assert pq.ParquetFile(samples).metadata.num_rows == shard["num_rows"]
        assert pq.ParquetFile(frames).metadata.num_rows == shard["num_frames"]
        total += shard["num_rows"]
    assert total == manifest["num_samples"] == sum(e["num_samples"] for e in manifest["episodes"])
    assert total > 0

    # Training left a checkpoint and curves; evaluation a report next to the baselines.
    assert Path(summary.checkpoint_uri).is_file()
    report = json.loads(Path(summary.report_uri).read_text())
    assert report["held_out"] is True
    assert summary.model_ade_m > 0 and summary.constant_velocity_ade_m > 0
    assert summary.model_ade_m == pytest.approx(report["planner"]["model"]["ade_m"])

    client = MlflowClient(tracking_uri=summary.tracking_uri)
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.params["model.embed_dim"] == "32"
    history = client.get_metric_history(summary.mlflow_run_id, "train/loss")
    assert len(history) >= 2, "training curve has fewer than two points"
    assert any(k.startswith("test/") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(summary.mlflow_run_id)}
    assert "report.json" in artifacts
    assert (out / "runs" / summary.mlflow_run_id / "summary.json").is_file()

    # Every evaluated model becomes a version of one registered model, champion or challenger.
    assert summary.model_alias in ("champion", "challenger")
    aliased = client.get_model_version_by_alias("autoe2e-demo", summary.model_alias)
    assert str(aliased.version) == summary.registered_model_version
    assert aliased.run_id == summary.mlflow_run_id
    assert report["promotion"]["alias"] == summary.model_alias

    # The workflow trained both camera-free baselines for the model's steps, each in its own
    # tagged MLflow run, and evaluation scored them on the model's test samples.
    assert set(report["trained_baselines"]) == {"ego_only", "no_camera"}
    for name in ("ego_only", "no_camera"):
        (base_run,) = client.search_runs(
            [run.info.experiment_id], f"tags.`autoe2e.role` = 'baseline:{name}'"
        )
        assert base_run.info.run_id != summary.mlflow_run_id
        assert report["trained_baselines"][name]["ade_m"] > 0  # scored on the same samples
        checkpoint = Path(report["baseline_checkpoints"][name])
        assert summary.mlflow_run_id not in str(checkpoint)  # its own training folder
        baseline, _ = load_model(checkpoint.read_bytes())
        assert baseline.cfg.input_ablation == name and not baseline.cfg.use_world_model
        # trained for exactly the model's number of optimizer steps
        assert _last_step(checkpoint) == _last_step(Path(summary.checkpoint_uri)) > 0
    assert run.data.tags["autoe2e.role"] == "model"


def _last_step(best_checkpoint: Path) -> int:
    return int(load_model((best_checkpoint.parent / "last.pt").read_bytes())[1]["step"])


def _sets(flag: str, config: object, base: object) -> list[str]:
    """CLI `--x-set field=value` flags for the fields where `config` differs from `base`."""
    out: list[str] = []
    for key, value in to_dict(config).items():
        if value != to_dict(base)[key]:
            out += [flag, f"{key}={json.dumps(value)}"]
    return out


def test_cli_runs_every_stage_without_flyte(episodes: Path, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "cli-run"
    argv = [
        "pipeline",
        str(episodes),
        str(out),
        *_sets("--prepare-set", TINY_PREPARE, PrepareConfig()),
        *_sets("--model-set", TINY_MODEL, ModelConfig()),
        *_sets("--train-set", TINY_TRAIN, TrainConfig()),
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert Path(summary["report_uri"]).is_file()
    assert summary["model_ade_m"] > 0
    # the selected weights are an MLflow model that plans like the checkpoint
    import mlflow.pytorch

    train_summary = out / "runs" / summary["mlflow_run_id"] / "training" / "train_summary.json"
    assert len(list(out.glob("runs/*/training/train_summary.json"))) == 3  # + the 2 baselines
    policy_uri = json.loads(train_summary.read_text())["policy_uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", summary["tracking_uri"])
    policy = mlflow.pytorch.load_model(policy_uri)
    checkpoint, _ = load_model(Path(summary["checkpoint_uri"]).read_bytes())
    assert all(
        torch.equal(a, b)
        for a, b in zip(policy.state_dict().values(), checkpoint.state_dict().values(), strict=True)
    )
    client = MlflowClient(summary["tracking_uri"])
    logged = {f.path for f in client.list_artifacts(summary["mlflow_run_id"])}
    assert {"config.json", "checkpoint", "last", "train_summary.json"} <= logged
    assert {"report.html", "plots"} <= logged  # evaluate: the page and every plot as a PNG
    run = client.get_run(summary["mlflow_run_id"])
    assert "train/data_wait_s_per_step" in run.data.metrics
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    # prepare again with the same inputs and parameters: nothing new is published
    again = [
        "prepare",
        str(episodes),
        str(Path(summary["manifest_uri"]).parent),
        *_sets("--set", TINY_PREPARE, PrepareConfig()),
    ]
    assert main(again) == 0
    assert json.loads(capsys.readouterr().out)["published"] is False


def test_new_episodes_publish_a_new_dataset_next_to_the_old_one(episodes: Path, tmp_path) -> None:
    """A nightly run into the same OUT_URI: unchanged inputs reuse the published dataset, new
    episodes publish a new one (published datasets are immutable, so this must not fail)."""
    from autoe2e.pipeline import prepare_stage

    config = dataclasses.replace(TINY_PREPARE, workers=1)
    out = str(tmp_path / "nightly")
    first = prepare_stage(str(episodes), out, config)
    again = prepare_stage(str(episodes), out, config)
    assert (again.published, again.manifest_uri) == (False, first.manifest_uri)

    grown = tmp_path / "grown"
    shutil.copytree(episodes, grown)
    shutil.copytree(next(p for p in episodes.iterdir() if p.is_dir()), grown / "ep_extra")
    (grown / "ep_extra" / "episode.json").write_text(
        (grown / "ep_extra" / "episode.json")
        .read_text()
        .replace(
            json.loads((grown / "ep_extra" / "episode.json").read_text())["episode_id"],
            "ep_extra",
        )
    )
    nightly = prepare_stage(str(grown), out, config)
    assert nightly.published and nightly.manifest_uri != first.manifest_uri
    assert nightly.num_episodes == first.num_episodes + 1
    assert Path(first.manifest_uri).is_file()  # the old dataset is untouched


def test_baseline_configs_share_the_model_budget_but_not_its_inputs_or_warm_start() -> None:
    from autoe2e.config import ConfigError
    from autoe2e.pipeline import baseline_configs

    nightly = dataclasses.replace(
        TINY_TRAIN,
        time_budget_s=600.0,
        init_checkpoint="models:/autoe2e-demo@champion",
        init_checkpoint_optional=True,
        split_seed=5,
    )
    model, train = baseline_configs(TINY_MODEL, nightly, "no_camera", steps=37)
    assert (model.input_ablation, model.use_world_model) == ("no_camera", False)
    assert dataclasses.replace(model, input_ablation="none", use_world_model=True) == TINY_MODEL
    # the model's steps, no wall clock, and random init: the champion has other inputs
    assert (train.max_steps, train.time_budget_s) == (37, 0.0)
    assert (train.init_checkpoint, train.init_checkpoint_optional) == ("", False)
    assert (train.seed, train.split_seed, train.val_fraction, train.test_fraction) == (
        nightly.seed, 5, nightly.val_fraction, nightly.test_fraction,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="trained_baselines"):
        baseline_configs(TINY_MODEL, nightly, "cameras_only", steps=37)
    with pytest.raises(ConfigError, match=r"trained_baselines=\['ego_only', 'typo'\]"):
        EvalConfig(trained_baselines=["ego_only", "typo"]).validate()
