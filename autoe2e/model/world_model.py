"""World Action Model (1 Hz): a compact visual history and JEPA-style future-feature prediction.

Frames are encoded from one of the shared backbone's feature maps (`world_model_stage`, by
default the last; `world_model_frames`: the spatial mean per view, or its cells, each with its
own weights; then an attention pool over the views with camera embeddings) into
`frame_embed_dim` vectors; the last `history_len` of them, concatenated, form the
`visual_history` the planner consumes. One small predictor head per future step predicts each
view's target feature map (the backbone layer
`ModelConfig.target_layer` names; by default the last map, or the bottleneck before a pointwise
expansion) pooled to `target_grid` x `target_grid`; the targets come from an EMA copy of the
backbone (`TargetEncoder`), layer-normalised per location.

The heads predict the *change* from the current frame's target features (the anchor), not the
features themselves: `prediction_k = anchor + head_k(history)`, with each head's output layer
zero-initialised. At initialisation the prediction is exactly the "copy the last frame" null
predictor, so what the heads learn is what the world model knows about how the scene evolves.
Measured before this (benchmarks/quality.py, seed 7, 400 steps): predicting the features
directly lost to copy-last at the 1 s and 2 s horizons (L1 ratio 1.27 and 1.08); the targets
of a planner-trained backbone vary little around their mean (cosine 0.998 to it), so an
absolute regression spent its capacity on the common part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autoe2e.config import ModelConfig
from autoe2e.model.layers import AttentionPool, mlp

#: world_model_frames="cells": each view's map is pooled to at most this grid (rows, columns;
#: MobileNetV3's stride-8 map of the demo's 64x112 frames, 8x14, as it is), and each cell
#: reduced to at most CELL_CHANNELS channels before the view's projection, which gives every
#: cell its own weights.
MAX_CELL_GRID = (8, 14)
CELL_CHANNELS = 32


class WorldActionModel(nn.Module):
    def __init__(
        self, cfg: ModelConfig, frame_shape: tuple[int, int, int], target_channels: int
    ) -> None:
        """`frame_shape`: (channels, rows, columns) of the backbone map it reads per view."""
        super().__init__()
        dim = cfg.embed_dim
        self.channels = target_channels
        self.grid = cfg.target_grid
        self.history_len = cfg.history_len
        map_channels, rows, cols = frame_shape
        self.cells = cfg.world_model_frames == "cells"
        if self.cells:  # each cell's own weights in view_proj: a view token knows where
            self.cell_grid = (min(rows, MAX_CELL_GRID[0]), min(cols, MAX_CELL_GRID[1]))
            cell_channels = min(map_channels, CELL_CHANNELS)
            self.cell_proj = nn.Linear(map_channels, cell_channels)
            cells = self.cell_grid[0] * self.cell_grid[1]
            self.view_proj = nn.Linear(cells * cell_channels, dim)
        else:
            self.view_proj = nn.Linear(map_channels, dim)
        self.camera_embed = nn.Embedding(cfg.max_cameras, dim)
        self.view_pool = AttentionPool(dim, cfg.attention_heads)
        self.frame_out = nn.Linear(dim, cfg.frame_embed_dim)
        out = target_channels * self.grid * self.grid
        self.predictors = nn.ModuleList(
            [mlp(cfg.visual_history_dim + dim, 2 * dim, out) for _ in range(cfg.future_steps)]
        )
        for head in self.predictors:  # start as the copy-last-frame predictor (see module doc)
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def encode_frames(self, maps: torch.Tensor, camera_index: torch.Tensor) -> torch.Tensor:
        """Per-view feature maps `[N, V, C, h, w]` of one time step -> frame embeddings `[N, E]`.

        This is the single per-frame function used by both the windowed training path and the
        rolling-buffer inference path (`VisualHistoryBuffer`), so both see the same embedding.
        """
        if self.cells:
            grid = F.adaptive_avg_pool2d(maps.flatten(0, 1), self.cell_grid)  # [N*V, C, r, c]
            cells = self.cell_proj(grid.flatten(2).transpose(1, 2))  # [N*V, cells, channels]
            views = cells.reshape(*maps.shape[:2], -1)
        else:
            views = maps.mean(dim=(-2, -1))
        tokens = self.view_proj(views) + self.camera_embed(camera_index)
        return self.frame_out(self.view_pool(tokens))

    def encode_history(
        self, maps: torch.Tensor, camera_index: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """maps `[B, H, V, C, h, w]` (oldest first), valid `[B, H]` -> visual history `[B, H*E]`.

        Missing history frames (before the episode start) contribute zeros.
        """
        b, h, v = maps.shape[:3]
        index = camera_index[:, None, :].expand(b, h, v).reshape(b * h, v)
        frames = self.encode_frames(maps.reshape(b * h, v, *maps.shape[3:]), index).view(b, h, -1)
        frames = frames * valid[:, :, None].to(frames.dtype)
        return frames.reshape(b, -1)

    def predict(
        self, visual_history: torch.Tensor, camera_index: torch.Tensor, anchor: torch.Tensor
    ) -> torch.Tensor:
        """-> predicted future features `[B, F, V, C, g, g]` for the views in `camera_index`.

        `anchor` `[B, V, C, g, g]`: the current frame's target features; each head adds its
        predicted change to it.
        """
        b, v = camera_index.shape
        query = torch.cat(
            [visual_history[:, None, :].expand(b, v, -1), self.camera_embed(camera_index)], dim=-1
        )
        deltas = torch.stack([head(query) for head in self.predictors], dim=1)
        deltas = deltas.view(b, len(self.predictors), v, self.channels, self.grid, self.grid)
        return anchor[:, None].to(deltas.dtype) + deltas


def jepa_targets(feature_maps: torch.Tensor, grid: int) -> torch.Tensor:
    """Feature maps `[N, C, h, w]` -> pooled `[N, C, g, g]`, layer-normalised over C per location.

    Normalising per location keeps the target scale fixed while the EMA encoder drifts, so an
    all-zeros prediction has a known L1 (~0.8) to compare against.
    """
    pooled = F.adaptive_avg_pool2d(feature_maps.float(), grid)
    normed = F.layer_norm(pooled.permute(0, 2, 3, 1), (pooled.shape[1],))
    return normed.permute(0, 3, 1, 2).contiguous()


class VisualHistoryBuffer:
    """Rolling FIFO of frame embeddings for 1 Hz online inference; reset between sequences.

    Push one frame embedding per world-model tick; `visual_history()` returns the same layout the
    windowed training path builds (oldest first, zeros for frames not seen yet).
    """

    def __init__(self, history_len: int, frame_dim: int) -> None:
        self.history_len = history_len
        self.frame_dim = frame_dim
        self._frames: list[torch.Tensor] = []

    def reset(self) -> None:
        self._frames.clear()

    def push(self, frame_embedding: torch.Tensor) -> None:
        if frame_embedding.shape[-1] != self.frame_dim:
            raise ValueError(
                f"frame embedding has size {frame_embedding.shape[-1]}, expected {self.frame_dim}"
            )
        self._frames.append(frame_embedding)
        del self._frames[: -self.history_len]

    def visual_history(self) -> torch.Tensor:
        if not self._frames:
            raise ValueError("visual history buffer is empty: push a frame embedding first")
        missing = self.history_len - len(self._frames)
        pad = [torch.zeros_like(self._frames[0])] * missing
        return torch.cat(pad + self._frames, dim=-1)
