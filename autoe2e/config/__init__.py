"""Typed configuration shared by the CLI and the Flyte tasks.

Every stage takes one dataclass with defaults; the CLI fills it from flags / a JSON file and the
Flyte tasks accept it as a typed input, so both run the same code with the same knobs.
Lists (not tuples) are used so flytekit can serialise every field.
"""

from autoe2e.config._common import ConfigError, from_dict, load_json, to_dict
from autoe2e.config.data import GenerateConfig, PrepareConfig
from autoe2e.config.evaluation import TRAINED_BASELINES, EvalConfig
from autoe2e.config.model import MODEL_PRESETS, ModelConfig, model_preset
from autoe2e.config.training import TrainConfig

__all__ = [
    "MODEL_PRESETS",
    "TRAINED_BASELINES",
    "ConfigError",
    "EvalConfig",
    "GenerateConfig",
    "ModelConfig",
    "PrepareConfig",
    "TrainConfig",
    "from_dict",
    "load_json",
    "model_preset",
    "to_dict",
]
