"""Aggregate per-sample errors into the evaluation report: means, episode-bootstrap CIs,
speed bins, world-model baselines and the promotion gate."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autoe2e.config import EvalConfig
from autoe2e.evaluation.collect import Collected
from autoe2e.evaluation.metrics import METRIC_CONVENTION

SPEED_BINS_MPS = (0.0, 5.0, 10.0, 15.0, math.inf)
BOOTSTRAP_SAMPLES = 1000


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def bootstrap_ci(
    values: np.ndarray, episodes: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> list[float] | None:
    """95% CI of the sample mean, resampling whole episodes (samples within one are correlated).

    None with fewer than 2 episodes holding a finite value: an interval would be meaningless.
    """
    ok = ~np.isnan(values)
    values, episodes = values[ok], episodes[ok]
    names = np.unique(episodes)
    if names.size < 2:
        return None
    sums = np.array([values[episodes == n].sum() for n in names])
    counts = np.array([(episodes == n).sum() for n in names])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, names.size, size=(samples, names.size))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def _summary(metrics: dict[str, list[float]], episodes: np.ndarray) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    for metric, values in metrics.items():
        arr = np.asarray(values, dtype=np.float64)
        entry[f"{metric}_m"] = _mean(arr)
        ci[f"{metric}_m"] = bootstrap_ci(arr, episodes)
    entry["ci95"] = ci
    return entry


def _key_metric(horizons_s: list[float]) -> str:
    """ADE@3s when 3 s is a reported horizon (the headline upstream used), else ADE."""
    return "ade_3s" if 3.0 in [float(h) for h in horizons_s] else "ade"


def _versus(
    model: dict[str, list[float]],
    other: dict[str, list[float]],
    metric: str,
    episodes: np.ndarray,
) -> dict[str, Any]:
    """`other` relative to the model on the same samples: means, ratio, paired difference."""
    a = np.asarray(model[metric], dtype=np.float64)
    b = np.asarray(other[metric], dtype=np.float64)
    ma, mb = _mean(a), _mean(b)
    return {
        f"{metric}_m": mb,
        "ratio_to_model": (mb / ma) if ma and mb is not None else None,
        f"minus_model_{metric}_m": _mean(b - a),
        f"minus_model_{metric}_ci95": bootstrap_ci(b - a, episodes),
    }


def by_scenario(
    collected: Collected,
    labels: list[tuple[str, ...]],
    metric: str,
    trained: dict[str, Collected] | None = None,
) -> list[dict[str, Any]]:
    """Per scenario label: samples, episodes and each planner's mean `metric` with the model's
    episode-bootstrap CI (a sample may carry several labels)."""
    episodes = np.array(collected.episode_ids)
    names = sorted({label for sample in labels for label in sample})
    rows = []
    for name in names:
        sel = np.array([name in sample for sample in labels])
        row: dict[str, Any] = {
            "scenario": name,
            "samples": int(sel.sum()),
            "episodes": int(np.unique(episodes[sel]).size),
        }
        sources = {
            **collected.planners,
            **{k: v.planners["model"] for k, v in (trained or {}).items()},
        }
        for planner, metrics in sources.items():
            values = np.asarray(metrics[metric], dtype=np.float64)[sel]
            row[f"{planner}_{metric}_m"] = _mean(values)
        model = np.asarray(collected.planners["model"][metric], dtype=np.float64)
        row[f"model_{metric}_ci95"] = bootstrap_ci(model[sel], episodes[sel])
        rows.append(row)
    return rows


def build_report(
    collected: Collected,
    eval_cfg: EvalConfig,
    labels: list[tuple[str, ...]] | None = None,
    trained: dict[str, Collected] | None = None,
) -> dict[str, Any]:
    """The report of one checkpoint. `labels`: per-sample scenario labels (optional; from the
    manifest's scenario events); `trained`: trained baselines scored on the same samples."""
    episodes = np.array(collected.episode_ids)
    planners = {name: _summary(metrics, episodes) for name, metrics in collected.planners.items()}

    model_ade = np.asarray(collected.planners["model"]["ade"], dtype=np.float64)
    cv_ade = np.asarray(collected.planners["constant_velocity"]["ade"], dtype=np.float64)
    ctrv_ade = np.asarray(collected.planners["ctrv"]["ade"], dtype=np.float64)
    comparisons = {
        "model_minus_cv_ade_m": _mean(model_ade - cv_ade),
        "model_minus_cv_ade_ci95": bootstrap_ci(model_ade - cv_ade, episodes),
        "model_minus_ctrv_ade_m": _mean(model_ade - ctrv_ade),
        "model_minus_ctrv_ade_ci95": bootstrap_ci(model_ade - ctrv_ade, episodes),
    }

    speeds = np.asarray(collected.speeds, dtype=np.float64)
    by_speed = []
    for lo, hi in zip(SPEED_BINS_MPS[:-1], SPEED_BINS_MPS[1:], strict=True):
        sel = (speeds >= lo) & (speeds < hi)
        if sel.any():
            by_speed.append(
                {
                    "speed_mps": [lo, None if math.isinf(hi) else hi],
                    "samples": int(sel.sum()),
                    "model_ade_m": _mean(model_ade[sel]),
                    "model_ade_ci95": bootstrap_ci(model_ade[sel], episodes[sel]),
                    "cv_ade_m": _mean(cv_ade[sel]),
                    "ctrv_ade_m": _mean(ctrv_ade[sel]),
                }
            )

    per_episode = {
        str(name): {
            "samples": int((episodes == name).sum()),
            "model_ade_m": _mean(model_ade[episodes == name]),
            "cv_ade_m": _mean(cv_ade[episodes == name]),
        }
        for name in np.unique(episodes)
    }

    world_model: dict[str, Any] = {}
    if collected.jepa:
        l1 = {k: _mean(np.asarray(v, dtype=np.float64)) for k, v in collected.jepa.items()}
        world_model = {
            "jepa_l1": l1,
            "beats_copy_last_frame": _lt(l1.get("model"), l1.get("copy_last_frame")),
            "beats_zeros": _lt(l1.get("model"), l1.get("zeros")),
        }

    return {
        "convention": METRIC_CONVENTION,
        "num_samples": len(collected.episode_ids),
        "num_episodes": int(np.unique(episodes).size),
        "horizons_s": list(eval_cfg.horizons_s),
        "planner": {
            "model": planners["model"],
            "baselines": {k: v for k, v in planners.items() if k != "model"},
        },
        "comparisons": comparisons,
        "by_speed": by_speed,
        "per_episode": per_episode,
        "world_model": world_model,
        "gate": gate(planners, comparisons, eval_cfg),
        **_extras(collected, eval_cfg, labels, trained),
    }


def _extras(
    collected: Collected,
    eval_cfg: EvalConfig,
    labels: list[tuple[str, ...]] | None,
    trained: dict[str, Collected] | None,
) -> dict[str, Any]:
    from autoe2e.evaluation.diagnostics import world_model_diagnostics

    episodes = np.array(collected.episode_ids)
    metric = _key_metric(eval_cfg.horizons_s)
    model = collected.planners["model"]
    out: dict[str, Any] = {"key_metric": metric}
    if collected.ablations:
        out["ablations"] = {
            name: _versus(model, metrics, metric, episodes)
            for name, metrics in collected.ablations.items()
        }
    if trained:
        out["trained_baselines"] = {}
        for name, other in trained.items():
            if other.episode_ids != collected.episode_ids:
                raise ValueError(f"trained baseline {name} was scored on other samples")
            entry = _summary(other.planners["model"], episodes)
            entry.update(_versus(model, other.planners["model"], metric, episodes))
            out["trained_baselines"][name] = entry
    if labels is not None:
        if len(labels) != len(collected.episode_ids):
            raise ValueError("one scenario label set per sample is needed")
        out["by_scenario"] = by_scenario(collected, labels, metric, trained)
    diagnostics = world_model_diagnostics(collected)
    if diagnostics:
        out["world_model_diagnostics"] = diagnostics
    return out


def _lt(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a < b


def paired_check(
    label: str, mean: float | None, ci: list[float] | None, margin: float
) -> tuple[bool, str]:
    """Model beats `label` when the 95% CI of the paired (model - other) ADE lies below -margin.

    With fewer than 2 episodes there is no interval and the mean decides (said in the text).
    """
    bound = ci[1] if ci else mean
    where = f"95% CI [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "no CI (< 2 episodes), mean"
    ok = bound is not None and bound < -margin
    return ok, f"model - {label} ADE {_fmt(mean)} m, {where} < -{margin} m"


def gate(
    planners: dict[str, Any], comparisons: dict[str, Any], eval_cfg: EvalConfig
) -> dict[str, Any]:
    """Promotion checks: ADE/FDE under the limits AND the model beats constant velocity with the
    CI (evaluation adds the check against the current champion)."""
    model = planners["model"]
    ade, fde = model.get("ade_m"), model.get("fde_m")
    checks = [
        (_lt(ade, eval_cfg.max_ade_m), f"model ADE {_fmt(ade)} < max_ade_m {eval_cfg.max_ade_m} m"),
        (_lt(fde, eval_cfg.max_fde_m), f"model FDE {_fmt(fde)} < max_fde_m {eval_cfg.max_fde_m} m"),
        paired_check(
            "constant velocity",
            comparisons["model_minus_cv_ade_m"],
            comparisons["model_minus_cv_ade_ci95"],
            eval_cfg.cv_margin_m,
        ),
    ]
    return gate_from_checks(checks, eval_cfg)


def gate_from_checks(checks: list[tuple[bool, str]], eval_cfg: EvalConfig) -> dict[str, Any]:
    return {
        "passed": all(ok for ok, _ in checks),
        "reasons": [("PASS: " if ok else "FAIL: ") + text for ok, text in checks],
        "checks": [[ok, text] for ok, text in checks],
        "max_ade_m": eval_cfg.max_ade_m,
        "max_fde_m": eval_cfg.max_fde_m,
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
