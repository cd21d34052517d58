"""Training: `train(manifest_uri, out_uri, model_cfg, train_cfg, tracking) -> TrainResult`."""

from autoe2e.training.loop import CHECKPOINT_NAME, TrainResult, train
from autoe2e.training.runtime import shard_dataset_factory

__all__ = ["CHECKPOINT_NAME", "TrainResult", "shard_dataset_factory", "train"]
