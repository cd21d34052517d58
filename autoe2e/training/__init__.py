"""Training: `train(manifest_uri, out_uri, model_cfg, train_cfg, tracking) -> TrainResult`."""

from autoe2e.training.loop import CHECKPOINT_NAME, TrainingError, TrainResult, train
from autoe2e.training.runtime import shard_dataset_factory

__all__ = ["CHECKPOINT_NAME", "TrainResult", "TrainingError", "shard_dataset_factory", "train"]
