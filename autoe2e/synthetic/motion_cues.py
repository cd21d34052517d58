"""The most a perfect view of the past can gain in this world: the price of its motion-only cues.

The world model's visual history (the last four frames at 1 Hz) can only help where the future
depends on something that neither the current frames nor the ego history show. In this world
that is the side-road bus: a waiting and a crossing bus look alike in one frame, and the ego's
own state is the same until it reacts. For each side-road episode this module drives the ego
twice from the episode's plan, once with the bus crossing and once with it waiting (everything
else equal), and prices the difference at every sample time at which one frame cannot tell the
two apart (the bus's front still behind the give-way line; the ego reacts only later).

The price: a planner that sees one frame and the ego history faces two futures, crossing with
the world's pull-out probability p and waiting with 1 - p, that differ by d (ADE@3s between
them). Under the L1 / L2 errors used here its best answer is the likelier of the two, which
costs min(p, 1 - p) * d in expectation; a planner with a perfect history pays nothing. Summed
over a set of episodes and divided by its number of samples, that is the most that *knowing
the past* can take off the mean ADE@3s of an ideal single-frame planner. It is not a floor for
the benchmark's Q4 (world model on / off): a trained planner is not ideal, and the world model
also adds capacity and features of the current frames, so a run can beat it or miss it by the
run-to-run spread. It says how much of Q4 the world's cues can carry by design.

Why: Q4 costs a ~45 min benchmark per seed; this costs seconds from the plans alone (nothing is
rendered) and says whether a world *can* reward a history before anyone trains on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from autoe2e.config import GenerateConfig, PrepareConfig
from autoe2e.synthetic.ego import Motion, simulate
from autoe2e.synthetic.generate import check_config
from autoe2e.synthetic.plan import EpisodePlan, plan_episode
from autoe2e.synthetic.traffic import TrafficPlan

#: ADE@3s: the mean over the trajectory steps up to this horizon.
HORIZON_S = 3.0


@dataclass(frozen=True)
class EpisodeCuePrice:
    """One episode: its samples, how many of them a motion-only cue leaves ambiguous to a
    single-frame planner, and that planner's expected extra ADE@3s summed over them (m)."""

    index: int
    samples: int
    ambiguous_samples: int
    hedge_cost_m: float
    crossing: bool | None  # None: no side road


@dataclass(frozen=True)
class WorldCuePrice:
    episodes: tuple[EpisodeCuePrice, ...]

    @property
    def samples(self) -> int:
        return sum(e.samples for e in self.episodes)

    @property
    def ambiguous_samples(self) -> int:
        return sum(e.ambiguous_samples for e in self.episodes)

    @property
    def mean_gain_m(self) -> float:
        """The most a perfect history can take off the mean ADE@3s over these samples."""
        return sum(e.hedge_cost_m for e in self.episodes) / max(self.samples, 1)

    def share_of(self, ade_3s_m: float) -> float:
        """The gain as a share of a planner's mean ADE@3s on the same samples."""
        return self.mean_gain_m / ade_3s_m


def sample_times(duration_s: float, prepare: PrepareConfig | None = None) -> np.ndarray:
    """The sample times `prepare` keeps from an episode of `duration_s`: its reactive grid from
    the first tick with a full ego history to the last with a full trajectory (6.4 .. 17.6 s at
    10 Hz for 24 s with the defaults, 113 samples, as the prepared benchmark episodes hold)."""
    cfg = prepare or PrepareConfig()
    first = cfg.ego_history_steps  # the tick whose ego history (that many ticks) is complete
    last = round((duration_s - cfg.trajectory_steps * cfg.trajectory_dt_s) * cfg.reactive_hz)
    return np.arange(first, last + 1) / cfg.reactive_hz


def _ade_3s(a: Motion, b: Motion, t: float, prepare: PrepareConfig | None = None) -> float:
    """ADE@3s between two ego runs that share the state at `t` (distance along the lane)."""
    dt = (prepare or PrepareConfig()).trajectory_dt_s
    future = t + np.arange(1, round(HORIZON_S / dt) + 1) * dt
    da = np.interp(future, a.t, a.ego_s) - np.interp(t, a.t, a.ego_s)
    db = np.interp(future, b.t, b.ego_s) - np.interp(t, b.t, b.ego_s)
    return float(np.abs(da - db).mean())


def junction_twins(plan: EpisodePlan, config: GenerateConfig) -> tuple[Motion, Motion]:
    """The ego's drive through a side-road episode with its bus crossing and with it waiting;
    the episode's own drive is one of the two."""
    junction = plan.plan.junction
    if junction is None:
        raise ValueError("the episode has no side road")
    start_s, start_v = float(plan.motion.ego_s[0]), float(plan.motion.ego_v[0])

    def drive(pulls_out: bool) -> Motion:
        side = dataclasses.replace(junction, pulls_out=pulls_out)
        traffic = TrafficPlan(None, (), None, None, side)
        return simulate(plan.lane, traffic, config, start_s, start_v, config.duration_s)

    return drive(True), drive(False)


def episode_cue_price(plan: EpisodePlan, index: int, config: GenerateConfig) -> EpisodeCuePrice:
    times = sample_times(config.duration_s)
    junction = plan.plan.junction
    if junction is None:
        return EpisodeCuePrice(index, len(times), 0, 0.0, None)
    crossing, waiting = junction_twins(plan, config)
    # One frame shows the bus's position, not its motion, until its front passes the line; the
    # ego history shows nothing until the ego reacts, a perception delay later.
    ambiguous_until = junction.pull_out_time_s
    p = config.junction_pull_out_probability
    weight = min(p, 1.0 - p)
    costs = [_ade_3s(crossing, waiting, float(t)) for t in times if t <= ambiguous_until]
    return EpisodeCuePrice(
        index,
        len(times),
        sum(1 for c in costs if c > 0.01),
        weight * float(sum(costs)),
        junction.pulls_out,
    )


def world_cue_price(config: GenerateConfig, indices: Iterable[int] | None = None) -> WorldCuePrice:
    """Prices episodes `indices` (default: all) of the world `config` describes, from their
    plans (the same generator streams as `generate_episode`, so the same episodes)."""
    check_config(config)
    chosen = range(config.num_episodes) if indices is None else indices
    priced = []
    for index in chosen:
        plan = plan_episode(np.random.default_rng([config.seed, index]), config)
        priced.append(episode_cue_price(plan, index, config))
    return WorldCuePrice(tuple(priced))
