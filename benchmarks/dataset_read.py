"""Side-by-side: ShardDataset item time with the decoded-frame cache vs without it.

Every 10 Hz frame is referenced by up to ~8 samples (current view, 1 Hz history and future
windows), so decoding each JPEG once per shard should make an epoch much cheaper. This prints
both timings from one run on the same shards and their ratio (a ratio, not a timed test).

    .venv/bin/python benchmarks/dataset_read.py [MANIFEST_URI] [--items N]

Without a manifest it generates and prepares a small synthetic data set in a temp folder.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from autoe2e.config import GenerateConfig, PrepareConfig
from autoe2e.data.dataset import ShardDataset


def _make_manifest(root: Path) -> str:
    from autoe2e.data.prepare import prepare_dataset
    from autoe2e.synthetic import generate_episodes

    generate_episodes(root / "episodes", GenerateConfig(num_episodes=2, duration_s=20.0))
    result = prepare_dataset(
        str(root / "episodes"), str(root / "dataset"), PrepareConfig(), max_workers=2
    )
    return result.manifest_uri


def _per_item_seconds(manifest: str, order: list[int], epochs: int) -> tuple[float, float]:
    """(uncached, cached) mean seconds per item, timed item by item in alternation so that
    load from other processes on the machine hits both variants alike."""
    cached = ShardDataset(manifest, decoded_cache_bytes=2 << 30)
    uncached = ShardDataset(manifest, decoded_cache_bytes=0)
    cached[order[0]], uncached[order[0]]  # load the shard outside the timing: both pay it once
    totals = [0.0, 0.0]
    for _ in range(epochs):
        for i in order:
            for slot, dataset in enumerate((uncached, cached)):
                start = time.perf_counter()
                dataset[i]
                totals[slot] += time.perf_counter() - start
    n = epochs * len(order)
    return totals[0] / n, totals[1] / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("manifest", nargs="?")
    parser.add_argument("--items", type=int, default=100_000, help="items per pass (max: all)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest or _make_manifest(Path(tmp))
        n = len(ShardDataset(manifest))
        order = random.Random(0).sample(range(n), min(args.items, n))
        uncached, cached = _per_item_seconds(manifest, order, args.epochs)
    print(f"items per pass: {len(order)}, passes: {args.epochs}")
    print(f"per item without decoded cache: {uncached * 1e3:.1f} ms")
    print(f"per item with decoded cache:    {cached * 1e3:.1f} ms")
    print(f"speed-up (uncached / cached):   {uncached / cached:.1f}x")


if __name__ == "__main__":
    main()
