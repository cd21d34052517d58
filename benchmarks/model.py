"""Model figures for the `demo` and `default` presets, each measured in its own process.

    .venv/bin/python benchmarks/model.py [--presets demo default] [--steps N] [--cameras V]

For each preset: trainable / EMA-target parameter counts, training samples/s (one full step as
the training loop runs it: forward, JEPA targets, both losses, backward, AdamW step, EMA update),
peak memory (CUDA allocator peak on a GPU, else the process's peak RSS), and the EMA update
time as a fraction of the whole step, timed inside the same steps (target <= 0.02). Then the
same preset with `stop_gradient_world_model` flipped, and the step-time ratio of the two: what
letting the JEPA loss train the backbone costs over the detached world model (the default). On a
CPU the `default` preset runs at batch 1 with `--cameras` views (default 4) to stay within
minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time

import torch

from autoe2e.config import ModelConfig
from autoe2e.model import AutoE2E
from autoe2e.training.losses import jepa_l1, trajectory_l1
from autoe2e.training.runtime import keep_freed_cpu_memory


def random_batch(cfg: ModelConfig, batch: int, views: int, device: torch.device) -> dict:
    """A training batch of the preset's shapes (random pixels, maps, ego and targets)."""
    h, w, r = cfg.image_height, cfg.image_width, cfg.map_raster_size
    images = lambda *lead: torch.randint(0, 256, (*lead, 3, h, w), dtype=torch.uint8)  # noqa: E731
    out = {
        "images": images(batch, views),
        "camera_index": torch.arange(views).repeat(batch, 1),
        "history_images": images(batch, cfg.history_len, views),
        "history_valid": torch.ones(batch, cfg.history_len, dtype=torch.bool),
        "future_images": images(batch, cfg.future_steps, views),
        "future_valid": torch.ones(batch, cfg.future_steps, dtype=torch.bool),
        "map_raster": torch.rand(batch, cfg.map_channels, r, r),
        "map_valid": torch.ones(batch),
        "ego_history": torch.rand(batch, cfg.ego_history_steps, cfg.ego_features),
        "future_trajectory": torch.randn(batch, cfg.trajectory_steps, 2) * 5,
        "trajectory_valid": torch.ones(batch, cfg.trajectory_steps, dtype=torch.bool),
    }
    return {k: v.to(device) for k, v in out.items()}


def optimise(
    model: AutoE2E, optimizer: torch.optim.Optimizer, data: dict, amp: torch.dtype | None
) -> None:
    """Forward, JEPA targets, both losses, backward and the AdamW step (the EMA update apart)."""
    device = data["images"].device
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        out = model(data)
    loss = trajectory_l1(
        out.trajectory.float(), data["future_trajectory"], data["trajectory_valid"]
    )
    targets = model.jepa_targets(data["future_images"])
    loss = loss + 0.2 * jepa_l1(out.jepa_prediction.float(), targets, data["future_valid"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(preset: str, steps: int, cameras: int, flip_stop_gradient: bool = False) -> dict:
    keep_freed_cpu_memory()  # as the training loop does
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = ModelConfig.preset(preset)
    if flip_stop_gradient:
        cfg = dataclasses.replace(cfg, stop_gradient_world_model=not cfg.stop_gradient_world_model)
    on_gpu = device.type == "cuda"
    batch = (8 if preset == "demo" else 2) if on_gpu else (8 if preset == "demo" else 1)
    views = min(cameras, cfg.max_cameras) if not on_gpu else cfg.max_cameras
    model = AutoE2E(cfg).to(device)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    data = random_batch(cfg, batch, views, device)
    amp = torch.bfloat16 if on_gpu else None

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    step_s = ema_s = 0.0
    for i in range(steps + 1):  # step 0 warms up allocators and kernels, not timed
        sync()
        start = time.perf_counter()
        optimise(model, optimizer, data, amp)
        sync()
        ema_start = time.perf_counter()
        model.target.update(model.backbone, 0.996)
        sync()
        end = time.perf_counter()
        if i:
            step_s += end - start
            ema_s += end - ema_start
    trainable = sum(p.numel() for p in model.trainable_parameters())
    target = sum(p.numel() for p in model.target.module.parameters())
    peak = (
        torch.cuda.max_memory_allocated()
        if on_gpu
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "preset": preset,
        "stop_gradient_world_model": cfg.stop_gradient_world_model,
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu x{torch.get_num_threads()}",
        "batch": batch,
        "cameras": views,
        "image": f"{cfg.image_height}x{cfg.image_width}",
        "trainable_params_m": trainable / 1e6,
        "ema_target_params_m": target / 1e6,
        "samples_per_s": steps * batch / step_s,
        "step_s": step_s / steps,
        "peak_memory_gib": peak / 2**30,
        "ema_fraction_of_step": ema_s / step_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["demo", "default"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--flip-stop-gradient", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.cameras, args.flip_stop_gradient)))
        return
    for preset in args.presets:  # one process per measurement: peak memory is per process
        runs = [_child(preset, args, flip) for flip in (False, True)]
        for r in runs:
            print(
                f"{r['preset']:<8} {r['device']}, batch {r['batch']}, {r['cameras']} cameras at "
                f"{r['image']}, stop_gradient_world_model={r['stop_gradient_world_model']}: "
                f"{r['trainable_params_m']:.1f}M trainable + "
                f"{r['ema_target_params_m']:.1f}M EMA target params, "
                f"{r['samples_per_s']:.2f} samples/s ({r['step_s']:.2f} s/step), "
                f"peak memory {r['peak_memory_gib']:.2f} GiB, "
                f"EMA update = {r['ema_fraction_of_step']:.4f} of a step (target <= 0.02)"
            )
        trained, detached = sorted(runs, key=lambda r: r["stop_gradient_world_model"])
        print(
            f"{preset:<8} step time, JEPA gradient into the backbone / detached world model: "
            f"{trained['step_s'] / detached['step_s']:.2f}"
        )


def _child(preset: str, args: argparse.Namespace, flip: bool) -> dict:
    command = [sys.executable, __file__, "--child", preset, "--steps", str(args.steps)]
    command += ["--cameras", str(args.cameras)] + (["--flip-stop-gradient"] if flip else [])
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
