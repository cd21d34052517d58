"""Tiny model configuration shared by the model, training and evaluation tests (CPU, seconds),
and the tiny side-road world the scenario and history-probe tests generate."""

from __future__ import annotations

from autoe2e.config import GenerateConfig, ModelConfig

#: Two side-road episodes, front camera only: seed 3 gives a bus that crosses in front of the
#: ego, then one that waits.
SIDE_ROAD_WORLD = GenerateConfig(
    num_episodes=2,
    seed=3,
    cameras=["front"],
    lead_vehicle_probability=0.0,
    junction_probability=1.0,
    junction_pull_out_probability=0.5,
)


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


def shard_model_config(**overrides: object) -> ModelConfig:
    """The model shape of the samples `episode_factory.TINY_PREPARE` writes (32x24 frames, 2+2
    world-model frames, 10 ego steps, 20 trajectory steps): train on real tiny shards."""
    base: dict[str, object] = dict(
        image_width=32,
        image_height=24,
        map_raster_size=32,
        embed_dim=32,
        frame_embed_dim=24,
        ego_history_steps=10,
        trajectory_steps=20,
        history_len=2,
        future_steps=2,
    )
    base.update(overrides)
    return ModelConfig(**base)  # type: ignore[arg-type]
