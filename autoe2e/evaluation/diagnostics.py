"""World-model diagnostics: is the JEPA predictor better than the null predictors at each
horizon, and have its features collapsed?

- per-horizon L1 and cosine of the model, "copy the last observed frame's features" and
  "predict the mean target" (the mean over the evaluated set: the best constant);
- per-dimension std of targets and predictions over the set (a predictor that collapsed to a
  constant has std ~0 where the targets do not);
- RankMe (exp of the entropy of the normalised singular values) of the predicted and target
  per-location feature vectors, and its ratio to the feature dimension.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autoe2e.evaluation.collect import Collected

#: rows used for the SVD behind RankMe (per-location vectors; evenly spaced beyond this)
RANKME_ROWS = 20000


def rankme(features: np.ndarray) -> float:
    """RankMe of `[n, d]` features: exp(entropy of singular values / their sum)."""
    if len(features) > RANKME_ROWS:
        features = features[:: len(features) // RANKME_ROWS + 1]
    singular = np.linalg.svd(features.astype(np.float64), compute_uv=False)
    p = singular / max(singular.sum(), 1e-12) + 1e-12
    return float(np.exp(-(p * np.log(p)).sum()))


def _locations(array: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[N, F, V, C, g, g] at valid (sample, horizon) pairs -> [rows, C] per-location vectors."""
    chosen = array[valid]  # [M, V, C, g, g]
    return np.moveaxis(chosen, 2, -1).reshape(-1, array.shape[3]).astype(np.float32)


def world_model_diagnostics(collected: Collected) -> dict[str, Any]:
    if collected.jepa_horizon_count is None or not collected.kept_targets:
        return {}
    count = np.maximum(collected.jepa_horizon_count, 1)
    horizons = {
        "l1": {k: (v / count).tolist() for k, v in collected.jepa_horizon_l1.items()},
        "cosine": {k: (v / count).tolist() for k, v in collected.jepa_horizon_cos.items()},
    }
    pred = np.concatenate(collected.kept_predictions).astype(np.float32)
    target = np.concatenate(collected.kept_targets).astype(np.float32)
    valid = np.concatenate(collected.kept_valid)
    mean_l1, mean_cos = [], []
    for f in range(target.shape[1]):
        rows = valid[:, f]
        if not rows.any():
            mean_l1.append(None)
            mean_cos.append(None)
            continue
        t = target[rows, f]
        mean = t.mean(axis=0, keepdims=True)
        mean_l1.append(float(np.abs(t - mean).mean()))
        m = np.broadcast_to(mean, t.shape)
        num = (m * t).sum(axis=2)
        den = np.linalg.norm(m, axis=2) * np.linalg.norm(t, axis=2) + 1e-8
        mean_cos.append(float((num / den).mean()))
    horizons["l1"]["mean_target"] = mean_l1
    horizons["cosine"]["mean_target"] = mean_cos
    pred_vectors, target_vectors = _locations(pred, valid), _locations(target, valid)
    dim = int(pred.shape[3])
    pred_rank, target_rank = rankme(pred_vectors), rankme(target_vectors)
    model_l1, copy_l1 = horizons["l1"].get("model", []), horizons["l1"].get("copy_last_frame", [])
    return {
        "per_horizon": horizons,
        "beats_copy_last_frame_at_every_horizon": bool(
            model_l1 and all(m < c for m, c in zip(model_l1, copy_l1, strict=True))
        ),
        "feature_dim": dim,
        "rankme_predictions": pred_rank,
        "rankme_targets": target_rank,
        "rankme_predictions_over_dim": pred_rank / dim,
        "std_per_dim_predictions_mean": float(pred_vectors.std(axis=0).mean()),
        "std_per_dim_targets_mean": float(target_vectors.std(axis=0).mean()),
        "samples_used": int(len(target)),
    }
