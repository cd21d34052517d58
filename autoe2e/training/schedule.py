"""Learning-rate and progress schedules.

Progress is the larger of (optimizer steps / planned steps) and (elapsed / time budget), so a
wall-clock-limited CPU demo still finishes its cosine decay and EMA momentum ramp instead of
stopping at a high learning rate.
"""

from __future__ import annotations

import math


def progress(step: int, total_steps: int, elapsed_s: float, time_budget_s: float) -> float:
    frac = step / total_steps if total_steps > 0 else 0.0
    if time_budget_s > 0:
        frac = max(frac, elapsed_s / time_budget_s)
    return min(max(frac, 0.0), 1.0)


def lr_factor(step: int, warmup_steps: int, frac: float, floor: float = 0.05) -> float:
    """Linear warmup over `warmup_steps`, then cosine from 1 to `floor` as `frac` goes 0 -> 1."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))
