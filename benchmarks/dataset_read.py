"""Side-by-side: ShardDataset item time with the decoded-frame cache vs without it, and the
loader's JPEG decoder (torchvision) vs Pillow on the same stored frames.

Every 10 Hz frame is referenced by up to ~8 samples (current view, 1 Hz history and future
windows), so decoding each JPEG once per shard should make an epoch much cheaper. This prints
both timings from one run on the same shards and their ratio (a ratio, not a timed test).
The decoder comparison alternates blocks of frames between the two and counts frames whose
pixels differ (there must be none: the loader switched decoders without changing a sample).

    .venv/bin/python benchmarks/dataset_read.py [MANIFEST_URI] [--items N]

Without a manifest it generates and prepares a small synthetic data set in a temp folder.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from autoe2e import storage
from autoe2e.config import GenerateConfig, PrepareConfig
from autoe2e.data.dataset import ShardDataset
from autoe2e.data.shard_reader import decode_jpegs


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


def _pillow(blob: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def _decoders(manifest: str, frames: int, block: int = 100) -> tuple[float, float, int, int]:
    """(Pillow, torchvision) seconds per frame, frames compared, frames that differ."""
    shard = json.loads(storage.read_bytes(manifest))["shards"][0]
    path = storage.join_uri(storage.parent_uri(manifest), shard["frames_path"])
    blobs = pq.read_table(io.BytesIO(storage.read_bytes(path)), columns=["jpeg"])["jpeg"]
    blobs = blobs.to_pylist()[:frames]
    spent, differ = [0.0, 0.0], 0
    for i in range(0, len(blobs), block):
        chunk = blobs[i : i + block]
        start = time.perf_counter()
        old = [_pillow(b) for b in chunk]
        middle = time.perf_counter()
        new = decode_jpegs(chunk)
        spent[0] += middle - start
        spent[1] += time.perf_counter() - middle
        differ += sum(not np.array_equal(a, b.numpy()) for a, b in zip(old, new, strict=True))
    return spent[0] / len(blobs), spent[1] / len(blobs), len(blobs), differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("manifest", nargs="?")
    parser.add_argument("--items", type=int, default=100_000, help="items per pass (max: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--frames", type=int, default=5000, help="frames for the decoders")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest or _make_manifest(Path(tmp))
        n = len(ShardDataset(manifest))
        order = random.Random(0).sample(range(n), min(args.items, n))
        uncached, cached = _per_item_seconds(manifest, order, args.epochs)
        pillow, torchvision, compared, differ = _decoders(manifest, args.frames)
    print(f"items per pass: {len(order)}, passes: {args.epochs}")
    print(f"per item without decoded cache: {uncached * 1e3:.1f} ms")
    print(f"per item with decoded cache:    {cached * 1e3:.1f} ms")
    print(f"speed-up (uncached / cached):   {uncached / cached:.1f}x")
    print(
        f"JPEG decode per frame: Pillow {pillow * 1e3:.3f} ms, torchvision (the loader's) "
        f"{torchvision * 1e3:.3f} ms: {pillow / torchvision:.2f}x; {differ} of {compared} "
        "frames differ"
    )


if __name__ == "__main__":
    main()
