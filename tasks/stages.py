"""The pipeline's Flyte tasks: prepare -> train -> evaluate, each a typed call into the library."""

from __future__ import annotations

from dataclasses import dataclass

from flytekit import task

from autoe2e import pipeline
from autoe2e.config import EvalConfig, ModelConfig, PrepareConfig, TrainConfig
from tasks.resources import (
    EVALUATE_RESOURCES,
    PREPARE_RESOURCES,
    RETRIES,
    TRAIN_LIMITS,
    TRAIN_REQUESTS,
    TRAIN_SHARED_MEMORY,
    gpu_accelerator,
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


@task(requests=PREPARE_RESOURCES, retries=RETRIES)
def prepare_dataset(episodes_uri: str, out_uri: str, config: PrepareConfig) -> PreparedDataset:
    """Decode every camera, subsample to 10 Hz / 1 Hz and publish validated Parquet shards."""
    result = pipeline.prepare_stage(episodes_uri, out_uri, config)
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
    annotations={"karpenter.sh/do-not-disrupt": "true"},
)
def train_model(
    dataset: PreparedDataset, out_uri: str, model_config: ModelConfig, train_config: TrainConfig
) -> TrainedModel:
    """Train the reactive planner + world model; curves and checkpoints go to MLflow."""
    result = pipeline.train_stage(dataset.manifest_uri, out_uri, model_config, train_config)
    return TrainedModel(
        checkpoint_uri=result.checkpoint_uri,
        mlflow_run_id=result.run_id,
        best_val_ade_m=float(result.best_val_ade_m),
        steps=int(result.steps),
    )


@task(requests=EVALUATE_RESOURCES, retries=RETRIES)
def evaluate_model(
    dataset: PreparedDataset, model: TrainedModel, out_uri: str, eval_config: EvalConfig
) -> pipeline.PipelineSummary:
    """Held-out ADE/FDE next to constant-velocity baselines; registers the model if it passes."""
    return pipeline.evaluate_stage(
        dataset.manifest_uri, model.checkpoint_uri, out_uri, eval_config, model.mlflow_run_id
    )
