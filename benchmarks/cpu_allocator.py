"""A CPU training step under glibc's default malloc settings vs `keep_freed_cpu_memory()`.

    .venv/bin/python benchmarks/cpu_allocator.py [--steps N] [--rounds R] [--threads 1 2]
                                                 [--batch B] [--cameras V]

Each measurement is a fresh process training the `demo` preset (4 cameras, the quality
benchmark's batch of 32) for N full steps on one random batch, after one untimed step. The two
settings alternate (default, kept, kept, default, ...) so drift on a shared machine hits both.
Prints per torch-thread count: seconds per step, system-time share, minor page faults per step,
peak RSS, the ratio kept / default of the step time (target <= 0.8 with one thread) and whether
both settings end with bit-identical weights (they must: only where memory comes from changes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from model import optimise, random_batch

from autoe2e.config import ModelConfig
from autoe2e.model import AutoE2E
from autoe2e.training.runtime import keep_freed_cpu_memory


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def measure(kept: bool, threads: int, args: argparse.Namespace) -> dict:
    steps = args.steps
    if kept and not keep_freed_cpu_memory():
        raise SystemExit("keep_freed_cpu_memory() did not take effect here (not glibc?)")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = ModelConfig.preset("demo")
    model = AutoE2E(cfg)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    data = random_batch(cfg, args.batch, args.cameras, torch.device("cpu"))
    optimise(model, optimizer, data, None)  # untimed: kernels and allocator warm up
    start, before = time.perf_counter(), _usage()
    for _ in range(steps):
        optimise(model, optimizer, data, None)
        model.target.update(model.backbone, 0.996)
    wall, after = time.perf_counter() - start, _usage()
    user, system = after[0] - before[0], after[1] - before[1]
    weights = hashlib.sha256()
    for tensor in model.state_dict().values():
        weights.update(tensor.detach().contiguous().numpy().tobytes())
    return {
        "step_s": wall / steps,
        "sys_share": system / max(1e-9, user + system),
        "faults_per_step": (after[2] - before[2]) / steps,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "weights": weights.hexdigest()[:16],
    }


def _child(kept: bool, args: argparse.Namespace, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "kept" if kept else "default"]
    cmd += ["--steps", str(args.steps), "--threads", str(threads), "--batch", str(args.batch)]
    cmd += ["--cameras", str(args.cameras)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--child", choices=["default", "kept"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "kept", args.threads[0], args)))
        return
    for threads in args.threads:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.rounds):
            for kept in (False, True) if r % 2 == 0 else (True, False):
                runs[kept].append(_child(kept, args, threads))
        step = {k: statistics.median(x["step_s"] for x in v) for k, v in runs.items()}
        for kept, name in ((False, "default"), (True, "kept   ")):
            v = runs[kept]
            each = " ".join(f"{x['step_s']:.3f}" for x in v)
            print(
                f"{threads} thread(s), {name}: {step[kept]:.3f} s/step "
                f"(runs {each}), "
                f"system time {statistics.mean(x['sys_share'] for x in v):.0%}, "
                f"{statistics.mean(x['faults_per_step'] for x in v) / 1e3:.0f}k minor faults/step, "
                f"peak RSS {max(x['peak_rss_gib'] for x in v):.2f} GiB"
            )
        same = len({x["weights"] for v in runs.values() for x in v}) == 1
        ratio = step[True] / step[False]
        target = " (target <= 0.8)" if threads == 1 else ""
        print(
            f"{threads} thread(s): kept / default step time {ratio:.3f}{target}; "
            f"weights bit-identical: {same}"
        )


if __name__ == "__main__":
    main()
