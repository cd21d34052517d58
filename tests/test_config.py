"""Typed configs: defaults are valid, bad values and unknown fields fail with a named field."""

from __future__ import annotations

import json

import pytest

from autoe2e.cli import build_config, main
from autoe2e.config import (
    ConfigError,
    EvalConfig,
    GenerateConfig,
    ModelConfig,
    PrepareConfig,
    TrainConfig,
)


@pytest.mark.parametrize("cls", [GenerateConfig, PrepareConfig, ModelConfig, TrainConfig])
def test_defaults_validate(cls) -> None:
    cls().validate()


def test_file_then_overrides(tmp_path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"epochs": 3, "lr": 0.01}))
    cfg = build_config(TrainConfig, str(path), ["lr=0.002", "precision=bf16"])
    assert (cfg.epochs, cfg.lr, cfg.precision) == (3, 0.002, "bf16")


@pytest.mark.parametrize(
    ("cls", "override", "needle"),
    [
        (TrainConfig, "precision=fp16", "precision"),
        (TrainConfig, "lr=0", "lr"),
        (TrainConfig, "history_dropout=1.0", "history_dropout"),
        (TrainConfig, 'history_loss="both"', "history_loss"),
        (PrepareConfig, "history_offsets_s=[-3.0, -1.0]", "history_offsets_s"),
        (PrepareConfig, "future_offsets_s=[0.05]", "future_offsets_s"),
        (GenerateConfig, "image_width=15", "image_width"),
        (TrainConfig, "not_a_field=1", "unknown TrainConfig field"),
    ],
)
def test_bad_values_name_the_field(cls, override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_config(cls, None, [override])


def test_missing_config_file_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(EvalConfig, str(tmp_path / "nope.json"), [])


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, caplog) -> None:
    code = main(["prepare", str(tmp_path), str(tmp_path / "out"), "--set", "jpeg_quality=0"])
    assert code == 2
    assert "jpeg_quality" in caplog.text
