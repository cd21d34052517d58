"""Typed configuration shared by the CLI and the Flyte tasks.

Every stage takes one dataclass with defaults; the CLI fills it from flags / a JSON file and the
Flyte tasks accept it as a typed input, so both run the same code with the same knobs.
Lists (not tuples) are used so flytekit can serialise every field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


def _require(condition: bool, name: str, value: Any, fix: str) -> None:
    if not condition:
        raise ConfigError(f"config field {name}={value!r} is invalid: {fix}")


@dataclass
class GenerateConfig:
    """Parameters of the procedural multi-camera driving world (`autoe2e generate`)."""

    num_episodes: int = 16
    duration_s: float = 24.0
    seed: int = 0
    cameras: list[str] = field(default_factory=lambda: ["front", "left", "right", "rear"])
    image_width: int = 224
    image_height: int = 128
    #: Horizontal field of view of every camera not named in `camera_fov_deg`.
    horizontal_fov_deg: float = 100.0
    #: Per-camera horizontal FOV (degrees) by camera name; names not in `cameras` are ignored.
    #: The front camera is a narrow (tele) view: at 45 deg a car 30 m ahead is ~8 px wide at the
    #: model's 112 x 64 input instead of ~3 px at 100 deg, so brake lamps, lights and obstacles
    #: survive the downscale and two rounds of 4:2:0 chroma subsampling.
    camera_fov_deg: dict[str, float] = field(default_factory=lambda: {"front": 45.0})
    camera_fps: float = 30.0
    telemetry_hz: float = 30.0
    # Scenario mix: probabilities per episode / per road segment.
    curve_probability: float = 0.55
    s_bend_probability: float = 0.25
    lead_vehicle_probability: float = 0.6
    #: Per episode with a lead vehicle, or without one and without a works truck.
    stop_event_probability: float = 0.8
    #: Per episode without a lead vehicle: a stopped works truck in the ego lane that the ego
    #: must see and stop for (it is not in the map); the truck turns off once the ego waits.
    obstacle_probability: float = 0.9
    #: Per episode without a lead vehicle: a side road from the right with a bus on it, in
    #: place of the works truck or the light. It pulls out across the ego's path (the ego
    #: yields) with `junction_pull_out_probability`, else it waits; only its motion over the
    #: last seconds tells which (a cue for the world model's 1 Hz history).
    junction_probability: float = 0.6
    junction_pull_out_probability: float = 0.6
    oncoming_traffic_density: float = 0.5
    max_speed_mps: float = 20.0
    max_lateral_accel_mps2: float = 2.5
    comfortable_decel_mps2: float = 3.0
    crf: int = 23

    def validate(self) -> GenerateConfig:
        _require(self.num_episodes >= 1, "num_episodes", self.num_episodes, "use >= 1")
        _require(self.duration_s >= 12.0, "duration_s", self.duration_s, "use >= 12 s")
        _require(len(self.cameras) >= 1, "cameras", self.cameras, "name at least one camera")
        _require(len(set(self.cameras)) == len(self.cameras), "cameras", self.cameras, "unique")
        for name in ("image_width", "image_height"):
            value = getattr(self, name)
            _require(value >= 16 and value % 2 == 0, name, value, "use an even number >= 16")
        _require(self.camera_fps > 0, "camera_fps", self.camera_fps, "use > 0")
        _require(self.telemetry_hz >= 10, "telemetry_hz", self.telemetry_hz, "use >= 10")
        return self


@dataclass
class PrepareConfig:
    """How raw episodes become training samples (`autoe2e prepare`)."""

    image_width: int = 112
    image_height: int = 64
    jpeg_quality: int = 90
    reactive_hz: float = 10.0
    #: 1 Hz world-model window offsets in seconds (history ends at the sample time).
    history_offsets_s: list[float] = field(default_factory=lambda: [-3.0, -2.0, -1.0, 0.0])
    future_offsets_s: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0])
    ego_history_steps: int = 64
    trajectory_steps: int = 64
    trajectory_dt_s: float = 0.1
    map_raster_size: int = 64
    map_resolution_m: float = 1.5
    #: Keep every n-th 10 Hz tick as a sample (1 = every tick).
    sample_stride: int = 1
    #: False: a sample whose windows are incomplete (episode edges, camera gaps, telemetry
    #: holes) is dropped and counted. True: it is kept when its current frames, its telemetry
    #: at the sample time and the first trajectory step exist; missing world-model frames get
    #: id -1, and history/future/ego/trajectory steps are flagged in the *_valid masks.
    pad_incomplete_windows: bool = False
    #: Max distance between a grid time and the chosen frame; None = half a source frame period.
    tolerance_s: float | None = None
    #: Longest hole (s) in one camera's grid before the episode is quarantined. Shorter gaps only
    #: drop (and count) the samples whose windows touch them; a longer one means the camera lost
    #: its stream, which a 1 s world-model step cannot straddle, so the recording is suspect.
    max_gap_s: float = 1.0
    #: Cameras to export, in this order; empty = the episode's own list.
    cameras: list[str] = field(default_factory=list)
    shard_target_bytes: int = 256 * 1024 * 1024
    row_group_target_bytes: int = 64 * 1024 * 1024
    #: FFmpeg threads per camera decoder (0 = FFmpeg's default for the codec).
    decode_threads: int = 0
    #: Cameras of one episode decoded concurrently in threads (PyAV and libswscale release the
    #: GIL: 4 cameras in 2 threads ran 1.85x faster on 2 cores). 0 = the CPU cores left per
    #: episode: cores / episodes prepared at once.
    camera_threads: int = 0
    #: Episodes prepared in parallel processes (0 = one per CPU core).
    workers: int = 0

    def validate(self) -> PrepareConfig:
        for name in ("image_width", "image_height"):
            value = getattr(self, name)
            _require(value >= 16, name, value, "use >= 16 pixels")
        _require(1 <= self.jpeg_quality <= 100, "jpeg_quality", self.jpeg_quality, "use 1..100")
        _require(self.reactive_hz > 0, "reactive_hz", self.reactive_hz, "use > 0")
        for name in ("history_offsets_s", "future_offsets_s"):
            offsets = getattr(self, name)
            _require(len(offsets) >= 1, name, offsets, "give at least one offset")
            _require(offsets == sorted(offsets), name, offsets, "sort offsets ascending")
            for off in offsets:
                ticks = off * self.reactive_hz
                _require(
                    abs(ticks - round(ticks)) < 1e-6, name, offsets, "offsets on the 10 Hz grid"
                )
        _require(
            self.history_offsets_s[-1] == 0.0,
            "history_offsets_s",
            self.history_offsets_s,
            "end the history window at 0.0 (the sample time)",
        )
        _require(
            self.future_offsets_s[0] > 0,
            "future_offsets_s",
            self.future_offsets_s,
            "future offsets must be > 0",
        )
        _require(self.ego_history_steps >= 2, "ego_history_steps", self.ego_history_steps, ">= 2")
        _require(self.trajectory_steps >= 1, "trajectory_steps", self.trajectory_steps, ">= 1")
        _require(self.map_raster_size >= 8, "map_raster_size", self.map_raster_size, ">= 8")
        _require(self.sample_stride >= 1, "sample_stride", self.sample_stride, ">= 1")
        for name in ("decode_threads", "camera_threads", "workers"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "use >= 0 (0 = auto)")
        _require(self.max_gap_s > 0, "max_gap_s", self.max_gap_s, "use a positive number of s")
        _require(
            self.tolerance_s is None or self.tolerance_s > 0,
            "tolerance_s",
            self.tolerance_s,
            "use a positive number of seconds or null",
        )
        for name in ("shard_target_bytes", "row_group_target_bytes"):
            value = getattr(self, name)
            _require(value >= 1 << 16, name, value, ">= 64 KiB (defaults: 256 MiB and 64 MiB)")
        return self


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
    #: (`benchmarks/model.py`); README, "Driving quality".
    stop_gradient_world_model: bool = True
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


@dataclass
class TrainConfig:
    """Optimisation settings for `autoe2e train`."""

    epochs: int = 4
    max_steps: int = 0  # 0 = no limit beyond epochs
    time_budget_s: float = 0.0  # 0 = no wall-clock limit
    batch_size: int = 32
    grad_accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    jepa_weight: float = 0.2
    #: Probability that a training sample's visual history is zeroed before the planner sees it
    #: (whole history, per sample; never at evaluation). See AutoE2E.forward for why.
    history_dropout: float = 0.5
    #: "none" = plain mean L1 over the 64 steps; "linear" = step k of T weighted (T - k + 1) / T
    #: (1 at 0.1 s down to 1/T at 6.4 s). Errors in metres grow with the horizon, so the plain
    #: mean is dominated by far steps that the current observation determines least; "linear"
    #: keeps the near-term, control-relevant part of the plan from being traded away for them.
    trajectory_time_weighting: str = "none"
    ema_momentum_start: float = 0.996
    ema_momentum_end: float = 1.0
    #: JEPA target encoder: "ema" (EMA of the online backbone, updated every optimizer step) or
    #: "frozen" (the backbone as initialised/loaded, never updated; V-JEPA 2-AC style).
    jepa_target: str = "ema"
    precision: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU; or "bf16" / "fp32"
    #: DataLoader worker processes per rank (each streams its own shards; 0 = in the process).
    num_workers: int = 0
    #: Samples each loader worker shuffles among (a shard is read whole, then its samples mix
    #: with those of earlier shards in this buffer). Larger = better mixing, more memory.
    shuffle_buffer: int = 2048
    #: Every rank must yield the same number of batches (DDP all-reduces each step): "pad"
    #: re-serves samples of a worker's own stream to fill it up, "drop" cuts every worker to
    #: the shortest. Either way the count is logged.
    uneven_batches: str = "pad"
    #: Batches each worker prepares ahead (only with num_workers > 0).
    prefetch_factor: int = 2
    #: Validate (full val split) every N optimizer steps as well as at each epoch end; 0 = only
    #: at epoch ends.
    val_every_steps: int = 0
    #: MLflow unreachable: False = warn (naming the URI) and log to a local fallback store;
    #: True = fail before training starts.
    tracking_strict: bool = False
    #: Initialisation and data order; not the split (`split_seed`).
    seed: int = 0
    #: Seed of the episode-id hash that splits train / val / test. Kept apart from `seed` so a
    #: run with another training seed is scored on the same test episodes as the champion.
    split_seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    log_every_steps: int = 10
    #: Save a resumable checkpoint every N optimizer steps (and always at the end); 0 = only at
    #: the end. A restarted run continues from the newest one.
    checkpoint_every_steps: int = 100
    #: Optimizer steps with a non-finite loss or gradient are skipped (and counted); this many
    #: in a row abort training with an error naming the step and the last good checkpoint.
    max_nonfinite_steps: int = 5
    experiment: str = "autoe2e"
    #: Warm start: weights from a checkpoint file/URI or a registered model
    #: ("models:/autoe2e-demo@champion"); the ModelConfig must match. Empty = random init.
    init_checkpoint: str = ""
    #: With a models:/...@alias URI: start from scratch (with a warning) when the alias does
    #: not exist yet, e.g. the first nightly run before any champion.
    init_checkpoint_optional: bool = False

    def validate(self) -> TrainConfig:
        _require(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _require(
            self.max_nonfinite_steps >= 1, "max_nonfinite_steps", self.max_nonfinite_steps, ">= 1"
        )
        _require(
            self.checkpoint_every_steps >= 0,
            "checkpoint_every_steps",
            self.checkpoint_every_steps,
            ">= 0 (0 = only at the end)",
        )
        _require(self.num_workers >= 0, "num_workers", self.num_workers, ">= 0")
        _require(self.shuffle_buffer >= 1, "shuffle_buffer", self.shuffle_buffer, ">= 1")
        _require(
            self.uneven_batches in ("pad", "drop"),
            "uneven_batches",
            self.uneven_batches,
            'use "pad" or "drop"',
        )
        _require(self.prefetch_factor >= 1, "prefetch_factor", self.prefetch_factor, ">= 1")
        _require(
            self.val_every_steps >= 0, "val_every_steps", self.val_every_steps, ">= 0 (0 = epochs)"
        )
        _require(self.grad_accum_steps >= 1, "grad_accum_steps", self.grad_accum_steps, ">= 1")
        _require(self.lr > 0, "lr", self.lr, "> 0")
        _require(
            0 <= self.history_dropout < 1, "history_dropout", self.history_dropout, "in [0, 1)"
        )
        _require(
            self.jepa_target in ("ema", "frozen"),
            "jepa_target",
            self.jepa_target,
            'use "ema" or "frozen"',
        )
        _require(
            self.precision in ("auto", "bf16", "fp32"),
            "precision",
            self.precision,
            "one of auto, bf16, fp32 (fp16 + GradScaler skipped every step upstream)",
        )
        _require(
            self.trajectory_time_weighting in ("none", "linear"),
            "trajectory_time_weighting",
            self.trajectory_time_weighting,
            "one of none, linear",
        )
        _require(
            0 <= self.val_fraction < 1
            and 0 < self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1,
            "val_fraction/test_fraction",
            (self.val_fraction, self.test_fraction),
            "fractions in [0, 1) that sum to < 1",
        )
        return self


#: The trained baselines the pipeline knows (values of ModelConfig.input_ablation).
TRAINED_BASELINES = ("ego_only", "no_camera")


@dataclass
class EvalConfig:
    """Evaluation on held-out episodes (`autoe2e evaluate`)."""

    batch_size: int = 64
    #: Horizons (seconds) at which displacement errors are reported.
    horizons_s: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 6.4])
    #: Promotion gate (upstream used ADE < 2.0 m and FDE < 4.0 m).
    max_ade_m: float = 2.0
    max_fde_m: float = 4.0
    #: The model must beat constant velocity: the upper end of the 95% episode-bootstrap CI of
    #: (model - constant velocity) ADE must be below -cv_margin_m.
    cv_margin_m: float = 0.0
    #: ... and the current champion, the same way on the same samples: (model - champion) ADE
    #: CI upper end below -champion_margin_m.
    champion_margin_m: float = 0.0
    #: Registered model every evaluated checkpoint becomes a version of (with a tracker);
    #: empty = "autoe2e-<ModelConfig.name>". The alias `champion` marks the promoted version,
    #: `challenger` the latest one that was not promoted.
    registered_model: str = ""
    #: Trained baselines scored on the same samples and reported next to the model:
    #: name -> checkpoint path/URI (e.g. {"ego_only": ".../best.pt", "no_camera": ...}, models
    #: trained with ModelConfig.input_ablation). Empty = only the analytic baselines.
    baseline_checkpoints: dict[str, str] = field(default_factory=dict)
    #: Camera-free baselines the pipeline (CLI `run`/`demo` and the Flyte workflow) trains
    #: beside the model, for the model's number of steps, and scores here: "ego_only" (ego
    #: history alone) and/or "no_camera" (ego + map). Empty = train none.
    trained_baselines: list[str] = field(default_factory=lambda: list(TRAINED_BASELINES))
    #: Test-time ablations of the model (cameras blanked / shuffled, world-model history
    #: zeroed) and world-model diagnostics; each ablation costs one more pass of the planner.
    ablations: bool = True

    def validate(self) -> EvalConfig:
        unknown = sorted(set(self.trained_baselines) - set(TRAINED_BASELINES))
        _require(
            not unknown,
            "trained_baselines",
            self.trained_baselines,
            f"unknown {unknown}; choose from {list(TRAINED_BASELINES)} (or [] for none)",
        )
        _require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        return self


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass, rejecting unknown keys with a message that lists the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} field(s) {unknown}; known fields are {sorted(known)}"
        )
    return cls(**data)


def load_json(cls: type[T], path: str | Path) -> T:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
    return from_dict(cls, data)
