"""Evaluation on held-out episodes with constant-velocity / CTRV / world-model baselines."""

from autoe2e.evaluation.evaluate import REPORT_NAME, EvaluationError, evaluate
from autoe2e.evaluation.metrics import (
    METRIC_CONVENTION,
    constant_turn_rate_velocity,
    constant_velocity,
    per_sample_errors,
)

__all__ = [
    "METRIC_CONVENTION",
    "REPORT_NAME",
    "EvaluationError",
    "constant_turn_rate_velocity",
    "constant_velocity",
    "evaluate",
    "per_sample_errors",
]
