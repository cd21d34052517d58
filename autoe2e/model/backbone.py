"""The one image backbone shared by the planner and the world model.

A single timm feature extractor keeps the CPU demo cheap (every camera image is encoded once per
step) and lets the world model reuse the planner's current-frame features instead of running the
network twice. Only the last stage is used; weights come from a local file or random init so
nothing is ever downloaded during tests or in air-gapped clusters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from autoe2e.config import ConfigError, ModelConfig

logger = logging.getLogger(__name__)


class Backbone(nn.Module):
    """`[N, 3, H, W]` images (uint8 0..255, or float in [0, 1]) -> last-stage feature map
    `[N, C, h, w]`. Data loaders hand over uint8 so that host memory, collation and the
    host-to-device copy carry a quarter of the bytes; the conversion happens here, on device."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        try:
            self.net = timm.create_model(
                cfg.backbone, features_only=True, pretrained=cfg.pretrained
            )
        except RuntimeError as exc:
            raise ConfigError(
                f"config field backbone={cfg.backbone!r} is not a timm model with features_only "
                f"support ({exc}); use e.g. 'mobilenetv3_small_050' or 'resnet10t'"
            ) from exc
        self.channels: int = int(self.net.feature_info.channels()[-1])
        #: module (inside `net`) whose output the JEPA targets use; None = the last feature map
        self.target_layer: str | None = resolve_target_layer(self.net, cfg.target_layer)
        # ImageNet statistics: the usual convention for timm weights, harmless for random init.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if cfg.weights_path:
            self.load_local_weights(cfg.weights_path)
        self.target_channels: int = self.channels
        if self.target_layer is not None:
            blank = self._blank_pass(self.target_features, cfg.image_height, cfg.image_width)
            self.target_channels = int(blank.shape[1])

    @torch.no_grad()
    def _blank_pass(self, fn: Callable[[torch.Tensor], Any], height: int, width: int) -> Any:
        """`fn` of one blank `height` x `width` image in eval mode: how shapes that depend on
        the network (a target layer's channels, a stage's grid) are read without touching
        BatchNorm running statistics."""
        was_training = self.training
        self.eval()
        try:
            return fn(torch.zeros(1, 3, height, width))
        finally:
            self.train(was_training)

    def load_local_weights(self, path: str) -> None:
        """Load a backbone state dict from a local file (no hub access)."""
        file = Path(path)
        if not file.is_file():
            raise ConfigError(
                f"config field weights_path={path!r} does not exist; give a local state-dict "
                "file or leave it empty for random init"
            )
        state = torch.load(file, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        result = self.net.load_state_dict(state, strict=False)
        own = set(self.net.state_dict())
        matched = own - set(result.missing_keys)
        if not matched:
            raise ConfigError(
                f"weights_path={path!r} shares no parameter names with backbone "
                f"{type(self.net).__name__}; save the state dict of the same timm model"
            )
        logger.info(
            "loaded %d/%d backbone tensors from %s (%d unexpected keys ignored)",
            len(matched),
            len(own),
            path,
            len(result.unexpected_keys),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(images)[-1]

    def stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's feature map, finest first (timm's feature order)."""
        if images.dtype == torch.uint8:
            images = images.to(self.mean.dtype).div_(255.0)
        x = (images - self.mean) / self.std
        return list(self.net(x))

    def stage_shape(self, index: int, height: int, width: int) -> tuple[int, int, int]:
        """(channels, rows, columns) of stage `index`'s map for `height` x `width` inputs."""
        count = len(self.net.feature_info.channels())
        if not -count <= index < count:
            raise ConfigError(
                f"config field world_model_stage={index} is not a stage of backbone "
                f"{type(self.net).__name__}, which has {count} (use -1 for the last, or 0.."
                f"{count - 1}; reductions {self.net.feature_info.reduction()})"
            )
        shape = self._blank_pass(self.stages, height, width)[index].shape
        return int(shape[1]), int(shape[2]), int(shape[3])

    def target_features(self, images: torch.Tensor) -> torch.Tensor:
        """The feature map the JEPA targets are made of (`target_layer`'s output)."""
        if self.target_layer is None:
            return self.forward(images)
        captured: list[torch.Tensor] = []
        layer = self.net.get_submodule(self.target_layer)
        handle = layer.register_forward_hook(lambda _module, _inputs, out: captured.append(out))
        try:
            self.forward(images)
        finally:
            handle.remove()
        if not captured:
            raise ConfigError(
                f"config field target_layer={self.target_layer!r} names a module the backbone's "
                'forward pass never runs; use "auto", "last" or one of its stages'
            )
        return captured[-1]


def _is_pointwise(module: nn.Module) -> bool:
    """Every convolution in `module` is 1x1 with stride 1 (a per-location channel mixing)."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return bool(convs) and all(c.kernel_size == (1, 1) and c.stride == (1, 1) for c in convs)


def resolve_target_layer(net: nn.Module, setting: str) -> str | None:
    """`ModelConfig.target_layer` -> a module name inside `net`, or None for the last map."""
    if setting == "last":
        return None
    names = dict(net.named_modules())
    if setting != "auto":
        if setting not in names or not setting:
            stages = ", ".join(net.feature_info.module_name())
            raise ConfigError(
                f"config field target_layer={setting!r} is not a module of the backbone; use "
                f'"auto", "last" or a module name such as one of its stages ({stages})'
            )
        return setting
    # timm flattens some feature names ("stages.3" becomes module "stages_3"): those have no
    # parent to look into, and only a nested last stage can be an expansion of its sibling.
    last = net.feature_info.module_name()[-1]
    parent_name, _, child = last.rpartition(".")
    if last not in names or not parent_name or not _is_pointwise(names[last]):
        return None
    siblings = [name for name, _ in names[parent_name].named_children()]
    position = siblings.index(child)
    return f"{parent_name}.{siblings[position - 1]}" if position > 0 else None
