"""The AutoE2E model: shared backbone + reactive planner + World Action Model + EMA target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoe2e.config import ModelConfig
from autoe2e.model.backbone import Backbone
from autoe2e.model.planner import ReactivePlanner
from autoe2e.model.target_encoder import TargetEncoder
from autoe2e.model.world_model import WorldActionModel, jepa_targets


class ModelInputError(ValueError):
    """A batch does not have the shapes the model was configured for; names expected vs actual."""


@dataclass
class ModelOutput:
    trajectory: torch.Tensor  # [B, T, 2]
    visual_history: torch.Tensor  # [B, H * frame_embed_dim]
    jepa_prediction: torch.Tensor | None  # [B, F, V, C, g, g]; None without the world model
    #: the current frame's target features the prediction starts from [B, V, C, g, g]; also the
    #: "copy the last frame" null predictor, so evaluation does not encode the frame again
    jepa_anchor: torch.Tensor | None = None
    #: the same samples planned with the visual history zeroed [B, T, 2] (training with
    #: `TrainConfig.history_loss="paired"`); None unless asked for
    trajectory_without_history: torch.Tensor | None = None


def _expect(batch: dict[str, Any], key: str, shape: tuple[int | None, ...]) -> torch.Tensor:
    if key not in batch:
        raise ModelInputError(f"batch has no {key!r} (keys: {sorted(batch)}); the model needs it")
    value = batch[key]
    if not isinstance(value, torch.Tensor):
        raise ModelInputError(f"batch[{key!r}] is {type(value).__name__}, expected a tensor")
    ok = value.dim() == len(shape) and all(
        want is None or want == got for want, got in zip(shape, value.shape, strict=False)
    )
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ModelInputError(f"batch[{key!r}] has shape {list(value.shape)}, expected {want}")
    return value


class AutoE2E(nn.Module):
    """Reactive planner fed by the world model's detached visual history.

    `forward(batch)` takes the dataset's collated dict. The current frame is encoded once with
    gradients (the planner trains the backbone); the world model sees backbone features detached
    when `stop_gradient_world_model` (JEPA gradients into the shared backbone floored the
    trajectory loss upstream), and reuses the current frame's features for history offset 0.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.backbone = Backbone(cfg)
        channels = self.backbone.channels
        self.planner = ReactivePlanner(cfg, channels)
        frame_shape = self.backbone.stage_shape(
            cfg.world_model_stage, cfg.image_height, cfg.image_width
        )
        self.world_model = WorldActionModel(cfg, frame_shape, self.backbone.target_channels)
        self.target = TargetEncoder(self.backbone)

    # ------------------------------------------------------------------ inputs
    def _check_views(self, images: torch.Tensor, camera_index: torch.Tensor) -> None:
        cfg = self.cfg
        v = images.shape[1]
        if v > cfg.max_cameras:
            raise ModelInputError(
                f"batch has {v} cameras but the model supports at most max_cameras="
                f"{cfg.max_cameras}; raise ModelConfig.max_cameras or drop cameras"
            )
        if camera_index.shape != images.shape[:2]:
            raise ModelInputError(
                f"camera_index has shape {list(camera_index.shape)}, expected "
                f"{list(images.shape[:2])} (one index per view)"
            )
        if camera_index.numel() and (
            int(camera_index.min()) < 0 or int(camera_index.max()) >= cfg.max_cameras
        ):
            raise ModelInputError(
                f"camera_index values must be in [0, {cfg.max_cameras}), got "
                f"{int(camera_index.min())}..{int(camera_index.max())}"
            )

    def reactive_inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """Validated (images, camera_index, map_raster, map_valid, ego_history) of a batch.

        Shared by `forward` and `AutoE2EPolicy.step`, so both reject the same bad inputs.
        """
        cfg = self.cfg
        h, w = cfg.image_height, cfg.image_width
        images = _expect(batch, "images", (None, None, 3, h, w))
        b, v = images.shape[:2]
        camera_index = _expect(batch, "camera_index", (b, v)).long()
        self._check_views(images, camera_index)
        r = cfg.map_raster_size
        map_raster = _expect(batch, "map_raster", (b, cfg.map_channels, r, r))
        map_valid = _expect(batch, "map_valid", (b,))
        ego = _expect(batch, "ego_history", (b, cfg.ego_history_steps, cfg.ego_features))
        return images, camera_index, map_raster, map_valid, ego

    def _history_inputs(self, batch: dict[str, Any], b: int, v: int) -> tuple[torch.Tensor, ...]:
        cfg = self.cfg
        for key in ("history_images", "history_valid"):
            value = batch.get(key)
            is_window = isinstance(value, torch.Tensor) and value.dim() >= 2
            if is_window and value.shape[1] != cfg.history_len:
                raise ModelInputError(
                    f"batch[{key!r}] holds a history window of {value.shape[1]} frames, "
                    f"expected history_len={cfg.history_len}; prepare the data with "
                    f"{cfg.history_len} history offsets or set ModelConfig.history_len"
                )
        h, w = cfg.image_height, cfg.image_width
        hist = _expect(batch, "history_images", (b, cfg.history_len, v, 3, h, w))
        valid = _expect(batch, "history_valid", (b, cfg.history_len)).bool()
        return hist, valid

    # ------------------------------------------------------------------ encoders
    def feature_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[B, ..., 3, H, W]` -> (the last-stage maps the planner pools, the maps the world
        model reads: `world_model_stage`), each `[B, ..., C, h, w]`, from one backbone pass."""
        stages = self.backbone.stages(images.reshape(-1, *images.shape[-3:]))
        lead = images.shape[:-3]
        last, read = stages[-1], stages[self.cfg.world_model_stage]
        return last.reshape(*lead, *last.shape[1:]), read.reshape(*lead, *read.shape[1:])

    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """`[B, ..., 3, H, W]` -> spatially averaged last-stage features `[B, ..., C]`."""
        return self.feature_maps(images)[0].mean(dim=(-2, -1))

    def forward(
        self,
        batch: dict[str, Any],
        *,
        history_off: bool = False,
        history_keep: torch.Tensor | None = None,
        plan_without_history: bool = False,
    ) -> ModelOutput:
        """`history_off` zeroes the visual history the planner sees (a test-time ablation:
        what the world model's history contributes); the JEPA prediction is unaffected.

        `history_keep` `[B]` bool (training, `TrainConfig.history_dropout`): the samples whose
        history the planner sees; the others get zeros, as with `history_off`. The
        history reaches the planner detached (unless `planner_trains_history`), as features the
        JEPA loss keeps reshaping; without dropout the planner came to lean on them in place of
        its own current-frame path (zeroing the history at test cost +0.87 m) and ended worse
        than the same planner with no history at all (quality benchmark world 7, test ADE@3s
        0.572 vs 0.487 m). With half the samples planned without it, the current-frame path has
        to carry the plan and the history adds to it: 0.485 (residual history), 0.458 with
        history_fusion="fused".

        `plan_without_history` (training, `TrainConfig.history_loss="paired"`): also plan every
        sample with the history zeroed (`ModelOutput.trajectory_without_history`), from the
        same backbone features; with the world model off there is no history to drop.
        """
        cfg = self.cfg
        images, camera_index, map_raster, map_valid, ego = self.reactive_inputs(batch)
        b, v = images.shape[:2]
        maps = None
        if cfg.input_ablation == "none":
            last, maps = self.feature_maps(images)  # with gradients for the planner
            current = last.mean(dim=(-2, -1))  # [B, V, C]
        else:  # a camera-free baseline: no pixel reaches the planner (nor costs compute)
            current = images.new_zeros(b, v, self.backbone.channels, dtype=torch.float32)
        if cfg.input_ablation == "ego_only":
            map_raster, map_valid = torch.zeros_like(map_raster), torch.zeros_like(map_valid)
        if cfg.use_world_model:
            hist, valid = self._history_inputs(batch, b, v)
            visual_history = self._visual_history(hist, valid, maps, camera_index)
            anchor = self.jepa_targets(images[:, None])[:, 0]  # the current frame's targets
            prediction = self.world_model.predict(visual_history, camera_index, anchor)
        else:
            visual_history = current.new_zeros(b, cfg.visual_history_dim)
            prediction = anchor = None
        planner_history = visual_history if cfg.planner_trains_history else visual_history.detach()
        if history_off:
            planner_history = torch.zeros_like(planner_history)
        elif history_keep is not None:
            planner_history = planner_history * history_keep.reshape(b, 1).to(planner_history)
        trajectory = self.planner(
            current, camera_index, map_raster, map_valid, ego, planner_history
        )
        without = None
        if plan_without_history and cfg.use_world_model:
            blank = torch.zeros_like(planner_history)
            without = self.planner(current, camera_index, map_raster, map_valid, ego, blank)
        return ModelOutput(trajectory, visual_history, prediction, anchor, without)

    def _visual_history(
        self,
        history: torch.Tensor,
        valid: torch.Tensor,
        current: torch.Tensor,
        camera_index: torch.Tensor,
    ) -> torch.Tensor:
        """`current`: the current frame's world-model maps `[B, V, C, h, w]` (offset 0 of the
        history is the current frame: its features are reused, not encoded again)."""
        past_images = history[:, :-1]
        if self.cfg.stop_gradient_world_model:
            with torch.no_grad():
                past = self.feature_maps(past_images)[1] if past_images.shape[1] else None
            now = current.detach()
        else:
            past = self.feature_maps(past_images)[1] if past_images.shape[1] else None
            now = current
        maps = now[:, None] if past is None else torch.cat([past, now[:, None]], dim=1)
        return self.world_model.encode_history(maps, camera_index, valid)

    @torch.no_grad()
    def jepa_targets(self, images: torch.Tensor) -> torch.Tensor:
        """Target features of frames `[B, F, V, 3, H, W]` -> `[B, F, V, C, g, g]` (no grad)."""
        lead = images.shape[:-3]
        feats = self.target(images.reshape(-1, *images.shape[-3:]))
        targets = jepa_targets(feats, self.cfg.target_grid)
        return targets.reshape(*lead, *targets.shape[1:])

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
