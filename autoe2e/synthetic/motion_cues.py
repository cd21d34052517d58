"""The most a perfect view of the past can gain in this world: the price of its motion-only cues.

The world model's visual history (the last four frames at 1 Hz) can only help where the future
depends on something that neither the current frames nor the ego history show. In this world
that is the side-road bus: a waiting and a crossing bus look alike, and the ego's own state is
the same until it reacts. For each side-road episode this module drives the ego twice from the
episode's plan, once with the bus crossing and once with it waiting (everything else equal), and
prices the difference at every sample time before the bus shows its intent by crossing the
give-way line (the ego reacts only later), by how unsure one frame leaves a planner there.

The price: a planner that sees one frame and the ego history faces two futures, crossing and
waiting, that differ by d (ADE@3s between them). Under the L1 / L2 errors used here its best
answer is the likelier of the two, which costs min(P, 1 - P) * d in expectation, where P is the
probability that the bus crosses *given what the frame shows*; a planner with a perfect history
pays nothing. Summed over a set of episodes and divided by its number of samples, that is the
most that *knowing the past* can take off the mean ADE@3s of an ideal single-frame planner. It
is not a floor for the benchmark's Q4 (world model on / off): a trained planner is not ideal,
and the world model also adds capacity and features of the current frames, so a run can beat it
or miss it by the run-to-run spread. It says how much of Q4 the world's cues can carry by design.

One frame is not blind to the outcome. A crossing bus's pull-out is timed to the ego's arrival
(it must make the ego brake), so where a crossing bus stands on its arm goes with how far the
ego is from the side road, while a waiting bus stands where it stands. A linear probe on one
frame's pooled backbone features of a trained benchmark model told crossing from waiting with
a cross-validated AUC of 0.87 on the side-road world's seed-7 train + val episodes, as well as a
classifier given the exact (bus position, ego distance) does (0.89); the four history frames
did no better (0.81). So P here is estimated from that geometry over reference episodes of the
same world (`SingleFramePosterior`); the old price, which set P to the world's pull-out
probability for every sample, is kept as `prior_gain_m` and overstated the history's worth.
A sample is priced only when the bus was in the front camera's view a second earlier too: a
1 Hz history that shows the bus in one frame only holds no motion either.

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
from autoe2e.synthetic.generate import check_config, side_vehicle_in_view
from autoe2e.synthetic.plan import EpisodePlan, plan_episode
from autoe2e.synthetic.render import forward_camera
from autoe2e.synthetic.traffic import TrafficPlan

#: ADE@3s: the mean over the trajectory steps up to this horizon.
HORIZON_S = 3.0


#: Kernel widths (bus position on its arm, ego distance to the side road; metres) of the
#: single-frame posterior, i.e. how sharply one frame is read. Calibrated on the side-road
#: world's seed-7 train + val samples (`benchmarks/history_probe.py`): at these widths the
#: posterior separates crossing from waiting with AUC 0.886, what a linear probe reads from one
#: frame of a trained benchmark model (0.87-0.90). Sharper (2, 4) gives AUC 0.906 and about
#: half the price; blind (infinite widths) is the prior, `prior_gain_m`.
FRAME_KERNEL_M = (6.0, 12.0)
#: Side-road episodes the posterior is estimated from (their own RNG stream, never a priced one).
REFERENCE_EPISODES = 200
#: Pseudo-count pulling the posterior towards the prior where few references are near.
PRIOR_WEIGHT = 1.0
#: Stream tag that keeps reference episodes apart from the world's own ([seed, index]).
_REFERENCE_STREAM = 7_919


def frame_geometry(plan: EpisodePlan, times: np.ndarray) -> np.ndarray:
    """What one frame at each of `times` shows of the side road `[N, 2]`: the bus's position on
    its arm and the ego's distance (along its lane) to the side road, metres."""
    junction = plan.plan.junction
    if junction is None:
        raise ValueError("the episode has no side road")
    arm = junction.arm_position_m(times)
    gap = float(plan.lane.lane_s_of(junction.road_s_m)) - np.interp(
        times, plan.motion.t, plan.motion.ego_s
    )
    return np.stack([arm, gap], axis=-1)


@dataclass(frozen=True)
class SingleFramePosterior:
    """P(the bus crosses | one frame's `frame_geometry`), a kernel estimate over reference
    samples of the same world, shrunk to `prior` where references are sparse."""

    points: np.ndarray  # [N, 2]
    crossing: np.ndarray  # [N] bool
    prior: float
    kernel_m: tuple[float, float] = FRAME_KERNEL_M

    def __call__(self, geometry: np.ndarray) -> np.ndarray:
        z = (geometry[:, None, :] - self.points[None, :, :]) / np.asarray(self.kernel_m)
        weight = np.exp(-0.5 * (z**2).sum(-1))
        hits = weight @ self.crossing.astype(np.float64)
        posterior = (hits + PRIOR_WEIGHT * self.prior) / (weight.sum(-1) + PRIOR_WEIGHT)
        return np.clip(posterior, 0.0, 1.0)


def reference_posterior(
    config: GenerateConfig,
    episodes: int = REFERENCE_EPISODES,
    kernel_m: tuple[float, float] = FRAME_KERNEL_M,
) -> SingleFramePosterior:
    """The posterior of `config`'s world, from `episodes` side-road episodes planned like its own
    (every episode given a side road, so none is wasted) at the sample times before pull-out."""
    side_roads = dataclasses.replace(config, lead_vehicle_probability=0.0, junction_probability=1.0)
    times = sample_times(config.duration_s)
    points, crossing = [], []
    for i in range(episodes):
        rng = np.random.default_rng([config.seed, _REFERENCE_STREAM, i])
        plan = plan_episode(rng, side_roads)
        junction = plan.plan.junction
        if junction is None:
            continue
        before = times[times <= junction.pull_out_time_s]
        points.append(frame_geometry(plan, before))
        crossing.append(np.full(len(before), junction.pulls_out))
    if not points:
        raise ValueError(f"{episodes} reference episodes held no side road")
    return SingleFramePosterior(
        np.concatenate(points),
        np.concatenate(crossing),
        config.junction_pull_out_probability,
        kernel_m,
    )


@dataclass(frozen=True)
class EpisodeCuePrice:
    """One episode: its samples, how many of them a motion-only cue leaves ambiguous to a
    single-frame planner, and that planner's expected extra ADE@3s summed over them (m)."""

    index: int
    samples: int
    ambiguous_samples: int
    hedge_cost_m: float
    crossing: bool | None  # None: no side road
    #: The same with P = the world's pull-out probability at every sample before pull-out,
    #: visible or not (the price before one frame's geometry was accounted for).
    prior_hedge_cost_m: float = 0.0


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

    @property
    def prior_gain_m(self) -> float:
        """`mean_gain_m` against a single-frame planner blind to the bus's position."""
        return sum(e.prior_hedge_cost_m for e in self.episodes) / max(self.samples, 1)

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


def episode_cue_price(
    plan: EpisodePlan,
    index: int,
    config: GenerateConfig,
    posterior: SingleFramePosterior | None = None,
) -> EpisodeCuePrice:
    """Prices one episode; `posterior` defaults to `reference_posterior(config)` (seconds:
    pass one to price many episodes)."""
    times = sample_times(config.duration_s)
    junction = plan.plan.junction
    if junction is None:
        return EpisodeCuePrice(index, len(times), 0, 0.0, None)
    posterior = posterior or reference_posterior(config)
    crossing, waiting = junction_twins(plan, config)
    # Until its front passes the line, one frame shows where the bus stands (which `posterior`
    # reads), not whether it moves; the ego history shows nothing until the ego reacts, a
    # perception delay later.
    before = times[times <= junction.pull_out_time_s]
    d = np.array([_ade_3s(crossing, waiting, float(t)) for t in before])
    p = config.junction_pull_out_probability
    prior_cost = min(p, 1.0 - p) * float(d.sum())
    # A history shows motion only if the bus was in view a second before the sample too.
    seen_from, _ = side_vehicle_in_view(plan, forward_camera(config), before - 1.0)
    shows_motion = np.zeros(len(before), bool)
    if seen_from is not None:
        shows_motion = before - 1.0 >= seen_from - 1e-9
    crosses = posterior(frame_geometry(plan, before))
    cost = np.minimum(crosses, 1.0 - crosses) * d * shows_motion
    return EpisodeCuePrice(
        index,
        len(times),
        int(((d > 0.01) & shows_motion).sum()),
        float(cost.sum()),
        junction.pulls_out,
        prior_cost,
    )


def world_cue_price(
    config: GenerateConfig,
    indices: Iterable[int] | None = None,
    kernel_m: tuple[float, float] = FRAME_KERNEL_M,
    references: int = REFERENCE_EPISODES,
) -> WorldCuePrice:
    """Prices episodes `indices` (default: all) of the world `config` describes, from their
    plans (the same generator streams as `generate_episode`, so the same episodes)."""
    check_config(config)
    chosen = range(config.num_episodes) if indices is None else indices
    posterior = reference_posterior(config, references, kernel_m)
    priced = []
    for index in chosen:
        plan = plan_episode(np.random.default_rng([config.seed, index]), config)
        priced.append(episode_cue_price(plan, index, config, posterior))
    return WorldCuePrice(tuple(priced))
