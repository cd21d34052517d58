"""Reactive planner (10 Hz): cameras + map raster + ego history + visual history -> trajectory."""

from __future__ import annotations

import torch
from torch import nn

from autoe2e.config import ModelConfig
from autoe2e.model.layers import AttentionPool, mlp
from autoe2e.model.trajectory import bernstein_basis, integrate_controls

#: Divisors that bring (speed m/s, accel m/s^2, yaw rate rad/s, curvature 1/m) to ~unit range.
EGO_SCALES = (33.0, 8.0, 0.5, 0.1)
#: Physical size of one unit of the head's output (acceleration m/s^2, yaw-rate rad/s).
ACCEL_SCALE = 2.0
YAW_RATE_SCALE = 0.2


class MapEncoder(nn.Module):
    """Small CNN for the rasterised map; its output is gated by `map_valid` (0 = no map)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(32, dim, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, raster: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.net(raster) * valid.reshape(-1, 1).to(raster.dtype)


class ReactivePlanner(nn.Module):
    """Fuses the per-view features with map, egomotion and the world model's visual history."""

    def __init__(self, cfg: ModelConfig, backbone_channels: int) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.dt = cfg.trajectory_dt_s
        self.num_coeffs = cfg.trajectory_basis_size
        self.view_proj = nn.Linear(backbone_channels, dim)
        self.camera_embed = nn.Embedding(cfg.max_cameras, dim)
        self.view_pool = AttentionPool(dim, cfg.attention_heads)
        self.map_encoder = MapEncoder(cfg.map_channels, dim)
        self.ego_encoder = nn.Sequential(
            nn.Flatten(), mlp(cfg.ego_history_steps * cfg.ego_features, 2 * dim, dim)
        )
        self.register_buffer("ego_scale", torch.tensor(EGO_SCALES[: cfg.ego_features]))
        # Zero-init: the visual history starts with no influence, so an untrained world model
        # cannot make the planner worse than imitation alone (an upstream failure).
        self.history_proj = nn.Linear(cfg.visual_history_dim, dim)
        nn.init.zeros_(self.history_proj.weight)
        nn.init.zeros_(self.history_proj.bias)
        self.history_fused = cfg.history_fusion == "fused"
        inputs = 4 if self.history_fused else 3
        self.fuse = nn.Sequential(
            nn.Linear(inputs * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim), nn.GELU()
        )
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * self.num_coeffs))
        # Zero-init output: the first prediction is the constant turn rate and velocity rollout.
        nn.init.zeros_(self.head[1].weight)
        nn.init.zeros_(self.head[1].bias)
        self.register_buffer("basis", bernstein_basis(self.num_coeffs, cfg.trajectory_steps))

    def forward(
        self,
        view_features: torch.Tensor,
        camera_index: torch.Tensor,
        map_raster: torch.Tensor,
        map_valid: torch.Tensor,
        ego_history: torch.Tensor,
        visual_history: torch.Tensor,
    ) -> torch.Tensor:
        """view_features `[B, V, C]` -> trajectory `[B, T, 2]` (x forward, y left, metres)."""
        tokens = self.view_proj(view_features) + self.camera_embed(camera_index)
        vision = self.view_pool(tokens)
        ego = ego_history.float()
        ego_scaled = ego / self.ego_scale
        parts = [vision, self.map_encoder(map_raster, map_valid), self.ego_encoder(ego_scaled)]
        history = self.history_proj(visual_history)
        if self.history_fused:
            hidden = self.fuse(torch.cat([*parts, history], dim=-1))
        else:
            hidden = self.fuse(torch.cat(parts, dim=-1)) + history
        coeffs = self.head(hidden).float().view(-1, 2, self.num_coeffs)
        controls = coeffs @ self.basis  # [B, 2, T]
        speed0 = ego[:, -1, 0]
        yaw_rate0 = ego[:, -1, 2]
        accel = ACCEL_SCALE * controls[:, 0]
        yaw_rate = yaw_rate0[:, None] + YAW_RATE_SCALE * controls[:, 1]
        return integrate_controls(speed0, accel, yaw_rate, self.dt)
