"""Registration-time settings of the nightly launch plan, read from the registering shell.

A scheduled launch plan has no one to type inputs, so each deployment fixes them when it runs
`pyflyte register`: where the raw episodes are, where runs go, and the registration gate (and,
optionally, training settings). Bad values fail the registration, naming the variable and the fix.

  AUTOE2E_EPISODES_URI           raw episodes root      (default s3://autoe2e-datasets/episodes)
  AUTOE2E_NIGHTLY_OUT_URI        output root            (default s3://autoe2e-artifacts/nightly)
  AUTOE2E_NIGHTLY_EVAL_CONFIG    EvalConfig as JSON, e.g. '{"max_ade_m": 1.5, "max_fde_m": 3.0}'
  AUTOE2E_NIGHTLY_TRAIN_CONFIG   TrainConfig as JSON, e.g. '{"epochs": 20}'
  AUTOE2E_NIGHTLY_SCHEDULE       cron expression (UTC)  (default "0 3 * * *")
  AUTOE2E_NIGHTLY_WARM_START     1 = start each night from the registered champion
                                 (models:/<registered model>@champion; from scratch while there
                                 is none yet)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

from autoe2e.config import ConfigError, EvalConfig, ModelConfig, TrainConfig, from_dict
from autoe2e.evaluation.promotion import CHAMPION, registered_name

T = TypeVar("T")


@dataclass(frozen=True)
class NightlySettings:
    episodes_uri: str = "s3://autoe2e-datasets/episodes"
    out_uri: str = "s3://autoe2e-artifacts/nightly"
    schedule: str = "0 3 * * *"
    eval_config: EvalConfig = field(default_factory=EvalConfig)
    train_config: TrainConfig = field(default_factory=TrainConfig)


def _json_config(variable: str, cls: type[T]) -> T:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return cls()
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{variable} is not valid JSON ({exc}); e.g. {variable}='{{}}'") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{variable} must be a JSON object of {cls.__name__} fields")
    try:
        config = from_dict(cls, data)
        validate = getattr(config, "validate", None)
        return validate() if validate else config
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{variable}: {exc}") from exc


def _uri(variable: str, default: str) -> str:
    value = os.environ.get(variable, "").strip() or default
    if "://" not in value:
        raise ConfigError(
            f"{variable}={value!r} is not a URI; a scheduled run needs storage every pod "
            "reaches, e.g. s3://bucket/prefix"
        )
    return value


def nightly_settings() -> NightlySettings:
    defaults = NightlySettings()
    schedule = os.environ.get("AUTOE2E_NIGHTLY_SCHEDULE", "").strip() or defaults.schedule
    if len(schedule.split()) != 5:
        raise ConfigError(
            f"AUTOE2E_NIGHTLY_SCHEDULE={schedule!r} is not a 5-field cron expression; "
            "e.g. '0 3 * * *'"
        )
    eval_config = _json_config("AUTOE2E_NIGHTLY_EVAL_CONFIG", EvalConfig)
    train_config = _json_config("AUTOE2E_NIGHTLY_TRAIN_CONFIG", TrainConfig)
    warm = os.environ.get("AUTOE2E_NIGHTLY_WARM_START", "").strip().lower()
    if warm not in ("", "0", "1", "false", "true"):
        raise ConfigError(f"AUTOE2E_NIGHTLY_WARM_START={warm!r} must be 1 or 0")
    if warm in ("1", "true"):
        if train_config.init_checkpoint:
            raise ConfigError(
                "AUTOE2E_NIGHTLY_WARM_START=1 and AUTOE2E_NIGHTLY_TRAIN_CONFIG's init_checkpoint "
                "both choose the initial weights; set one of them"
            )
        # the launch plan trains the default ModelConfig, so that is the model registered
        name = registered_name(eval_config, ModelConfig().name)
        train_config = dataclasses.replace(
            train_config,
            init_checkpoint=f"models:/{name}@{CHAMPION}",
            init_checkpoint_optional=True,
        )
    return NightlySettings(
        episodes_uri=_uri("AUTOE2E_EPISODES_URI", defaults.episodes_uri),
        out_uri=_uri("AUTOE2E_NIGHTLY_OUT_URI", defaults.out_uri),
        schedule=schedule,
        eval_config=eval_config,
        train_config=train_config,
    )
