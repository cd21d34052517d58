"""Benchmark (b) of the training issue: MLflow logging time / training step time, with a real
`mlflow server` on 127.0.0.1 (sqlite store in a temp dir), in one run.

    .venv/bin/python benchmarks/train_logging.py [--steps N] [--batch B]

Trains the demo model on synthetic in-memory samples through `autoe2e.training.train`,
logging every step (the worst case; the default logs every 10th), and times every
`Tracker.log_metrics` call the loop makes. It runs twice, interleaved on the same server:
metrics handed to MLflow's background queue (what the loop does) and, for comparison, waiting
for each request. Prints both ratios (target for the loop's way: <= 0.02).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from torch.utils.data import Dataset

from autoe2e.config import ModelConfig, TrainConfig
from autoe2e.tracking import Tracker
from autoe2e.training import train

CAMERAS = ["front", "left", "right", "rear"]


class Synthetic(Dataset):
    """Random samples of the ShardDataset layout, 4 episodes so the split has all parts."""

    def __init__(self, cfg: ModelConfig, episodes: list[str] | None, per_episode: int) -> None:
        self.cfg, self.per = cfg, per_episode
        self.all = [f"ep{i}" for i in range(10)]
        self.episodes = self.all if episodes is None else list(episodes)
        self.cameras = CAMERAS

    def episode_ids(self) -> list[str]:
        return list(self.all)

    def __len__(self) -> int:
        return len(self.episodes) * self.per

    def __getitem__(self, i: int) -> dict:
        c = self.cfg
        v, h, w = len(self.cameras), c.image_height, c.image_width
        img = lambda *lead: torch.randint(0, 256, (*lead, 3, h, w), dtype=torch.uint8)  # noqa: E731
        t = torch.arange(1, c.trajectory_steps + 1) * 0.1
        return {
            "images": img(v),
            "camera_index": torch.arange(v),
            "history_images": img(c.history_len, v),
            "history_valid": torch.ones(c.history_len, dtype=torch.bool),
            "future_images": img(c.future_steps, v),
            "future_valid": torch.ones(c.future_steps, dtype=torch.bool),
            "map_raster": torch.rand(c.map_channels, c.map_raster_size, c.map_raster_size),
            "map_valid": torch.tensor(1.0),
            "ego_history": torch.rand(c.ego_history_steps, c.ego_features),
            "future_trajectory": torch.stack([8.0 * t, torch.zeros_like(t)], dim=-1),
            "trajectory_valid": torch.ones(c.trajectory_steps, dtype=torch.bool),
            "episode_id": self.episodes[i // self.per],
            "timestamp_s": float(i),
        }


class TimedTracker(Tracker):
    """A Tracker that adds up the time the training loop spends in log_metrics."""

    force_wait = False
    spent_s = 0.0
    calls = 0

    def log_metrics(self, metrics, step=0, wait=True):  # type: ignore[override]
        start = time.perf_counter()
        super().log_metrics(metrics, step, wait=wait or self.force_wait)
        TimedTracker.spent_s += time.perf_counter() - start
        TimedTracker.calls += 1


def _serve(workdir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
         "--default-artifact-root", str(workdir / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start") from None
            time.sleep(0.5)


def _run(url: str, out: Path, steps: int, batch: int, wait: bool) -> dict[str, float]:
    cfg = ModelConfig()
    tcfg = TrainConfig(
        epochs=100, max_steps=steps, batch_size=batch, log_every_steps=1,
        checkpoint_every_steps=0, val_fraction=0.1, test_fraction=0.1,
    )  # fmt: skip
    TimedTracker.force_wait, TimedTracker.spent_s, TimedTracker.calls = wait, 0.0, 0
    tracker = TimedTracker(tracking_uri=url, experiment="bench-logging")
    start = time.perf_counter()
    result = train(
        "synthetic://", str(out), cfg, tcfg, tracking=tracker,
        dataset_factory=lambda m, episodes, f: Synthetic(cfg, episodes, per_episode=batch),
    )  # fmt: skip
    wall = time.perf_counter() - start
    step_s = result.metrics["train/wall_s"] / result.steps
    logging_per_step = TimedTracker.spent_s / result.steps
    return {
        "steps": result.steps,
        "log_calls": TimedTracker.calls,
        "logging_ms_per_step": 1000 * logging_per_step,
        "step_ms": 1000 * step_s,
        "ratio": logging_per_step / step_s,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        server, url = _serve(Path(tmp))
        try:
            results = {}
            for mode in ("queued", "waiting", "queued", "waiting"):  # interleaved pairs
                run = _run(url, Path(tmp) / f"{mode}-{len(results)}", args.steps, args.batch,
                           wait=mode == "waiting")  # fmt: skip
                results.setdefault(mode, []).append(run)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    summary = {
        mode: {
            "ratio": sum(r["ratio"] for r in runs) / len(runs),
            "logging_ms_per_step": sum(r["logging_ms_per_step"] for r in runs) / len(runs),
            "step_ms": sum(r["step_ms"] for r in runs) / len(runs),
        }
        for mode, runs in results.items()
    }
    print(json.dumps({"runs": results, "summary": summary}, indent=2))
    q, w = summary["queued"], summary["waiting"]
    print(
        f"(b) MLflow logging / training step, logging every step: {q['ratio']:.4f} queued "
        f"({q['logging_ms_per_step']:.2f} ms of {q['step_ms']:.0f} ms; target <= 0.02), "
        f"{w['ratio']:.4f} waiting for each request ({w['logging_ms_per_step']:.2f} ms)"
    )


if __name__ == "__main__":
    main()
