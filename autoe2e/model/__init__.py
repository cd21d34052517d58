"""AutoE2E model: shared timm backbone, 10 Hz reactive planner, 1 Hz World Action Model."""

from autoe2e.model.autoe2e_model import AutoE2E, ModelInputError, ModelOutput
from autoe2e.model.checkpoint import (
    CheckpointError,
    checkpoint_bytes,
    load_into,
    load_model,
    read_checkpoint,
)
from autoe2e.model.policy import AutoE2EPolicy
from autoe2e.model.target_encoder import TargetEncoder, ema_momentum
from autoe2e.model.world_model import VisualHistoryBuffer, jepa_targets

__all__ = [
    "AutoE2E",
    "AutoE2EPolicy",
    "CheckpointError",
    "ModelInputError",
    "ModelOutput",
    "TargetEncoder",
    "VisualHistoryBuffer",
    "checkpoint_bytes",
    "ema_momentum",
    "jepa_targets",
    "load_into",
    "load_model",
    "read_checkpoint",
]
