"""The model's shape (`ModelConfig`) and its named presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autoe2e.config._common import ConfigError, _require, from_dict


@dataclass
class ModelConfig:
    """Shape of the AutoE2E model (reactive planner + world action model)."""

    name: str = "demo"
    #: Measured on a 2-core CPU at 64x112: mobilenetv3_small_050 ~360 img/s forward+backward,
    #: resnet10t ~67 img/s; the small one lets the CPU demo see thousands of samples.
    backbone: str = "mobilenetv3_small_050"
    pretrained: bool = False
    #: Local path to backbone weights (state dict); empty = random init or hub when pretrained.
    weights_path: str = ""
    image_height: int = 64
    image_width: int = 112
    max_cameras: int = 8
    embed_dim: int = 128
    #: Heads of the attention pools over views; must divide embed_dim.
    attention_heads: int = 4
    map_channels: int = 3
    map_raster_size: int = 64
    ego_history_steps: int = 64
    ego_features: int = 4
    trajectory_steps: int = 64
    #: Time between trajectory steps (the prepared data uses 0.1 s).
    trajectory_dt_s: float = 0.1
    #: Number of smooth basis functions per control channel of the trajectory head.
    trajectory_basis_size: int = 8
    history_len: int = 4
    future_steps: int = 4
    frame_embed_dim: int = 224
    #: Backbone feature maps are pooled to this grid for the JEPA targets.
    target_grid: int = 2
    #: Backbone layer the JEPA targets (and the world model's predictions) come from. "auto":
    #: the last feature map, unless that map is a pointwise (1x1) expansion of the block before
    #: it, then that block's output. MobileNetV3's last stage is such an expansion (48 -> 288
    #: channels): it spans no more directions than its 48-channel input (measured on the trained
    #: quality-benchmark encoders: RankMe 16.2 of 288 vs 13.1 of 48), so predicting it only
    #: inflates the feature dimension and caps RankMe / dim near 0.06. "last": the last feature
    #: map as it is (what checkpoints before version 3 used); otherwise a module name inside the
    #: timm network, e.g. "blocks.4".
    target_layer: str = "auto"
    #: How the planner takes the world model's visual history: "fused" = as a fourth input of
    #: the fusion MLP, next to vision, map and ego, so it can interact with them (e.g. a lead
    #: vehicle seen now and how its gap changed over the last seconds); "residual" = added to
    #: the fused features through one linear map (checkpoints before version 4).
    history_fusion: str = "fused"
    #: What the world model encodes of each view per frame. "pooled": the spatial mean of its
    #: feature map. "cells": the map's cells (its size at the configured input, pooled to at
    #: most `world_model.MAX_CELL_GRID`), each cell with its own weights in the view's
    #: projection, so a frame embedding can hold *where* things are and a history of embeddings
    #: how they moved. Measured on the side-road worlds (benchmarks/history_probe.py): the
    #: pooled history told a crossing bus from a waiting one no better than one frame (AUC
    #: 0.885 / 0.859 vs 0.892 / 0.867), where a perfect history gets 1.000; "cells" of the
    #: stride-8 map with JEPA targets from the stride-16 map (target_layer="blocks.3",
    #: target_grid=4) was the first to probe above it (0.937-0.982), though its planner did
    #: not reliably plan better with it (README, "A world model that reads the bus").
    world_model_frames: str = "pooled"
    #: Which backbone stage (timm feature index) the world model reads: -1 the last (what the
    #: planner pools), e.g. 2 for MobileNetV3's stride-8 map. A distant object that moves a
    #: few pixels a second stays inside one cell of a stride-32 map.
    world_model_stage: int = -1
    use_world_model: bool = True
    #: True: the JEPA loss trains only the world model (backbone features reach it detached).
    #: False: its gradients also train the shared backbone, through the history frames and the
    #: current frame. Measured on the quality benchmark's validation episodes (worlds 7 / 8,
    #: 1,000 steps, two training seeds each), mean ADE@3s 0.329 / 0.458 m with the gradient
    #: against 0.330 / 0.455 detached (world model off 0.350 / 0.470), for 1.65-1.77x the step time
    #: (`benchmarks/model.py`); `benchmarks/quality-log.md`.
    stop_gradient_world_model: bool = True
    #: True: the planner's loss also trains the world model's frame encoder, through the visual
    #: history it plans with (the backbone stays as `stop_gradient_world_model` says), so the
    #: history is shaped for planning as well as for predicting the future features. False: the
    #: history reaches the planner detached, shaped by the JEPA loss alone. Measured on the quality
    #: benchmark (world 8 of the later pull-out, two training seeds, val): the history then reads
    #: the side-road bus worse (probe 0.679 vs 0.923 detached) and is spent on the far steps
    #: (`benchmarks/quality-log.md`), so it stays off.
    planner_trains_history: bool = False
    #: Trained baselines that share everything else with the model: "no_camera" gives the
    #: planner no camera information (map + ego history), "ego_only" neither cameras nor map
    #: (ego history alone, the "ego status is all you need" baseline). Both need
    #: use_world_model=false (a world model over blank frames is meaningless). "none" = the model.
    input_ablation: str = "none"

    @property
    def visual_history_dim(self) -> int:
        return self.history_len * self.frame_embed_dim

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named configuration (`demo`, `default`) with optional field overrides."""
        return from_dict(cls, {**model_preset(name), **overrides}).validate()

    def validate(self) -> ModelConfig:
        _require(
            self.input_ablation in ("none", "no_camera", "ego_only"),
            "input_ablation",
            self.input_ablation,
            'one of "none", "no_camera", "ego_only"',
        )
        _require(
            self.input_ablation == "none" or not self.use_world_model,
            "input_ablation",
            self.input_ablation,
            "set use_world_model=false with a camera-free baseline",
        )
        _require(self.max_cameras >= 1, "max_cameras", self.max_cameras, ">= 1")
        _require(self.history_len >= 1, "history_len", self.history_len, ">= 1")
        _require(self.future_steps >= 1, "future_steps", self.future_steps, ">= 1")
        _require(self.frame_embed_dim >= 1, "frame_embed_dim", self.frame_embed_dim, ">= 1")
        _require(self.attention_heads >= 1, "attention_heads", self.attention_heads, ">= 1")
        _require(
            self.embed_dim >= 1 and self.embed_dim % self.attention_heads == 0,
            "embed_dim",
            self.embed_dim,
            f"must be divisible by attention_heads={self.attention_heads} (embed_dim % "
            f"attention_heads = {self.embed_dim % max(self.attention_heads, 1)}, expected 0)",
        )
        _require(self.embed_dim % 8 == 0, "embed_dim", self.embed_dim, "a multiple of 8")
        _require(self.trajectory_dt_s > 0, "trajectory_dt_s", self.trajectory_dt_s, "> 0")
        _require(
            self.trajectory_basis_size >= 2,
            "trajectory_basis_size",
            self.trajectory_basis_size,
            ">= 2",
        )
        _require(self.target_grid >= 1, "target_grid", self.target_grid, ">= 1")
        _require(
            self.history_fusion in ("fused", "residual"),
            "history_fusion",
            self.history_fusion,
            'one of "fused", "residual"',
        )
        _require(
            self.world_model_frames in ("pooled", "cells"),
            "world_model_frames",
            self.world_model_frames,
            'one of "pooled", "cells"',
        )
        _require(
            bool(self.target_layer.strip()),
            "target_layer",
            self.target_layer,
            '"auto", "last" or a module name inside the backbone',
        )
        return self


#: Named model configurations: field overrides on top of the ModelConfig defaults.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # CPU demo: small images and a tiny backbone, trains in minutes on 2 cores.
    "demo": {"name": "demo"},
    # GPU: 256 px tall frames, up to 8 cameras. ConvNeXt uses LayerNorm, so per-GPU batches of a
    # few samples and the EMA target need no BatchNorm running statistics; target maps pooled
    # to 8x8 as upstream.
    "default": {
        "name": "default",
        "backbone": "convnext_nano",
        "image_height": 256,
        "image_width": 448,
        "max_cameras": 8,
        "embed_dim": 256,
        "attention_heads": 8,
        "target_grid": 8,
    },
}


def model_preset(name: str) -> dict[str, Any]:
    """Field dict of a named ModelConfig preset (a copy, safe to modify)."""
    if name not in MODEL_PRESETS:
        raise ConfigError(
            f"unknown model preset {name!r}; known presets are {sorted(MODEL_PRESETS)}"
        )
    return dict(MODEL_PRESETS[name])
