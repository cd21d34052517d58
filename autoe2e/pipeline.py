"""The three stages as plain functions with one output layout, shared by the CLI and Flyte tasks.

Layout under OUT_URI (local path or s3://)::

    datasets/<key>/manifest.json, .../shards/    prepare; <key> addresses inputs + parameters
    runs/<mlflow run id>/training/...            checkpoints of that training run
    runs/<mlflow run id>/evaluation/report.json  held-out metrics vs baselines
    runs/<mlflow run id>/summary.json            where everything is, plus the headline numbers
    training-in-progress.json                    the run a restarted `train` resumes (removed
                                                 when training finishes)
    mlflow/                                      embedded MLflow store (only when OUT_URI is local
                                                 and MLFLOW_TRACKING_URI is unset)
    mlflow-fallback/                             embedded store used while MLFLOW_TRACKING_URI is
                                                 unreachable (TrainConfig.tracking_strict=false)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from autoe2e import storage
from autoe2e.config import (
    TRAINED_BASELINES,
    ConfigError,
    EvalConfig,
    ModelConfig,
    PrepareConfig,
    TrainConfig,
)
from autoe2e.tracking import Tracker

log = logging.getLogger(__name__)

DATASETS_DIR = "datasets"
RUNS_DIR = "runs"
MLFLOW_DIR = "mlflow"
MLFLOW_FALLBACK_DIR = "mlflow-fallback"
TRAINING_DIR = "training"
EVALUATION_DIR = "evaluation"
SUMMARY_FILE = "summary.json"
IN_PROGRESS_FILE = "training-in-progress.json"
#: MLflow tag naming what a training run is: "model" or "baseline:<ablation>".
ROLE_TAG = "autoe2e.role"


@dataclass
class PipelineSummary:
    """What a finished run produced; also written to OUT_URI/summary.json."""

    manifest_uri: str
    checkpoint_uri: str
    report_uri: str
    mlflow_run_id: str
    tracking_uri: str
    model_ade_m: float
    model_fde_m: float
    constant_velocity_ade_m: float
    constant_velocity_fde_m: float
    gate_passed: bool
    registered_model_version: str = ""
    #: "champion" or "challenger": the alias this run's registered version got
    model_alias: str = ""
    headline: list[str] = field(default_factory=list)


def open_tracker(
    out_uri: str,
    *,
    experiment: str = "autoe2e",
    run_id: str | None = None,
    strict: bool = False,
) -> Tracker:
    """MLFLOW_TRACKING_URI when set, else the embedded store under a local OUT_URI.

    MLflow unreachable (see `Tracker.open`): `strict` fails at once; otherwise a warning and a
    local fallback store, `OUT_URI/mlflow-fallback/` for a local OUT_URI. For an s3:// OUT_URI
    it is `./mlflow-fallback/` in the working directory, i.e. on this machine or pod only: an
    embedded store cannot live in S3. A later stage in the same place continues a fallback run.
    """
    local = not storage.is_s3(out_uri)
    local_dir = storage.join_uri(out_uri, MLFLOW_DIR) if local else None
    fallback_dir = storage.join_uri(out_uri, MLFLOW_FALLBACK_DIR) if local else None
    return Tracker.open(
        local_dir,
        experiment=experiment,
        run_id=run_id,
        strict=strict,
        fallback_dir=fallback_dir,
    )


def run_uri(out_uri: str, run_id: str) -> str:
    """Per-run folder, so nightly runs into the same OUT_URI never overwrite each other."""
    return storage.join_uri(out_uri, RUNS_DIR, run_id)


def dataset_uri(out_uri: str, inputs_sha256: str, config: PrepareConfig) -> str:
    """Where the dataset for these inputs and parameters lives under OUT_URI."""
    from autoe2e.data.manifest import dataset_key

    return storage.join_uri(out_uri, DATASETS_DIR, dataset_key(inputs_sha256, config))


def prepare_stage(episodes_uri: str, out_uri: str, config: PrepareConfig):
    """Stage episodes under OUT/dataset-staging (reused by later runs), then publish the dataset
    under OUT/datasets/<key>: the same staged path and layout as the Flyte workflow."""
    from autoe2e.data.staging import STAGING_DIR, list_episodes, prepare_staged

    config.validate()
    listing = list_episodes(episodes_uri)
    return prepare_staged(
        listing,
        dataset_uri(out_uri, listing.inputs_sha256, config),
        config,
        staging_uri=storage.join_uri(out_uri, STAGING_DIR),
        episodes_uri=episodes_uri,
        max_workers=config.workers or os.cpu_count() or 1,
    )


def in_progress_file(role: str) -> str:
    """The in-progress record of one training role; the model's keeps its historical name."""
    return IN_PROGRESS_FILE if role == "model" else f"training-in-progress-{role}.json"


def train_stage(
    manifest_uri: str,
    out_uri: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    role: str = "model",
):
    """Train into a new MLflow run, or continue the unfinished one OUT_URI records.

    A preempted pod or a killed `autoe2e train` leaves `OUT_URI/training-in-progress.json`
    (its MLflow run id, manifest and configs); the next call with the same manifest and configs
    reuses that run and its training folder, where `train` resumes from the newest checkpoint.
    Other configs are refused with the fields named; another manifest starts a new run.
    `role` keeps the trained baselines' records apart from the model's (see
    `train_baseline_stage`).
    """
    from autoe2e.training import distributed, train

    model_config.validate()
    train_config.validate()
    # Under torchrun / Flyte's Elastic every rank calls this: rank 0 owns the MLflow run and
    # the in-progress record, the others learn the run id from it.
    info = distributed.setup()
    marker_uri = storage.join_uri(out_uri, in_progress_file(role))
    tracker = None
    run_id = None
    if info.is_main:
        tracker, run_id = _resumable_tracker(
            out_uri, marker_uri, manifest_uri, model_config, train_config
        )
        tracker.set_tags({ROLE_TAG: role.replace("-", ":", 1)})
    # the training folder is named after the run the marker records, also when MLflow was
    # unreachable and a fallback run stands in for it: the checkpoints are never orphaned
    run_id = str(distributed.broadcast(run_id, info))
    result = train(
        manifest_uri,
        storage.join_uri(run_uri(out_uri, run_id), TRAINING_DIR),
        model_config,
        train_config,
        tracking=tracker,
    )
    if info.is_main:
        storage.delete(marker_uri)
    return result


def baseline_configs(
    model_config: ModelConfig, train_config: TrainConfig, ablation: str, steps: int
) -> tuple[ModelConfig, TrainConfig]:
    """The configs of a trained baseline beside a model that trained for `steps` steps.

    A baseline shares everything with the model except its inputs (`input_ablation`, no world
    model) and trains for exactly the model's optimizer steps, with the time budget lifted: a
    camera-free model runs many more steps per second, and under the model's wall-clock budget
    it would be compared after more training, not on the same budget. It starts from random
    weights: the model's warm start (the nightly plan's champion) has other inputs.
    """
    if ablation not in TRAINED_BASELINES:
        raise ConfigError(
            f"config field trained_baselines: unknown baseline {ablation!r}; choose from "
            f"{list(TRAINED_BASELINES)}"
        )
    model = dataclasses.replace(model_config, use_world_model=False, input_ablation=ablation)
    train = dataclasses.replace(
        train_config,
        max_steps=max(1, int(steps)),
        time_budget_s=0.0,
        init_checkpoint="",
        init_checkpoint_optional=False,
    )
    return model.validate(), train.validate()


def train_baseline_stage(
    manifest_uri: str,
    out_uri: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    ablation: str,
    steps: int,
):
    """Train one camera-free baseline (`baseline_configs`) in its own resumable MLflow run."""
    model, train = baseline_configs(model_config, train_config, ablation, steps)
    return train_stage(manifest_uri, out_uri, model, train, role=f"baseline-{ablation}")


def _resumable_tracker(
    out_uri: str,
    marker_uri: str,
    manifest_uri: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> tuple[Tracker, str]:
    """-> (the MLflow run to log to, the run whose training folder holds the checkpoints)."""
    from autoe2e.training.checkpointing import config_differences, identity

    wanted = identity(model_config, train_config)
    run_id = None
    if storage.exists(marker_uri):
        marker = json.loads(storage.read_bytes(marker_uri))
        if marker["manifest_uri"] != manifest_uri:
            log.warning(
                "%s records run %s on another dataset (%s); starting a new run",
                marker_uri, marker["run_id"], marker["manifest_uri"],
            )  # fmt: skip
        else:
            differences = config_differences(marker["identity"], wanted)
            if differences:
                raise ConfigError(
                    f"{out_uri} holds the unfinished training run {marker['run_id']} with other "
                    f"settings ({'; '.join(differences)}); rerun with those settings to resume "
                    f"it, train into another OUT_URI, or delete {marker_uri} to start over"
                )
            run_id = marker["run_id"]
            log.info("resuming training run %s recorded in %s", run_id, marker_uri)
    tracker = open_tracker(
        out_uri,
        experiment=train_config.experiment,
        run_id=run_id,
        strict=train_config.tracking_strict,
    )
    if run_id is None:
        run_id = tracker.run_id
        marker = {"run_id": run_id, "manifest_uri": manifest_uri, "identity": wanted}
        storage.write_bytes(marker_uri, json.dumps(marker, sort_keys=True).encode())
    elif tracker.run_id != run_id:
        log.warning(
            "MLflow run %s stands in for %s (unreachable server); training continues in the "
            "folder of %s",
            tracker.run_id, run_id, run_id,
        )  # fmt: skip
    return tracker, run_id


def evaluate_stage(
    manifest_uri: str,
    checkpoint_uri: str,
    out_uri: str,
    eval_config: EvalConfig,
    run_id: str,
    baseline_checkpoints: dict[str, str] | None = None,
) -> PipelineSummary:
    """Evaluate, register and summarise; `baseline_checkpoints` (name -> checkpoint URI, e.g.
    from `train_baseline_stage`) join `EvalConfig.baseline_checkpoints`."""
    from autoe2e.evaluation import evaluate

    if baseline_checkpoints:
        eval_config = dataclasses.replace(
            eval_config,
            baseline_checkpoints={**eval_config.baseline_checkpoints, **baseline_checkpoints},
        )

    tracker = open_tracker(out_uri, run_id=run_id)
    report_dir = storage.join_uri(run_uri(out_uri, run_id), EVALUATION_DIR)
    report = evaluate(manifest_uri, checkpoint_uri, report_dir, eval_config, tracking=tracker)
    summary = summarize(
        report,
        manifest_uri,
        checkpoint_uri,
        storage.join_uri(report_dir, "report.json"),
        run_id,
        tracker.tracking_uri,
    )
    storage.write_bytes(
        storage.join_uri(run_uri(out_uri, run_id), SUMMARY_FILE),
        json.dumps(asdict(summary), indent=2).encode(),
    )
    return summary


def summarize(
    report: dict[str, Any],
    manifest_uri: str,
    checkpoint_uri: str,
    report_uri: str,
    run_id: str,
    tracking_uri: str,
) -> PipelineSummary:
    model = report["planner"]["model"]
    cv = report["planner"]["baselines"]["constant_velocity"]
    gate = report["gate"]
    headline = [
        f"held-out episodes  : {report.get('num_episodes', '?')} "
        f"({report.get('num_samples', '?')} samples)",
        f"AutoE2E            : ADE {model['ade_m']:.2f} m  FDE {model['fde_m']:.2f} m",
    ]
    for name, metrics in report["planner"]["baselines"].items():
        headline.append(f"{name:<19}: ADE {metrics['ade_m']:.2f} m  FDE {metrics['fde_m']:.2f} m")
    for name, metrics in report.get("trained_baselines", {}).items():
        headline.append(
            f"{name + ' (trained)':<19}: ADE {metrics['ade_m']:.2f} m  FDE {metrics['fde_m']:.2f} m"
        )
    key = report.get("key_metric", "ade")
    label = "ADE@3s" if key == "ade_3s" else "ADE"
    for row in report.get("by_scenario", []):
        model_value = row.get(f"model_{key}_m")
        cv_value = row.get(f"constant_velocity_{key}_m")
        if model_value is not None and cv_value is not None:
            headline.append(
                f"  {row['scenario']:<17}: {label} {model_value:.2f} m vs CV {cv_value:.2f} m "
                f"({row['samples']} samples, {row['episodes']} episodes)"
            )
    for name, entry in report.get("ablations", {}).items():
        if entry.get("ratio_to_model") is not None:
            headline.append(
                f"  test-time {name:<8}: {label} x{entry['ratio_to_model']:.2f} of the model's"
            )
    if report.get("report_html_uri"):
        headline.append(f"plots and tables   : {report['report_html_uri']}")
    headline.append(
        f"promotion gate     : {'passed' if gate['passed'] else 'failed'} "
        f"({'; '.join(gate.get('reasons', [])) or 'all checks passed'})"
    )
    promotion = report.get("promotion")
    if promotion:
        headline.append(
            f"champion decision  : {promotion['registered_model']} v{promotion['version']} is "
            f"the {promotion['alias']} (champion: "
            f"{'v' + promotion['champion'] if promotion['champion'] else 'none'})"
        )
    return PipelineSummary(
        manifest_uri=manifest_uri,
        checkpoint_uri=checkpoint_uri,
        report_uri=report_uri,
        mlflow_run_id=run_id,
        tracking_uri=tracking_uri,
        model_ade_m=float(model["ade_m"]),
        model_fde_m=float(model["fde_m"]),
        constant_velocity_ade_m=float(cv["ade_m"]),
        constant_velocity_fde_m=float(cv["fde_m"]),
        gate_passed=bool(gate["passed"]),
        registered_model_version=str(report.get("registered_model_version", "") or ""),
        model_alias=str((promotion or {}).get("alias", "")),
        headline=headline,
    )


def run_pipeline(
    episodes_uri: str,
    out_uri: str,
    *,
    prepare_config: PrepareConfig,
    model_config: ModelConfig,
    train_config: TrainConfig,
    eval_config: EvalConfig,
) -> PipelineSummary:
    """prepare -> train (the model, then its trained baselines) -> evaluate in one process;
    the Flyte workflow runs the same stages."""
    eval_config.validate()  # a bad baseline name fails now, not after the model has trained
    prepared = prepare_stage(episodes_uri, out_uri, prepare_config)
    trained = train_stage(prepared.manifest_uri, out_uri, model_config, train_config)
    baselines = {
        name: train_baseline_stage(
            prepared.manifest_uri, out_uri, model_config, train_config, name, trained.steps
        ).checkpoint_uri
        for name in eval_config.trained_baselines
    }
    return evaluate_stage(
        prepared.manifest_uri,
        trained.checkpoint_uri,
        out_uri,
        eval_config,
        trained.run_id,
        baseline_checkpoints=baselines,
    )
