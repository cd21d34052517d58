"""EMA target encoder for the JEPA loss.

The target is an exponential moving average of the online backbone, kept in fp32 (a 1e-3
relative update vanishes in bf16) and always in eval mode (BatchNorm running statistics of a
target must not be updated by target forward passes; they are averaged from the online model
like every other tensor). `update` must be called once per *optimizer* step, not per micro-batch.
"""

from __future__ import annotations

import torch
from timm.utils import ModelEmaV3
from torch import nn


def ema_momentum(progress: float, start: float, end: float) -> float:
    """Linear momentum schedule start -> end as training progress goes 0 -> 1 (I-JEPA style)."""
    frac = min(max(progress, 0.0), 1.0)
    return start + (end - start) * frac


class TargetEncoder(nn.Module):
    """Holds the EMA copy of a module; never trained by the optimizer, never in train mode."""

    def __init__(self, online: nn.Module, momentum: float = 0.996) -> None:
        super().__init__()
        self.ema = ModelEmaV3(online, decay=momentum, dtype=torch.float32)
        self.ema.module.requires_grad_(False)
        self.ema.module.eval()
        self.updates = 0

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def train(self, mode: bool = True) -> TargetEncoder:
        super().train(mode)
        self.ema.module.eval()
        return self

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online (parameters and float buffers)."""
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        self.ema.decay = momentum
        self.ema.update(online)
        self.updates += 1

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The EMA backbone's target feature map (`Backbone.target_features`)."""
        images = images if images.dtype == torch.uint8 else images.float()
        return self.ema.module.target_features(images)
