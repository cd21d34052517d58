"""Checkpoint bytes: model weights + the ModelConfig that built them, loadable with weights_only.

The config travels as a plain dict next to the state dict so a checkpoint is self-describing:
evaluation rebuilds exactly the trained architecture, and loading into a model built from a
different config fails with the differing fields named instead of a wall of tensor-shape errors.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from typing import Any

import torch

from autoe2e.config import ConfigError, ModelConfig, from_dict, to_dict
from autoe2e.model.autoe2e_model import AutoE2E

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "autoe2e.checkpoint"
#: 2: the world model's heads predict the change from the current frame's target features.
#: Version-1 heads predicted the features themselves; such checkpoints still load (their planner
#: is unchanged, warm starts retrain the heads) with a warning that their JEPA numbers are off.
#: 3: `ModelConfig.target_layer` (default "auto": MobileNetV3's world model predicts the
#: 48-channel bottleneck, not its 288-channel expansion). Older checkpoints have no such field
#: and used the last feature map; they load as target_layer="last".
#: 4: `ModelConfig.history_fusion` (default "fused": the visual history is an input of the
#: planner's fusion MLP). Older checkpoints added it after the MLP; they load as "residual".
CHECKPOINT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)


class CheckpointError(ValueError):
    """A checkpoint cannot be used here; the message says why and what to do."""


def checkpoint_bytes(model: AutoE2E, extra: dict[str, Any] | None = None) -> bytes:
    """Serialise weights, config and JSON-like `extra` metadata (step, split, cameras...)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": to_dict(model.cfg),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def read_checkpoint(data: bytes, source: str = "checkpoint") -> dict[str, Any]:
    """Parse checkpoint bytes safely (`weights_only=True`) and check the format header."""
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise CheckpointError(
            f"{source} is not a readable AutoE2E checkpoint ({type(exc).__name__}: {exc}); "
            "pass a file written by autoe2e train"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{source} is not an AutoE2E checkpoint (no format header)")
    if payload.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{source} has checkpoint version {payload.get('version')}, this code reads "
            f"versions {list(READABLE_VERSIONS)}"
        )
    if payload["version"] == 1 and payload.get("model_config", {}).get("use_world_model", True):
        logger.warning(
            "%s is a version-1 checkpoint: its world-model heads predicted target features "
            "outright, this code adds their output to the current frame's features, so its "
            "JEPA predictions and diagnostics are not meaningful (the planner is unaffected; "
            "retrain, or warm-start from it and the heads relearn)",
            source,
        )
    return payload


def config_of(payload: dict[str, Any], source: str = "checkpoint") -> ModelConfig:
    fields = dict(payload["model_config"])
    if payload.get("version", CHECKPOINT_VERSION) < 3:
        fields.setdefault("target_layer", "last")  # what those checkpoints' heads predicted
    if payload.get("version", CHECKPOINT_VERSION) < 4:
        fields.setdefault("history_fusion", "residual")  # how their planner took the history
    try:
        return from_dict(ModelConfig, fields)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: stored model config is incompatible: {exc}") from exc


def config_diff(a: ModelConfig, b: ModelConfig) -> dict[str, tuple[Any, Any]]:
    return {
        f.name: (getattr(a, f.name), getattr(b, f.name))
        for f in dataclasses.fields(ModelConfig)
        if getattr(a, f.name) != getattr(b, f.name)
    }


def load_into(model: AutoE2E, data: bytes, source: str = "checkpoint") -> dict[str, Any]:
    """Load checkpoint weights into an existing model; the configs must match. Returns extra."""
    payload = read_checkpoint(data, source)
    stored = config_of(payload, source)
    diff = config_diff(stored, model.cfg)
    # weights_path/pretrained only say where the *initial* weights came from, not the shapes.
    diff.pop("weights_path", None)
    diff.pop("pretrained", None)
    if diff:
        details = ", ".join(f"{k}: checkpoint={s!r} model={m!r}" for k, (s, m) in diff.items())
        raise CheckpointError(
            f"{source} was trained with a different ModelConfig ({details}); build the model "
            "from the checkpoint's config (load_model) or use a matching checkpoint"
        )
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source} weights do not fit the model: {exc}") from exc
    return dict(payload.get("extra", {}))


def load_model(data: bytes, source: str = "checkpoint") -> tuple[AutoE2E, dict[str, Any]]:
    """Rebuild the model from the checkpoint's own config and load its weights."""
    payload = read_checkpoint(data, source)
    cfg = config_of(payload, source)
    cfg.weights_path = ""  # the checkpoint carries the weights; do not require the init file
    cfg.pretrained = False
    model = AutoE2E(cfg)
    return model, load_into(model, data, source)
