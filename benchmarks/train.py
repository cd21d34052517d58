"""Training-at-scale benchmarks, each a ratio measured side by side in one run.

    .venv/bin/python benchmarks/train.py [--episodes N] [--steps N] [--skip-b]

Generates a seeded synthetic world, prepares it into >= 8 shards, then prints:
(a) training step rate fed by the streaming loader (default worker count) / step rate of the
    same model fed one in-memory batch of the same shapes (target >= 0.90), interleaved blocks;
(b) MLflow logging time / step time against a real `mlflow server` (benchmarks/train_logging.py;
    target <= 0.02);
(c) storage bytes read per shuffled epoch / data set bytes: streaming loader vs the map-style
    ShardDataset with a shuffled sampler (target <= 1.05 for the streaming loader);
(d) streaming loader samples/s with 0, 1 and 2 workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from autoe2e import storage
from autoe2e.config import GenerateConfig, ModelConfig, PrepareConfig, TrainConfig
from autoe2e.data.dataset import ShardDataset
from autoe2e.data.streaming import StreamingShardDataset
from autoe2e.evaluation.collect import to_device
from autoe2e.model import AutoE2E
from autoe2e.training.metrics import MetricsWindow
from autoe2e.training.runtime import keep_freed_cpu_memory
from autoe2e.training.step import GuardedOptimizer, forward_backward

logger = logging.getLogger("benchmarks.train")


def _dataset(root: Path, episodes: int) -> tuple[str, int]:
    from autoe2e.data.prepare import prepare_dataset
    from autoe2e.synthetic import generate_episodes

    generate_episodes(root / "episodes", GenerateConfig(num_episodes=episodes, duration_s=20.0))
    config = PrepareConfig(shard_target_bytes=1 << 16)  # one episode per shard
    result = prepare_dataset(str(root / "episodes"), str(root / "dataset"), config, max_workers=2)
    manifest = json.loads(Path(result.manifest_uri).read_text())
    size = sum(s["bytes"] + s["frames_bytes"] for s in manifest["shards"])
    return result.manifest_uri, size


def _stream(manifest: str, batch: int, workers: int, frames: bool = True) -> StatefulDataLoader:
    ds = StreamingShardDataset(
        manifest, batch_size=batch, num_workers=workers, load_world_model_frames=frames
    )
    ds.set_epoch(0)
    options = {"prefetch_factor": 2} if workers else {}
    return StatefulDataLoader(
        ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0, **options
    )


def _forever(loader: StatefulDataLoader):
    epoch = 0
    while True:
        loader.dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def bench_a(manifest: str, steps: int, block: int) -> dict[str, float]:
    """Step rates, streaming-fed vs in-memory, in interleaved blocks of `block` steps."""
    cfg, tcfg = ModelConfig(), TrainConfig()
    model = AutoE2E(cfg)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=tcfg.lr)
    guard, window = GuardedOptimizer(model, optimizer, tcfg), MetricsWindow(cfg.future_steps)
    device = torch.device("cpu")
    stream = _forever(_stream(manifest, tcfg.batch_size, tcfg.num_workers))
    fixed = next(stream)

    def step(batch) -> None:
        forward_backward(model, model, to_device(batch, device), tcfg, None, window)
        guard.step(0, 0.5, tcfg.lr, True, False)

    for _ in range(2):  # warm-up
        step(fixed)
        step(next(stream))
    spent = {"streaming": 0.0, "in_memory": 0.0}
    done = 0
    while done < steps:
        for mode in ("streaming", "in_memory"):
            start = time.perf_counter()
            for _ in range(block):
                step(next(stream) if mode == "streaming" else fixed)
            spent[mode] += time.perf_counter() - start
        done += block
    rates = {k: done / v for k, v in spent.items()}
    return {
        "streaming_steps_per_s": rates["streaming"],
        "in_memory_steps_per_s": rates["in_memory"],
        "ratio": rates["streaming"] / rates["in_memory"],
        "steps_each": done,
        "num_workers": tcfg.num_workers,
        "batch_size": tcfg.batch_size,
    }


def bench_c(manifest: str, size: int) -> dict[str, float]:
    batch = TrainConfig().batch_size
    before = storage.bytes_read()
    for _ in _stream(manifest, batch, 0):
        pass
    streaming = storage.bytes_read() - before
    ds = ShardDataset(manifest)  # today's map-style loader with a shuffled index
    sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(0))
    before = storage.bytes_read()
    for _ in DataLoader(ds, batch_size=batch, sampler=sampler):
        pass
    map_style = storage.bytes_read() - before
    return {
        "dataset_bytes": size,
        "streaming_bytes": streaming,
        "streaming_ratio": streaming / size,
        "map_style_bytes": map_style,
        "map_style_ratio": map_style / size,
    }


def bench_d(manifest: str) -> dict[str, float]:
    out = {}
    batch = TrainConfig().batch_size
    for workers in (0, 1, 2):
        loader = _stream(manifest, batch, workers)
        start, samples = time.perf_counter(), 0
        for b in loader:
            samples += len(b["episode_id"])
        out[f"workers_{workers}_samples_per_s"] = samples / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24, help="steps per feed in (a)")
    parser.add_argument("--block", type=int, default=4)
    parser.add_argument("--skip-b", action="store_true", help="leave out the MLflow benchmark")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(os.cpu_count() or 1)
    keep_freed_cpu_memory()  # as the training loop does: faster steps leave the loader less slack
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        manifest, size = _dataset(Path(tmp), args.episodes)
        shards = len(json.loads(Path(manifest).read_text())["shards"])
        results["shards"] = shards
        results["c"] = c = bench_c(manifest, size)
        results["d"] = d = bench_d(manifest)
        results["a"] = a = bench_a(manifest, args.steps, args.block)
    print(json.dumps(results, indent=2))
    print(
        f"(a) step rate, streaming loader ({a['num_workers']} workers) / in-memory batch: "
        f"{a['ratio']:.3f} ({a['streaming_steps_per_s']:.3f} vs {a['in_memory_steps_per_s']:.3f}"
        f" steps/s, batch {a['batch_size']}; target >= 0.90)"
    )
    print(
        f"(c) bytes read per shuffled epoch / data set bytes ({shards} shards, "
        f"{size / 1e6:.1f} MB): streaming {c['streaming_ratio']:.3f} (target <= 1.05), "
        f"map-style ShardDataset {c['map_style_ratio']:.1f}"
    )
    print(
        "(d) streaming loader samples/s: "
        + ", ".join(f"{w} workers {d[f'workers_{w}_samples_per_s']:.1f}" for w in (0, 1, 2))
    )
    if not args.skip_b:
        sys.path.insert(0, str(Path(__file__).parent))
        import train_logging

        sys.argv = [sys.argv[0]]
        train_logging.main()


if __name__ == "__main__":
    main()
