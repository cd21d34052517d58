"""Champion / challenger: every evaluated checkpoint becomes a version of one registered model;
the alias `champion` moves to it only when it passes the gate, which includes beating the
current champion on the same held-out samples.

Why paired on the same samples: the new model and the champion are scored on this run's test
episodes (the split is a stable hash of the episode id, so a growing data set keeps old test
episodes in test), and the per-sample difference is bootstrapped over episodes, like the
comparison with constant velocity. A champion that cannot be scored on these samples (other
cameras or a checkpoint this code cannot read) keeps its alias: replacing it without a
comparison is a decision for a person, not for a nightly job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from autoe2e.config import EvalConfig
from autoe2e.evaluation.report import bootstrap_ci, gate_from_checks, paired_check

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


def registered_name(eval_cfg: EvalConfig, model_name: str) -> str:
    return eval_cfg.registered_model or f"autoe2e-{model_name}"


def champion_check(
    new_ade: np.ndarray,
    champion_ade: np.ndarray,
    episodes: np.ndarray,
    version: str,
    margin: float,
) -> tuple[bool, str]:
    diff = new_ade - champion_ade
    finite = diff[~np.isnan(diff)]
    mean = float(finite.mean()) if finite.size else None
    return paired_check(f"champion v{version}", mean, bootstrap_ci(diff, episodes), margin)


def promote(
    tracker: Any,
    report: dict[str, Any],
    eval_cfg: EvalConfig,
    model_name: str,
    score_champion: Callable[[bytes], np.ndarray],
    new_ade: np.ndarray,
    episodes: np.ndarray,
) -> dict[str, Any]:
    """Register this run's checkpoint, decide champion or challenger, set the alias and tags.

    `score_champion(checkpoint bytes)` returns the champion's per-sample ADE on the samples
    behind `new_ade` (same order). Updates report["gate"] and returns report["promotion"].
    """
    name = registered_name(eval_cfg, model_name)
    previous = tracker.alias_version(name, CHAMPION)
    checks = [(bool(ok), str(text)) for ok, text in report["gate"]["checks"]]
    if previous is not None:
        try:
            champion_ade = score_champion(tracker.version_checkpoint(name, previous))
            checks.append(
                champion_check(
                    new_ade, champion_ade, episodes, previous, eval_cfg.champion_margin_m
                )
            )
        except (ValueError, RuntimeError) as exc:  # CheckpointError/EvaluationError/Tracking
            checks.append(
                (
                    False,
                    f"current champion v{previous} could not be scored on these samples "
                    f"({exc}); it keeps the alias: move it by hand if intended",
                )
            )
    else:
        checks.append((True, f"no champion of {name} yet"))
    report["gate"] = gate_from_checks(checks, eval_cfg)
    version = tracker.register_model(name, artifact_path="checkpoint")
    alias = CHAMPION if report["gate"]["passed"] else CHALLENGER
    reasons = report["gate"]["reasons"]
    tracker.set_alias(
        name,
        alias,
        version,
        {"promotion": alias, "promotion_reasons": "; ".join(reasons)[:5000]},
    )
    decision = {
        "registered_model": name,
        "version": version,
        "alias": alias,
        "previous_champion": previous,
        "champion": version if alias == CHAMPION else previous,
        "reasons": reasons,
    }
    logger.info(
        "%s version %s -> %s (previous champion %s)", name, version, alias, previous or "none"
    )
    return decision
