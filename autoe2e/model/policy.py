"""Stateful deployment policy: the 10 Hz planner fed by a 1 Hz rolling visual history.

Training uses the stateless windowed path (`AutoE2E.forward` re-encodes the history frames of
every sample). On a vehicle that would cost `history_len` backbone passes per view at 10 Hz, so
the policy encodes one new multi-view frame per world-model period, keeps the embeddings in a
`VisualHistoryBuffer`, and reuses them for the planner until the next tick. Both paths call the
same `feature_maps` -> `WorldActionModel.encode_frames` functions, so they give the same
visual history (tested); frames not seen yet count as zeros, exactly like `history_valid=False`.
"""

from __future__ import annotations

import math

import torch

from autoe2e.model.autoe2e_model import AutoE2E, ModelInputError
from autoe2e.model.world_model import VisualHistoryBuffer

#: Slack for comparing float timestamps with world-model ticks (10 Hz clocks drift by ~1e-9).
_TICK_EPS_S = 1e-6


def _batched(value: torch.Tensor | float | bool, dims: int, name: str) -> torch.Tensor:
    """Add the batch axis to one sample's tensor (`dims` = its rank without batch)."""
    tensor = torch.as_tensor(value)
    if tensor.dim() == dims:
        return tensor[None]
    if tensor.dim() == dims + 1 and tensor.shape[0] == 1:
        return tensor
    raise ModelInputError(
        f"{name} has shape {list(tensor.shape)}; AutoE2EPolicy.step takes one sample, "
        f"expected {dims} dims (or {dims + 1} with a leading batch of 1)"
    )


class AutoE2EPolicy:
    """Wraps a trained `AutoE2E` for closed-loop use; call `reset()` between sequences.

    `step(...)` is called at the planner rate (10 Hz) with one sample and returns the planned
    trajectory `[T, 2]` (ego frame, metres). Whenever `timestamp_s` reaches the next world-model
    tick (every `world_model_period_s`, starting at the first step) the current frame is encoded
    into the rolling buffer; between ticks the planner sees the buffered (detached) history.
    """

    def __init__(self, model: AutoE2E, world_model_period_s: float = 1.0) -> None:
        if world_model_period_s <= 0:
            raise ValueError(f"world_model_period_s={world_model_period_s} must be > 0")
        self.model = model.eval()
        self.period_s = world_model_period_s
        cfg = model.cfg
        self.buffer = VisualHistoryBuffer(cfg.history_len, cfg.frame_embed_dim)
        self._next_tick_s: float | None = None
        self._last_timestamp_s: float | None = None
        #: Visual history `[1, history_len * frame_embed_dim]` used by the last `step`.
        self.last_visual_history: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the history (start of a new sequence / after a gap in the data)."""
        self.buffer.reset()
        self._next_tick_s = None
        self._last_timestamp_s = None
        self.last_visual_history = None

    def _ticks_due(self, timestamp_s: float) -> int:
        """World-model ticks reached by `timestamp_s` (0 between ticks; >1 after a gap)."""
        if self._last_timestamp_s is not None and timestamp_s < self._last_timestamp_s:
            raise ValueError(
                f"timestamp_s={timestamp_s} is earlier than the previous step "
                f"({self._last_timestamp_s}); call reset() before a new sequence"
            )
        self._last_timestamp_s = timestamp_s
        if self._next_tick_s is None:
            self._next_tick_s = timestamp_s + self.period_s
            return 1
        if timestamp_s + _TICK_EPS_S < self._next_tick_s:
            return 0
        due = 1 + math.floor((timestamp_s + _TICK_EPS_S - self._next_tick_s) / self.period_s)
        self._next_tick_s += due * self.period_s
        return due

    @torch.inference_mode()
    def step(
        self,
        images: torch.Tensor,
        camera_index: torch.Tensor,
        map_raster: torch.Tensor,
        map_valid: torch.Tensor | float | bool,
        ego_history: torch.Tensor,
        timestamp_s: float,
    ) -> torch.Tensor:
        """One planner tick: images `[V, 3, H, W]` (or `[1, V, 3, H, W]`), uint8 or float in
        [0, 1] -> trajectory `[T, 2]`."""
        model = self.model
        device = model.planner.basis.device
        batch = {
            "images": _batched(images, 4, "images"),
            "camera_index": _batched(camera_index, 1, "camera_index"),
            "map_raster": _batched(map_raster, 3, "map_raster"),
            "map_valid": _batched(map_valid, 0, "map_valid").float(),
            "ego_history": _batched(ego_history, 2, "ego_history").float(),
        }
        batch = {k: v.to(device) for k, v in batch.items()}
        images_b, cams, raster, map_ok, ego = model.reactive_inputs(batch)
        last, maps = model.feature_maps(images_b)  # [1, V, C, h, w] each
        current = last.mean(dim=(-2, -1))  # [1, V, C]
        due = self._ticks_due(float(timestamp_s))
        if model.cfg.use_world_model:
            if due:
                frame = model.world_model.encode_frames(maps, cams)
                for _ in range(due - 1):  # ticks skipped by a gap: unseen frames are zeros
                    self.buffer.push(torch.zeros_like(frame))
                self.buffer.push(frame)
            history = self.buffer.visual_history()
        else:
            history = current.new_zeros(1, model.cfg.visual_history_dim)
        self.last_visual_history = history
        return model.planner(current, cams, raster, map_ok, ego, history)[0]
