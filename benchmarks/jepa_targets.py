"""How rich are the JEPA targets? The ceiling behind Q7 of the quality benchmark.

    .venv/bin/python benchmarks/jepa_targets.py CHECKPOINT MANIFEST [--batches N]

RankMe / feature dim of the *predictions* (Q7, target >= 0.3) cannot sensibly exceed that of
the targets they regress, so this measures the targets themselves on the checkpoint's test
episodes: for the checkpoint's EMA target encoder and for the same architecture at random
initialisation (the EMA's starting point), raw (layer-normed per location, what the loss sees)
and standardised per channel over the set (the common mean removed, so RankMe counts the
directions in which frames differ), next to the checkpoint's predictions. Each encoder is
measured at the checkpoint's target layer (`ModelConfig.target_layer`) and at the backbone's
last feature map, which differ where "auto" skipped a pointwise expansion (MobileNetV3).
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from torch.utils.data import DataLoader

from autoe2e import storage
from autoe2e.evaluation.diagnostics import rankme
from autoe2e.model import AutoE2E, jepa_targets, load_model
from autoe2e.training.runtime import shard_dataset_factory

logger = logging.getLogger("benchmarks.jepa_targets")


def _rows(features: np.ndarray) -> np.ndarray:
    """[N, F, V, C, g, g] -> per-location vectors [rows, C] (as the diagnostics use them)."""
    return np.moveaxis(features, 3, -1).reshape(-1, features.shape[3])


def _ranks(rows: np.ndarray) -> tuple[float, float]:
    dim = rows.shape[1]
    standardised = (rows - rows.mean(axis=0)) / (rows.std(axis=0) + 1e-3)
    return rankme(rows) / dim, rankme(standardised) / dim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("manifest")
    parser.add_argument("--batches", type=int, default=12, help="batches of 32 test samples")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    model, extra = load_model(storage.read_bytes(args.checkpoint), source=args.checkpoint)
    if not model.cfg.use_world_model:
        parser.error(f"{args.checkpoint} has no world model")
    fresh = AutoE2E(model.cfg).eval()
    model.eval()
    dataset = shard_dataset_factory(args.manifest, list(extra["split"]["test"]), True)
    layer = model.backbone.target_layer or "last feature map"
    parts: dict[str, list[np.ndarray]] = {
        f"targets ({layer}), trained EMA encoder": [],
        f"targets ({layer}), same encoder at random init": [],
        "targets (last feature map), trained EMA encoder": [],
        "targets (last feature map), random init": [],
        "predictions of the checkpoint": [],
    }
    grid = model.cfg.target_grid

    def last_map(encoder: AutoE2E, images: torch.Tensor) -> np.ndarray:
        feats = encoder.target.module(images.reshape(-1, *images.shape[-3:]))
        return jepa_targets(feats, grid).reshape(*images.shape[:-3], feats.shape[1], grid, grid)

    with torch.no_grad():
        for i, batch in enumerate(DataLoader(dataset, batch_size=32, shuffle=True)):
            if i >= args.batches:
                break
            future = batch["future_images"]
            values = (
                model.jepa_targets(future),
                fresh.jepa_targets(future),
                last_map(model, future),
                last_map(fresh, future),
                model(batch).jepa_prediction,
            )
            for bucket, value in zip(parts.values(), values, strict=True):
                bucket.append(np.asarray(value))
    print(f"{'RankMe / dim':50s} {'dim':>4s} {'RankMe':>7s} {'raw':>6s} {'standardised':>13s}")
    for name, chunks in parts.items():
        rows = _rows(np.concatenate(chunks))
        raw, standardised = _ranks(rows)
        dim = rows.shape[1]
        print(f"{name:50s} {dim:4d} {raw * dim:7.1f} {raw:6.3f} {standardised:13.3f}")


if __name__ == "__main__":
    main()
