"""The driving-quality benchmark: does the model learn from its cameras and its world model?

    .venv/bin/python benchmarks/quality.py [--seed S] [--out FILE.json] [--steps N]
        [--episodes N] [--train-seeds K] [--threads N] [--jobs N] [--keep DIR]
        [--world FIELD=JSON ...]
        [--model-set FIELD=JSON ...] [--train-set FIELD=JSON ...]

Generates a seeded synthetic world (another seed = another world of the same kind; 150
episodes by default, 30 of them held out for test; `BENCHMARK_WORLD`: side roads with a bus
that waits or crosses), prepares it, trains the demo config (with `BENCHMARK_MODEL` and
`BENCHMARK_TRAIN`, the world model and loss settings measured for it) with the world model on
and off and the two trained baselines (ego-only: ego history alone;
no-camera: ego + map) for the same fixed number of optimizer steps, evaluates all of them on
the same held-out test episodes (>= 16), and prints one table with episode-bootstrap CIs and
the targets Q1-Q7. Selection uses the val episodes only; the
test episodes are touched once, by the evaluation. ADE@3s = mean L2 over the trajectory steps
up to 3 s.

`--train-seeds K` (default 3) trains the model and world model off K times (TrainConfig.seed
= S, S + 100, ...; the split stays that of S), evaluates every model replicate on the same
test samples and scores each target on the K runs: one training run's Q4 moved by more than
Q4's margin, and Q5 / Q7 with it (`benchmarks/quality-log.md`), so a claim about the model
needs K >= 2. Q1-Q4 are ratios of the seed-mean ADE@3s (on and off are trained
independently: pairing single runs is arbitrary), Q5 the worst horizon of the per-horizon
means, Q6 and Q7 the means of the per-seed values; each target also says in how many runs it
was met. `--jobs N` (default 2) trains (and evaluates) N at a time, each in its own process
at `--threads`: on 2 cores a K = 3 run took 52 min instead of ~100, with the same weights and
numbers as one at a time.

`--world FIELD=JSON` changes one field of the generated world's `GenerateConfig` (repeatable),
e.g. the scenario mix, to try a world design on the whole benchmark; the report records them.
`benchmarks/motion_cues.py` prices such a design in seconds first. `--model-set FIELD=JSON`
changes one field of the demo `ModelConfig` that every variant trains with (e.g. what the world
model reads of a frame), `--train-set FIELD=JSON` one of its `TrainConfig` (not the step
budget, split or seeds); under `--keep` such runs get their own folder, next to the world.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

import torch

from autoe2e.config import EvalConfig, GenerateConfig, ModelConfig, PrepareConfig, TrainConfig
from autoe2e.data.manifest import inputs_fingerprint
from autoe2e.data.prepare import prepare_dataset
from autoe2e.evaluation import evaluate
from autoe2e.splits import split_episodes
from autoe2e.storage import file_fingerprints
from autoe2e.synthetic import episode_index, generate_episodes
from autoe2e.synthetic.motion_cues import world_cue_price
from autoe2e.training import train
from autoe2e.workers import worker_pool

logger = logging.getLogger("benchmarks.quality")

DEFAULT_SEED = 7
TEST_FRACTION, VAL_FRACTION = 0.2, 0.1
MIN_TEST_EPISODES = 16
#: With 27 training episodes (the smallest world with 16 test episodes) the camera model
#: memorised the episodes: 1,200 steps on seed 8 gave training L1 0.36 m against 0.78 m for
#: ego-only, and a test ADE@3s 10% *worse* than ego-only (0.778 vs 0.709 m). On 150 episodes
#: the same training gave 0.540 vs 0.660 m (cameras 18% better). A driving team has more
#: than 27 drives; the benchmark should not measure memorisation.
DEFAULT_EPISODES = 150
DEFAULT_STEPS = 1000
#: One training run's Q4 moved by more than Q4's margin, so the plain command scores three
#: (`--train-seeds`); two at a time (`--jobs`, capped at the CPU count) that took 52.0 min on
#: the 2-core VM, within the ~60 min the benchmark may take, against ~100 min one at a time.
DEFAULT_TRAIN_SEEDS, DEFAULT_JOBS = 3, 2
#: The benchmark's world, model and training, as changes of the GenerateConfig defaults, the
#: demo ModelConfig and TrainConfig; --world / --model-set / --train-set go on top.
#: The world: side roads in most episodes without a lead vehicle, so a bus that waits or
#: crosses, which only its motion tells apart, is common (lead braking, lights, works trucks,
#: curves and obstacles all stay). In the world before (the GenerateConfig defaults) a perfect
#: history could gain at most 1.9% / 1.4% of world model off's ADE@3s, less than Q4 asks.
#: The crossing bus pulls out 2.0-3.0 s before the ego would reach its side road (2.4-3.4 s
#: by default), so the ego brakes harder and crossing and waiting part more within 3 s: a
#: perfect history is worth 8.8% / 9.5% of world model off's ADE@3s (7.4% / 7.0% before).
BENCHMARK_WORLD: dict[str, Any] = {
    "lead_vehicle_probability": 0.2,
    "junction_probability": 0.85,
    "junction_pull_out_probability": 0.5,
    "junction_pull_out_lead_s": [2.0, 3.0],
}
#: The model: the world model reads the backbone's stride-8 map as cells and predicts
#: stride-16 targets on a 4 x 4 grid, so its history holds where a bus is and how it moved
#: (history probe 0.94-0.98 against 0.89 for the pooled default).
BENCHMARK_MODEL: dict[str, Any] = {
    "world_model_frames": "cells",
    "world_model_stage": 2,
    "target_layer": "blocks.3",
    "target_grid": 4,
}
#: The training: the trajectory loss weights step k of T by (T - k + 1) / T, so the planners
#: are trained for the near-term plan that ADE@3s scores; with the plain mean the history
#: paid over 6.4 s and was traded against the first 3 s (`benchmarks/quality-log.md`).
#: Every sample is planned with and without the world model's history (`history_loss`
#: "paired"), so the planner's own camera path learns from every sample as world model off's
#: does, instead of from the half that history dropout leaves it.
BENCHMARK_TRAIN: dict[str, Any] = {"trajectory_time_weighting": "linear", "history_loss": "paired"}
#: the two variants Q4 compares, trained once per training seed
Q4_PAIR = ("model", "world_model_off")
#: (target, "le"|"ge"|"lt") per measure
TARGETS = {
    "Q1": (0.5, "le", "model ADE@3s / constant-velocity ADE@3s"),
    "Q2": (0.8, "le", "model ADE@3s / ego-only ADE@3s"),
    "Q3": (0.9, "le", "model ADE@3s / no-camera ADE@3s"),
    "Q4": (0.95, "le", "world model on / off ADE@3s"),
    "Q5": (1.0, "lt", "JEPA L1 / copy-last L1, worst of the 4 horizons"),
    "Q6": (1.5, "ge", "cameras blanked at test / normal, ADE@3s"),
    "Q7": (0.3, "ge", "RankMe / feature dim of the predictions"),
}


def _test_episodes(n: int) -> int:
    ids = [f"ep{i}" for i in range(n)]  # the split hashes the ids the generator writes
    return len(split_episodes(ids, VAL_FRACTION, TEST_FRACTION)["test"])


def _met(value: float | None, target: float, how: str) -> bool:
    if value is None:
        return False
    return {"le": value <= target, "ge": value >= target, "lt": value < target}[how]


#: TrainConfig.seed of the k-th training run: the seed the scratch replicates used (7, 107, 207).
TRAIN_SEED_STRIDE = 100


def train_seeds(seed: int, k: int) -> list[int]:
    return [seed + TRAIN_SEED_STRIDE * i for i in range(k)]


def world_config(seed: int, n: int, overrides: dict[str, Any] | None = None) -> GenerateConfig:
    """The benchmark's world: `n` episodes of seed `seed`, `BENCHMARK_WORLD` but for
    `overrides`."""
    return GenerateConfig(num_episodes=n, seed=seed, **world_fields(overrides))


def world_fields(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The GenerateConfig fields the benchmark's world sets (what a --keep marker records)."""
    return {**BENCHMARK_WORLD, **(overrides or {})}


def model_fields(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo ModelConfig fields the benchmark's model sets, `overrides` on top."""
    return {**BENCHMARK_MODEL, **(overrides or {})}


def train_fields(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The TrainConfig fields the benchmark's training sets, `overrides` on top."""
    return {**BENCHMARK_TRAIN, **(overrides or {})}


def model_config(overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The model every variant starts from: the demo preset, `BENCHMARK_MODEL`, `overrides`."""
    return ModelConfig.preset("demo", **model_fields(overrides))


def parse_world_overrides(items: list[str]) -> dict[str, Any]:
    """`FIELD=JSON` items as GenerateConfig overrides; a ValueError names a bad item and why."""
    return _parse_overrides(items, GenerateConfig, {"num_episodes": "--episodes", "seed": "--seed"})


#: ModelConfig fields the benchmark sets per variant (what Q2-Q4 compare), not for --model-set
VARIANT_FIELDS = {"use_world_model": "the variants", "input_ablation": "the variants"}


def parse_model_overrides(items: list[str]) -> dict[str, Any]:
    """`FIELD=JSON` items as overrides of the demo ModelConfig every variant trains with; a
    ValueError names a bad item and why (an unknown field, bad JSON, or a value the config's
    own validation refuses)."""
    overrides = _parse_overrides(items, ModelConfig, VARIANT_FIELDS)
    try:
        model_config(overrides)
    except ValueError as exc:
        raise ValueError(f"{' '.join(items)}: {exc}") from exc
    return overrides


def _parse_overrides(items: list[str], config: type, reserved: dict[str, str]) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(config)} - set(reserved)
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            kept = ", ".join(f"{field} ({why})" for field, why in reserved.items())
            raise ValueError(
                f"{item!r}: use FIELD=JSON with a {config.__name__} field other than {kept}, "
                f"one of {sorted(fields)}"
            )
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{item!r}: the value is not JSON ({exc}); e.g. {name}=0.5") from exc
    return overrides


#: TrainConfig fields the benchmark fixes (the step budget, the split, the training seeds)
BENCHMARK_TRAIN_FIELDS = {
    "max_steps": "--steps",
    "seed": "--seed, --train-seeds",
    "split_seed": "--seed",
    "val_fraction": "the benchmark's split",
    "test_fraction": "the benchmark's split",
    "epochs": "--steps",
}


def parse_train_overrides(items: list[str]) -> dict[str, Any]:
    """`FIELD=JSON` items as overrides of the TrainConfig every variant trains with (not the
    step budget, split or seeds, which make runs comparable); a ValueError names a bad item."""
    overrides = _parse_overrides(items, TrainConfig, BENCHMARK_TRAIN_FIELDS)
    try:
        dataclasses.replace(train_config(DEFAULT_SEED, DEFAULT_STEPS), **overrides).validate()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{' '.join(items)}: {exc}") from exc
    return overrides


def runs_folder(model: dict[str, Any], training: dict[str, Any] | None = None) -> str:
    """Where a --keep folder holds the trainings of these model and training overrides (of the
    benchmark's own): "runs" for the benchmark as it is, else a folder per override set, so one
    generated world serves several designs without retraining or mixing them (resuming a
    checkpoint of another config is refused)."""
    key = {"model": model_fields(model), "train": train_fields(training)}
    if key == {"model": BENCHMARK_MODEL, "train": BENCHMARK_TRAIN}:
        return "runs"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return f"runs-model-{digest}"


def train_config(seed: int, steps: int) -> TrainConfig:
    """The fixed step budget every planner trains for; the split is always the world seed's."""
    every = max(1, steps // 4)
    return TrainConfig(
        **BENCHMARK_TRAIN,
        epochs=1000,
        max_steps=steps,
        seed=seed,
        split_seed=seed,
        val_fraction=VAL_FRACTION,
        test_fraction=TEST_FRACTION,
        val_every_steps=every,
        # A checkpoint at every validation: a benchmark stopped mid-training (a session end, a
        # preempted node) resumes there under --keep, bit-exactly (tests/test_resume.py), rather
        # than training that planner again (up to ~65 min of a replicate on 2 cores).
        checkpoint_every_steps=every,
    )


def _replicate(name: str, train_seed: int, seed: int) -> str:
    """Run name of a training replicate; the first keeps the plain name, so a `--keep` folder
    from a run with one training seed is reused as it is."""
    return name if train_seed == seed else f"{name}_seed{train_seed}"


def _train_one(
    manifest: str, out: str, cfg: ModelConfig, run_cfg: TrainConfig
) -> tuple[str, float]:
    """Train (or, under --keep, resume) one planner; its best checkpoint and the seconds taken."""
    t0 = time.monotonic()
    result = train(manifest, out, cfg.validate(), run_cfg)
    seconds = time.monotonic() - t0
    logger.warning("%s: %d steps in %.0f s, best val ADE %.2f m", Path(out).name, result.steps,
                   seconds, result.best_val_ade_m)  # fmt: skip
    return result.checkpoint_uri, seconds


def _set_worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)  # the parent's count: the same floats as a serial run
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")


def _in_parallel(jobs: int, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """`[fn(*args) for fn, args in calls]`, with up to `jobs` calls at a time in fresh processes.

    Why processes: each training or evaluation runs at the parent's torch thread count
    (1 by default) and decodes its JPEGs in the same process, so on 2 cores two of them side
    by side take about as long each as one alone (model 1,141-1,269 s side by side against
    1,087-1,098 s alone), and at one thread each they train to the same weights as a serial
    run. The longest calls (the world-model trainings) go first, so the short ones fill in.
    A failing call raises after the calls already running have finished and saved their
    checkpoints (a `--keep` rerun resumes them); the ones not started are dropped.
    """
    if jobs <= 1:
        return [fn(*args) for fn, args in calls]
    order = sorted(range(len(calls)), key=lambda i: -_expected_cost(calls[i]))
    results: dict[int, Any] = {}
    context = multiprocessing.get_context("spawn")  # no forked torch / thread state
    # Workers stop if this process is killed, instead of training on (up to ~20 min) beside a
    # --keep rerun that resumes the same run folder (`autoe2e.workers`).
    with worker_pool(
        jobs, context=context, setup=_set_worker_threads, setup_args=(torch.get_num_threads(),)
    ) as pool:
        futures = {pool.submit(calls[i][0], *calls[i][1]): i for i in order}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [results[i] for i in range(len(calls))]


def _expected_cost(call: tuple[Callable[..., Any], tuple[Any, ...]]) -> int:
    """Rank for scheduling: a world-model training ~3x one without, ~15x the trained baselines."""
    fn, args = call
    if fn is not _train_one:
        return 1
    cfg: ModelConfig = args[2]
    if cfg.use_world_model:
        return 3
    return 2 if cfg.input_ablation == "none" else 0


def run(
    seed: int,
    steps: int,
    root: Path,
    n: int = DEFAULT_EPISODES,
    replicates: int = 1,
    world: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    start = time.monotonic()
    config = world_config(seed, n, world).validate()
    marker = root / "episodes" / f".complete-seed-{seed}-n-{n}"
    recorded = json.dumps(world_fields(world), sort_keys=True)
    if marker.exists():  # --keep: a second run reuses the generated world, if it is this one
        found = marker.read_text().strip()
        found = "{}" if found == "ok" else found  # "ok": before --world, the defaults
        if found != recorded:
            raise SystemExit(
                f"{root}: its world was generated with GenerateConfig changes {found}, not "
                f"{recorded}; use another --keep folder for another world"
            )
    else:
        generate_episodes(root / "episodes", config, workers=0)
        marker.write_text(recorded + "\n")
    prepared = prepare_dataset(
        str(root / "episodes"), str(root / "data"), PrepareConfig(), max_workers=os.cpu_count()
    )
    manifest = prepared.manifest_uri
    model, training = model or {}, training or {}
    base = model_config(model)  # every variant shares the overrides
    folder = runs_folder(model, training)
    runs_dir, eval_dir = root / folder, root / folder.replace("runs", "eval", 1)
    variants = {
        "model": base,
        "world_model_off": dataclasses.replace(base, use_world_model=False),
        "ego_only": dataclasses.replace(base, use_world_model=False, input_ablation="ego_only"),
        "no_camera": dataclasses.replace(base, use_world_model=False, input_ablation="no_camera"),
    }
    tcfg = dataclasses.replace(train_config(seed, steps), **training)
    runs = [(name, cfg, tcfg) for name, cfg in variants.items()]
    for train_seed in train_seeds(seed, replicates)[1:]:
        for name in Q4_PAIR:
            runs.append((_replicate(name, train_seed, seed), variants[name],
                         dataclasses.replace(tcfg, seed=train_seed)))  # fmt: skip
    trained = _in_parallel(jobs, [(_train_one, (manifest, str(runs_dir / name), cfg, run_cfg))
                                  for name, cfg, run_cfg in runs])  # fmt: skip
    checkpoints = {name: uri for (name, _, _), (uri, _) in zip(runs, trained, strict=True)}
    train_s = {name: seconds for (name, _, _), (_, seconds) in zip(runs, trained, strict=True)}
    # Every other planner is scored as a trained baseline of the same pass, so Q4 comes with a
    # paired (same samples) difference and its episode-bootstrap CI. Every further model
    # replicate is scored on the same samples, for its own ablations and world-model
    # diagnostics (Q5-Q7); its ADE is also in the first pass, as a trained baseline.
    compared = [name for name in checkpoints if name != "model"]
    eval_cfg = EvalConfig(
        horizons_s=[1.0, 2.0, 3.0, 6.4],
        baseline_checkpoints={k: checkpoints[k] for k in compared},
    )
    evaluations = [(evaluate, (manifest, checkpoints["model"], str(eval_dir / "model"), eval_cfg))]
    for train_seed in train_seeds(seed, replicates)[1:]:
        name = _replicate("model", train_seed, seed)
        evaluations.append((evaluate, (manifest, checkpoints[name], str(eval_dir / name),
                                       EvalConfig(horizons_s=eval_cfg.horizons_s))))  # fmt: skip
    reports = _in_parallel(jobs, evaluations)
    report = reports[0]
    replicate_reports = dict(zip(train_seeds(seed, replicates), reports, strict=True))
    result = _summarise(report, seed, time.monotonic() - start, train_s, steps, replicate_reports)
    result["episodes"] = n
    # every setting that differs from the library's defaults, the benchmark's own included
    result["world_overrides"] = world_fields(world)
    result["model_overrides"] = model_fields(model)
    result["train_overrides"] = train_fields(training)
    result["fingerprints"] = _fingerprints(root / "episodes", root / "data")
    # What the test episodes' motion-only cues (the side-road bus) can pay a perfect history:
    # the part of Q4 the world offers by design (autoe2e.synthetic.motion_cues).
    indices = [episode_index(eid) for eid in report["episodes"]]
    price = world_cue_price(config, indices)
    off = report["trained_baselines"]["world_model_off"]["ade_3s_m"]
    result["motion_cue_price"] = {
        "mean_gain_m": price.mean_gain_m,
        "share_of_world_model_off": price.share_of(off),
        # against a single-frame planner blind to where the bus stands (the price before
        # motion_cues credited one frame's geometry)
        "prior_gain_m": price.prior_gain_m,
        "ambiguous_samples": price.ambiguous_samples,
        "samples": price.samples,
    }
    return result


#: Packages whose versions change what training computes.
FINGERPRINT_PACKAGES = ("torch", "torchvision", "timm", "numpy", "av", "pillow", "pyarrow")


def _fingerprints(episodes_dir: Path, data_dir: Path) -> dict[str, Any]:
    """What two runs must share to be comparable: the generated inputs, the prepared samples and
    frames, the package versions and the CPU. The same code gave different training results in
    two sessions (`benchmarks/quality-log.md`); these say which differed, down to the kind of
    input file."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    # file_fingerprints gives "size:sha256" for local files; the sha256 alone is what compares
    shards = file_fingerprints(str(data_dir / "shards"))
    return {
        "inputs_sha256": manifest.get("inputs_sha256"),
        "inputs_sha256_by_file_name": _inputs_by_file_name(episodes_dir),
        "shards_sha256": {name: fp.split(":", 1)[1] for name, fp in sorted(shards.items())},
        "packages": {name: importlib.metadata.version(name) for name in FINGERPRINT_PACKAGES},
        # The CPU kernels torch picks change the arithmetic: 30 steps on the same data gave best
        # val ADE 5.120596 m with AVX512 and 5.120091 m with ATEN_CPU_CAPABILITY=avx2
        # (benchmarks/quality-log.md);
        # numpy also dispatches its float kernels (the renderer's) on AVX512.
        "cpu": {
            "model": _cpu_model(),
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "numpy_avx512f": _numpy_has_avx512f(),
        },
    }


def _inputs_by_file_name(episodes_dir: Path) -> dict[str, str]:
    """One hash per kind of input file (front.mp4, ego.parquet, scenario.json, ...) over every
    episode, so a changed `inputs_sha256` names the kind of file that changed."""
    groups: dict[str, dict[str, str]] = {}
    for rel, fingerprint in file_fingerprints(str(episodes_dir)).items():
        if not Path(rel).name.startswith("."):  # the benchmark's own completion marker
            groups.setdefault(Path(rel).name, {})[rel] = fingerprint
    return {name: inputs_fingerprint(files) for name, files in sorted(groups.items())}


def _numpy_has_avx512f() -> bool | None:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2 or a layout change: unknown rather than wrong
        return None
    return bool(__cpu_features__.get("AVX512F"))


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if ":" in line
             and line.split(":", 1)[0].strip() == "model name"]  # fmt: skip
    return names[0] if names else platform.processor()


def _per_seed_values(
    report: dict[str, Any], off_ade: float, first: dict[str, Any]
) -> dict[str, Any]:
    """Q1-Q7 of one trained model, from its own evaluation report; the denominators of Q1-Q3
    (constant velocity and the camera-free baselines, trained once) come from the first
    replicate's report, which scored them on the same samples."""
    metric = "ade_3s_m"
    ade = report["planner"]["model"][metric]
    diag = report.get("world_model_diagnostics", {})
    l1 = diag.get("per_horizon", {}).get("l1", {})
    jepa = [m / c for m, c in zip(l1.get("model", []), l1.get("copy_last_frame", []), strict=True)]
    trained = first["trained_baselines"]
    return {
        "model_ade_3s_m": ade,
        # the same model with its world-model history zeroed: what remains of the gain over
        # world model off without information from the past
        "history_zeroed_ade_3s_m": report["ablations"]["history_zeroed"][metric],
        "world_model_off_ade_3s_m": off_ade,
        "Q1": ade / first["planner"]["baselines"]["constant_velocity"][metric],
        "Q2": ade / trained["ego_only"][metric],
        "Q3": ade / trained["no_camera"][metric],
        "Q4": ade / off_ade,
        "Q5": max(jepa) if jepa else None,
        "Q5_per_horizon": jepa,
        "Q6": report["ablations"]["cameras_blanked"]["ratio_to_model"],
        "Q7": diag.get("rankme_predictions_over_dim"),
    }


def _mean(values: list[float | None]) -> float | None:
    """Mean of the values; None when any run lacks the value (a mean of the rest would hide it)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present and len(present) == len(values) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing (or b is 0): an unmet target, never a guess."""
    return a / b if a is not None and b else None


def _q4_by_scenario(
    by_scenario: list[dict[str, Any]] | None, train_seeds: list[int], seed: int
) -> list[dict[str, Any]]:
    """Q4's seed means per scenario label: where the world model's history pays and where it
    costs. The first report scores every trained planner per scenario (`<name>_ade_3s_m`), each
    replicate under its own name, so the means pair like Q4's. A scenario that misses a run's
    value gets None rather than a mean of the rest."""
    rows = []
    for row in by_scenario or []:
        on, off = (
            _mean([row.get(f"{_replicate(side, s, seed)}_ade_3s_m") for s in train_seeds])
            for side in Q4_PAIR
        )
        rows.append({
            "scenario": row["scenario"], "samples": row["samples"],
            "episodes": row.get("episodes"), "model_ade_3s_m": on,
            "world_model_off_ade_3s_m": off, "ratio": _ratio(on, off),
        })  # fmt: skip
    return rows


def _summarise(
    report: dict[str, Any],
    seed: int,
    wall_s: float,
    train_s: dict[str, float],
    steps: int,
    replicate_reports: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`report` is the first replicate's evaluation (every other planner scored in it as a
    trained baseline); `replicate_reports` maps each training seed to its model's own report."""
    metric = "ade_3s_m"
    replicate_reports = replicate_reports or {seed: report}
    model = report["planner"]["model"]
    baselines = report["planner"]["baselines"]
    trained = report["trained_baselines"]
    off = trained["world_model_off"]
    rows = {
        "model (cameras + map + ego + world model)": (model[metric], model["ci95"][metric]),
        "world model off": (off[metric], off["ci95"][metric]),
        "no-camera (trained: map + ego)": (
            trained["no_camera"][metric],
            trained["no_camera"]["ci95"][metric],
        ),
        "ego-only (trained: ego history)": (
            trained["ego_only"][metric],
            trained["ego_only"]["ci95"][metric],
        ),
        "model, cameras blanked at test": (report["ablations"]["cameras_blanked"][metric], None),
        "model, cameras shuffled at test": (
            report["ablations"].get("cameras_shuffled", {}).get(metric),
            None,
        ),
        "model, world-model history zeroed": (report["ablations"]["history_zeroed"][metric], None),
        "constant velocity": (
            baselines["constant_velocity"][metric],
            baselines["constant_velocity"]["ci95"][metric],
        ),
        "CTRV": (baselines["ctrv"][metric], baselines["ctrv"]["ci95"][metric]),
    }
    for name, entry in trained.items():  # the training-seed replicates of the Q4 pair
        if name not in rows and name.split("_seed")[0] in Q4_PAIR:
            rows[f"{name.replace('_', ' ')} (trained)"] = (entry[metric], entry["ci95"][metric])
    diag = report.get("world_model_diagnostics", {})

    # One set of Q values per training seed. World model off of each seed is scored in the
    # first pass (as a trained baseline); the model of each seed by its own report.
    per_seed = []
    for train_seed, own in replicate_reports.items():
        off_name = _replicate(Q4_PAIR[1], train_seed, seed)
        values = _per_seed_values(own, trained[off_name][metric], report)
        per_seed.append({"train_seed": train_seed, **values})
    mean_on = _mean([row["model_ade_3s_m"] for row in per_seed])
    mean_off = _mean([row["world_model_off_ade_3s_m"] for row in per_seed])
    horizons = len(per_seed[0]["Q5_per_horizon"])
    jepa_ratios = [_mean([row["Q5_per_horizon"][h] for row in per_seed]) for h in range(horizons)]

    # Q1-Q4: ratios of the seed-mean ADE@3s (a ratio of means, not a mean of per-seed ratios:
    # on and off are trained independently, so which runs pair up is arbitrary); Q5-Q7: the
    # mean of the per-seed values (each a property of one trained model).
    values = {
        "Q1": _ratio(mean_on, baselines["constant_velocity"][metric]),
        "Q2": _ratio(mean_on, trained["ego_only"][metric]),
        "Q3": _ratio(mean_on, trained["no_camera"][metric]),
        "Q4": _ratio(mean_on, mean_off),
        "Q5": max(jepa_ratios) if jepa_ratios and None not in jepa_ratios else None,
        "Q6": _mean([row["Q6"] for row in per_seed]),
        "Q7": _mean([row["Q7"] for row in per_seed]),
    }
    out: dict[str, Any] = {}
    for key, (target, how, what) in TARGETS.items():
        out[key] = {"measure": what, "value": values[key], "target": target, "comparison": how,
                    "met": _met(values[key], target, how),
                    "per_train_seed": [row[key] for row in per_seed],
                    "met_runs": sum(_met(row[key], target, how) for row in per_seed)}  # fmt: skip
    out["Q5"]["per_horizon"] = jepa_ratios
    # Q4's spread over the training runs: every on-run against every off-run. A seed-mean ratio
    # inside this range is one draw of the runs' order, not an established effect.
    ons = [row["model_ade_3s_m"] for row in per_seed]
    offs = [row["world_model_off_ade_3s_m"] for row in per_seed]
    pairings = [r for a in ons for b in offs if (r := _ratio(a, b)) is not None]
    target, how, _ = TARGETS["Q4"]
    out["Q4"]["pairings"] = {
        "min": min(pairings, default=None),
        "max": max(pairings, default=None),
        "met": sum(_met(r, target, how) for r in pairings),
        "of": len(ons) * len(offs),
    }
    out["per_train_seed"] = per_seed
    out["train_seeds"] = [row["train_seed"] for row in per_seed]
    # paired on the same samples, per planner: planner minus model ADE@3s and its 95% CI
    key = metric.removesuffix("_m")  # the report's paired keys: minus_model_ade_3s_{m,ci95}
    out["paired_minus_model"] = {
        name: {
            "mean_m": entry[f"minus_model_{key}_m"],
            "ci95": entry[f"minus_model_{key}_ci95"],
        }
        for name, entry in {**trained, **report["ablations"]}.items()
    }
    out.update(
        seed=seed,
        wall_s=wall_s,
        train_s=train_s,
        steps_per_variant=steps,
        test_episodes=report["num_episodes"],
        test_samples=report["num_samples"],
        rows={k: {"ade_3s_m": v, "ci95": ci} for k, (v, ci) in rows.items()},
        by_scenario=report.get("by_scenario"),
        q4_by_scenario=_q4_by_scenario(report.get("by_scenario"), out["train_seeds"], seed),
        jepa_per_horizon=diag.get("per_horizon"),
    )
    return out


def _print(result: dict[str, Any]) -> None:
    print(f"seed {result['seed']}: {result['test_episodes']} test episodes, "
          f"{result['test_samples']} samples, {result['steps_per_variant']} steps per variant, "
          f"{result['wall_s'] / 60:.1f} min")  # fmt: skip
    for what in ("world", "model", "train"):
        if result.get(f"{what}_overrides"):
            print(f"{what} overrides: {json.dumps(result[f'{what}_overrides'], sort_keys=True)}")
    print(f"{'planner':45s} {'ADE@3s (m)':>10s}  95% CI")
    for name, row in result["rows"].items():
        value, ci = row["ade_3s_m"], row["ci95"]
        text = "-" if value is None else f"{value:.3f}"
        span = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        print(f"{name:45s} {text:>10s}  {span}")
    for name, paired in result.get("paired_minus_model", {}).items():
        ci = paired["ci95"]
        span = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
        print(f"  {name:20s} minus model (paired) {paired['mean_m']:+.3f} m {span}")
    for row in result.get("by_scenario") or []:
        print(f"  scenario {row['scenario']:14s} {row['samples']:5d} samples: model "
              f"{row.get('model_ade_3s_m') or float('nan'):.2f} m, CV "
              f"{row.get('constant_velocity_ade_3s_m') or float('nan'):.2f} m")  # fmt: skip
    for row in result.get("q4_by_scenario") or []:
        on, off, r = row["model_ade_3s_m"], row["world_model_off_ade_3s_m"], row["ratio"]
        if r is not None:
            print(f"  Q4 in {row['scenario']:16s} (seed means) world model on {on:.3f} m / off "
                  f"{off:.3f} m = {r:.3f} ({row['episodes']} episodes)")  # fmt: skip
    price = result.get("motion_cue_price")
    if price:
        print(f"motion-only cues: a perfect history can gain at most {price['mean_gain_m']:.3f} m "
              f"ADE@3s ({100 * price['share_of_world_model_off']:.1f}% of world model off; "
              f"{price['ambiguous_samples']} of {price['samples']} samples ambiguous; "
              f"{price.get('prior_gain_m', float('nan')):.3f} m were one frame blind to "
              "where the bus stands)")  # fmt: skip

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for row in result.get("per_train_seed", []):
        print(f"  training seed {row['train_seed']}: model {fmt(row['model_ade_3s_m'])} m "
              f"(history zeroed {fmt(row['history_zeroed_ade_3s_m'])}), world model off "
              f"{fmt(row['world_model_off_ade_3s_m'])} m; "
              + ", ".join(f"{key} {fmt(row[key])}" for key in TARGETS))  # fmt: skip
    runs = len(result.get("per_train_seed", [])) or 1
    for key in TARGETS:
        q = result[key]
        sign = {"le": "<=", "ge": ">=", "lt": "<"}[q["comparison"]]
        tally = f"; met in {q['met_runs']} of {runs} training runs" if runs > 1 else ""
        pairs = q.get("pairings")
        if runs > 1 and pairs and pairs["min"] is not None:
            tally += (f"; any on-run / off-run pairing {pairs['min']:.3f}-{pairs['max']:.3f}, "
                      f"met in {pairs['met']} of {pairs['of']}")  # fmt: skip
        print(f"{key} {q['measure']:50s} {fmt(q['value']):>7s} (target {sign} {q['target']}) "
              f"{'met' if q['met'] else 'MISSED'}{tally}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps per variant"
    )
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES)
    parser.add_argument(
        "--train-seeds",
        type=int,
        default=DEFAULT_TRAIN_SEEDS,
        metavar="K",
        help="train the model and world model off K times each; Q4 on their means",
    )
    # One torch thread by default: the training loop decodes JPEGs on the other core (at
    # e7e74d5 the model's first 250 steps + validation took 15 min at 2 threads, 12.9 at 1), and
    # runs compare bit for bit with earlier sessions and --keep folders (the thread count
    # changes float sums, so the trained weights).
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see above)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(DEFAULT_JOBS, os.cpu_count() or 1),
        help="trainings and evaluations at a time, each in its own process at --threads",
    )
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument(
        "--world",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="change a GenerateConfig field of the world, e.g. --world junction_probability=0.9",
    )
    parser.add_argument(
        "--model-set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="change a ModelConfig field of every variant, e.g. --model-set world_model_stage=2",
    )
    parser.add_argument(
        "--train-set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="change a TrainConfig field of every variant, e.g. --train-set history_dropout=0.75",
    )
    args = parser.parse_args()
    try:
        world = parse_world_overrides(args.world)
    except ValueError as exc:
        parser.error(f"--world {exc}")
    try:
        model = parse_model_overrides(args.model_set)
    except ValueError as exc:
        parser.error(f"--model-set {exc}")
    try:
        training = parse_train_overrides(args.train_set)
    except ValueError as exc:
        parser.error(f"--train-set {exc}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.train_seeds < 1:
        parser.error(f"--train-seeds {args.train_seeds}: train at least once (K >= 1)")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: run at least one training at a time (e.g. --jobs 2)")
    if _test_episodes(args.episodes) < MIN_TEST_EPISODES:
        parser.error(
            f"--episodes {args.episodes} holds out {_test_episodes(args.episodes)} test "
            f"episodes; at least {MIN_TEST_EPISODES} are needed"
        )
    torch.set_num_threads(args.threads)
    options = (args.episodes, args.train_seeds, world, model, training, args.jobs)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.seed, args.steps, args.keep, *options)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.seed, args.steps, Path(tmp), *options)
    _print(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
