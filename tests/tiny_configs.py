"""Tiny model configuration shared by the model, training and evaluation tests (CPU, seconds)."""

from __future__ import annotations

from autoe2e.config import ModelConfig


def tiny_model_config(**overrides: object) -> ModelConfig:
    base: dict[str, object] = dict(
        backbone="mobilenetv3_small_050",
        image_height=32,
        image_width=48,
        max_cameras=4,
        embed_dim=32,
        map_raster_size=16,
        ego_history_steps=8,
        trajectory_steps=16,
        frame_embed_dim=24,
    )
    base.update(overrides)
    return ModelConfig(**base)  # type: ignore[arg-type]
