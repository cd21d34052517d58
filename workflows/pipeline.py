"""prepare (list -> mapped per-episode prepare -> publish) -> train -> trained baselines (mapped)
-> evaluate, plus launch plans.

Local:   pyflyte run workflows/pipeline.py autoe2e_pipeline --episodes_uri DIR --out_uri DIR
Remote:  pyflyte run --remote --image IMAGE workflows/pipeline.py autoe2e_pipeline \
             --episodes_uri s3://bucket/episodes --out_uri s3://bucket/runs/NAME
"""

from __future__ import annotations

import functools

from flytekit import CronSchedule, LaunchPlan, map_task, workflow

from autoe2e.config import EvalConfig, ModelConfig, PrepareConfig, TrainConfig
from autoe2e.pipeline import PipelineSummary
from tasks.resources import prepare_concurrency
from tasks.stages import (
    evaluate_model,
    list_episodes,
    prepare_episode,
    publish_dataset,
    train_baseline,
    train_model,
)
from workflows.settings import nightly_settings

#: Episodes prepared at once; compiled into the map task (AUTOE2E_PREPARE_CONCURRENCY at
#: registration), since an ArrayNode's concurrency is not a run-time input.
PREPARE_CONCURRENCY = prepare_concurrency()


@workflow
def autoe2e_pipeline(
    episodes_uri: str,
    out_uri: str,
    prepare_config: PrepareConfig = PrepareConfig(),
    model_config: ModelConfig = ModelConfig(),
    train_config: TrainConfig = TrainConfig(),
    eval_config: EvalConfig = EvalConfig(),
) -> PipelineSummary:
    episodes = list_episodes(episodes_uri=episodes_uri, out_uri=out_uri, config=prepare_config)
    # One mapped pod per episode; unchanged episodes are served from the task cache.
    staged = map_task(
        functools.partial(
            prepare_episode, config=episodes.episode_config, staging_uri=episodes.staging_uri
        ),
        concurrency=PREPARE_CONCURRENCY,
        min_success_ratio=1.0,
    )(episode_uri=episodes.episode_uris, fingerprint=episodes.fingerprints)
    dataset = publish_dataset(
        staged_uris=staged,
        episodes_uri=episodes_uri,
        out_uri=out_uri,
        inputs_sha256=episodes.inputs_sha256,
        config=prepare_config,
    )
    model = train_model(
        dataset=dataset, out_uri=out_uri, model_config=model_config, train_config=train_config
    )
    # The camera-free baselines, one pod each, for the model's number of steps.
    baselines = map_task(
        functools.partial(
            train_baseline,
            dataset=dataset,
            model=model,
            out_uri=out_uri,
            model_config=model_config,
            train_config=train_config,
        ),
        min_success_ratio=1.0,
    )(ablation=eval_config.trained_baselines)
    return evaluate_model(
        dataset=dataset,
        model=model,
        out_uri=out_uri,
        eval_config=eval_config,
        baseline_checkpoints=baselines,
    )


#: Nightly retraining (03:00 UTC by default). Its inputs are fixed from the registering
#: environment (workflows/settings.py) so each deployment points at its own buckets and gate;
#: activate with `pyflyte register --activate-launchplans`.
NIGHTLY = nightly_settings()
nightly_retraining = LaunchPlan.get_or_create(
    workflow=autoe2e_pipeline,
    name="autoe2e_nightly_retraining",
    schedule=CronSchedule(schedule=NIGHTLY.schedule),
    fixed_inputs={
        "episodes_uri": NIGHTLY.episodes_uri,
        "out_uri": NIGHTLY.out_uri,
        "eval_config": NIGHTLY.eval_config,
        "train_config": NIGHTLY.train_config,
    },
)
