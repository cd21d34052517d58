"""The pipeline's Flyte tasks, each a typed call into the library.

Prepare is split for fan-out: `list_episodes` -> `prepare_episode` (mapped, cached per episode
content) -> `publish_dataset`; then `train_model` -> `train_baseline` (mapped over
`EvalConfig.trained_baselines`) -> `evaluate_model`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

from flytekit import Cache, task

from autoe2e import pipeline, storage
from autoe2e.config import EvalConfig, ModelConfig, PrepareConfig, TrainConfig
from autoe2e.contract import CONTRACT_VERSION
from autoe2e.data import staging
from autoe2e.data.schema import SCHEMA_VERSION
from tasks import decks
from tasks.resources import (
    EVALUATE_INTERRUPTIBLE,
    EVALUATE_LIMITS,
    EVALUATE_REQUESTS,
    LIST_RESOURCES,
    PREPARE_EPISODE_CPUS,
    PREPARE_EPISODE_RESOURCES,
    PREPARE_INTERRUPTIBLE,
    PUBLISH_RESOURCES,
    RETRIES,
    TRAIN_INTERRUPTIBLE,
    TRAIN_LIMITS,
    TRAIN_REQUESTS,
    TRAIN_SHARED_MEMORY,
    gpu_accelerator,
    train_elastic,
    train_launch_env,
)


@dataclass
class PreparedDataset:
    manifest_uri: str
    num_samples: int
    num_episodes: int
    num_quarantined: int
    published: bool


@dataclass
class TrainedModel:
    checkpoint_uri: str
    mlflow_run_id: str
    best_val_ade_m: float
    steps: int


class EpisodeList(NamedTuple):
    episode_uris: list[str]
    fingerprints: list[str]
    staging_uri: str
    inputs_sha256: str
    #: The prepare config reduced to what decides one episode's tables (see
    #: `staging.episode_config`), so changing workers or shard sizes keeps the cache warm.
    episode_config: PrepareConfig


@task(requests=LIST_RESOURCES, retries=RETRIES, interruptible=PREPARE_INTERRUPTIBLE)
def list_episodes(episodes_uri: str, out_uri: str, config: PrepareConfig) -> EpisodeList:
    """One listing of the raw root: episode URIs, a content fingerprint each, the staging place."""
    config.validate()
    listing = staging.list_episodes(episodes_uri)
    return EpisodeList(
        episode_uris=listing.episode_uris,
        fingerprints=listing.fingerprints,
        staging_uri=storage.join_uri(out_uri, staging.STAGING_DIR),
        inputs_sha256=listing.inputs_sha256,
        episode_config=staging.episode_config(config),
    )


#: The cache key is this version plus the task inputs (episode URI, its content fingerprint,
#: config, staging place): a nightly re-run skips episodes whose files did not change, and a new
#: contract/schema/staging layout invalidates every cached result.
PREPARE_EPISODE_CACHE = Cache(
    version=f"contract{CONTRACT_VERSION}-schema{SCHEMA_VERSION}-staging{staging.STAGING_FORMAT}"
)


@task(
    requests=PREPARE_EPISODE_RESOURCES,
    retries=RETRIES,
    interruptible=PREPARE_INTERRUPTIBLE,
    cache=PREPARE_EPISODE_CACHE,
)
def prepare_episode(
    episode_uri: str, fingerprint: str, config: PrepareConfig, staging_uri: str
) -> str:
    """Decode one episode to 10 Hz / 1 Hz sample tables (or quarantine it) under staging.

    The pod decodes its cameras in as many threads as it requests CPUs; ``os.cpu_count()``
    inside a container reports the node's cores, not the pod's share.
    """
    pod_config = dataclasses.replace(config, camera_threads=PREPARE_EPISODE_CPUS)
    return staging.stage_episode(episode_uri, fingerprint, pod_config, staging_uri)


@task(
    requests=PUBLISH_RESOURCES,
    retries=RETRIES,
    interruptible=PREPARE_INTERRUPTIBLE,
    enable_deck=True,
    deck_fields=decks.DECK_FIELDS,
)
def publish_dataset(
    staged_uris: list[str],
    episodes_uri: str,
    out_uri: str,
    inputs_sha256: str,
    config: PrepareConfig,
) -> PreparedDataset:
    """Merge the staged episodes into validated Parquet shards and publish the manifest last."""
    result = staging.publish_staged(
        staged_uris,
        pipeline.dataset_uri(out_uri, inputs_sha256, config),
        config,
        inputs_sha256=inputs_sha256,
        episodes_uri=episodes_uri,
    )
    decks.prepare_deck(result.manifest_uri)
    return PreparedDataset(
        manifest_uri=result.manifest_uri,
        num_samples=result.num_samples,
        num_episodes=result.num_episodes,
        num_quarantined=len(result.quarantined),
        published=result.published,
    )


@task(
    requests=TRAIN_REQUESTS,
    limits=TRAIN_LIMITS,
    shared_memory=TRAIN_SHARED_MEMORY,
    accelerator=gpu_accelerator(),
    retries=RETRIES,
    interruptible=TRAIN_INTERRUPTIBLE,
    task_config=train_elastic(),
    environment=train_launch_env(),
    annotations={"karpenter.sh/do-not-disrupt": "true"},
    enable_deck=True,
    deck_fields=decks.DECK_FIELDS,
)
def train_model(
    dataset: PreparedDataset, out_uri: str, model_config: ModelConfig, train_config: TrainConfig
) -> TrainedModel:
    """Train the reactive planner + world model; curves and checkpoints go to MLflow.

    Interruptible: a retried attempt (spot preemption) resumes from the newest checkpoint of
    the run OUT_URI records instead of starting over.
    """
    result = pipeline.train_stage(dataset.manifest_uri, out_uri, model_config, train_config)
    decks.train_deck(out_uri, str(result.run_id), result.metrics)
    return TrainedModel(
        checkpoint_uri=result.checkpoint_uri,
        mlflow_run_id=result.run_id,
        best_val_ade_m=float(result.best_val_ade_m),
        steps=int(result.steps),
    )


@task(
    requests=EVALUATE_REQUESTS,
    limits=EVALUATE_LIMITS,
    accelerator=gpu_accelerator(),
    retries=RETRIES,
    interruptible=TRAIN_INTERRUPTIBLE,
)
def train_baseline(
    ablation: str,
    dataset: PreparedDataset,
    model: TrainedModel,
    out_uri: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> str:
    """A camera-free baseline ("ego_only" / "no_camera") trained for the model's step count in
    its own MLflow run (tag autoe2e.role=baseline:<name>); -> its selected checkpoint URI.

    One GPU, no Elastic: these models skip the backbone, so a step costs a fraction of the
    model's. A retried attempt resumes like `train_model`.
    """
    result = pipeline.train_baseline_stage(
        dataset.manifest_uri, out_uri, model_config, train_config, ablation, model.steps
    )
    return result.checkpoint_uri


@task(
    requests=EVALUATE_REQUESTS,
    limits=EVALUATE_LIMITS,
    accelerator=gpu_accelerator(),
    retries=RETRIES,
    interruptible=EVALUATE_INTERRUPTIBLE,
    enable_deck=True,
    deck_fields=decks.DECK_FIELDS,
)
def evaluate_model(
    dataset: PreparedDataset,
    model: TrainedModel,
    out_uri: str,
    eval_config: EvalConfig,
    baseline_checkpoints: list[str] | None = None,
) -> pipeline.PipelineSummary:
    """Held-out ADE/FDE next to the analytic and trained baselines (`baseline_checkpoints`, in
    the order of `eval_config.trained_baselines`); registers the model if it passes."""
    trained = list(baseline_checkpoints or [])
    if trained and len(trained) != len(eval_config.trained_baselines):
        raise ValueError(
            f"{len(trained)} baseline checkpoints for trained_baselines="
            f"{eval_config.trained_baselines}; pass one per name, in that order"
        )
    summary = pipeline.evaluate_stage(
        dataset.manifest_uri,
        model.checkpoint_uri,
        out_uri,
        eval_config.validate(),
        model.mlflow_run_id,
        baseline_checkpoints=dict(zip(eval_config.trained_baselines, trained, strict=False)),
    )
    decks.evaluate_deck(summary.report_uri, summary.tracking_uri, summary.mlflow_run_id)
    return summary
