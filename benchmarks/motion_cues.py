"""How much can a perfect history gain in a synthetic world? Seconds, no rendering, no training.

    .venv/bin/python benchmarks/motion_cues.py [--seed S] [--episodes N] [--set FIELD=JSON ...]
        [--reference-ade-m M]

Prices the world's motion-only cues (the quality benchmark's world, `quality.BENCHMARK_WORLD`,
changed by `--set`) (`autoe2e.synthetic.motion_cues`: the side-road bus that
waits or crosses) over all its episodes and over the quality benchmark's test episodes, and
prints the most a perfect 1 Hz history can take off an ideal single-frame planner's mean
ADE@3s, as metres and as a share of `--reference-ade-m` (the world-model-off planner's ADE@3s;
default: its value in the last quality benchmark, README). Use it to judge a world design for
Q4 (world model on / off <= 0.95) before spending a ~45 min benchmark per seed on it: a world
whose cues are worth ~2% cannot be expected to show a 5% gain but by chance.
"""

from __future__ import annotations

import argparse
import time

from quality import (
    DEFAULT_EPISODES,
    DEFAULT_SEED,
    TEST_FRACTION,
    VAL_FRACTION,
    parse_world_overrides,
    world_config,
)

from autoe2e.splits import split_episodes
from autoe2e.synthetic import episode_id
from autoe2e.synthetic.motion_cues import WorldCuePrice, world_cue_price

#: World model off, ADE@3s, seeds 7 / 8 of the quality benchmark's side-road world with its
#: near-term-weighted training (0.294 / 0.315 m, README); 0.43 in the default world before.
REFERENCE_ADE_M = 0.30


def _line(name: str, price: WorldCuePrice, reference_m: float) -> str:
    return (
        f"{name:14s} {len(price.episodes):4d} episodes, {price.samples:6d} samples, "
        f"{price.ambiguous_samples:5d} ambiguous: gain <= {price.mean_gain_m:.4f} m "
        f"= {100 * price.share_of(reference_m):.1f}% of {reference_m:.3f} m "
        f"(one frame's geometry ignored: {price.prior_gain_m:.4f} m "
        f"= {100 * price.prior_gain_m / reference_m:.1f}%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override a GenerateConfig field, e.g. --set junction_probability=1.0",
    )
    parser.add_argument("--reference-ade-m", type=float, default=REFERENCE_ADE_M)
    args = parser.parse_args()
    try:
        overrides = parse_world_overrides(args.set)
    except ValueError as exc:
        parser.error(f"--set {exc}")
    config = world_config(args.seed, args.episodes, overrides)
    start = time.monotonic()
    world = world_cue_price(config)
    ids = [episode_id(args.seed, i) for i in range(args.episodes)]
    # The benchmark splits with split_seed = seed.
    test = set(split_episodes(ids, VAL_FRACTION, TEST_FRACTION, seed=args.seed)["test"])
    pairs = zip(world.episodes, ids, strict=True)
    held_out = WorldCuePrice(tuple(e for e, eid in pairs if eid in test))
    crossing = sum(e.crossing is True for e in world.episodes)
    waiting = sum(e.crossing is False for e in world.episodes)
    print(f"seed {args.seed}, {overrides or 'defaults'}: {crossing} crossing and {waiting} "
          f"waiting buses, priced in {time.monotonic() - start:.0f} s")  # fmt: skip
    print(_line("all episodes", world, args.reference_ade_m))
    print(_line("test episodes", held_out, args.reference_ade_m))


if __name__ == "__main__":
    main()
