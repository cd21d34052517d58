"""Small building blocks shared by the planner and the world model."""

from __future__ import annotations

import torch
from torch import nn


class AttentionPool(nn.Module):
    """Pool a variable number of view tokens `[B, V, D]` into one vector `[B, D]`.

    A learned query attends over the views, so the result does not depend on how many cameras a
    rig has or in which order they come (camera identity enters through the camera embeddings
    that the caller adds to the tokens).
    """

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.query, std=0.02)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(tokens.shape[0], -1, -1)
        pooled, _ = self.attn(query, tokens, tokens, need_weights=False)
        return self.norm(pooled[:, 0])


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
