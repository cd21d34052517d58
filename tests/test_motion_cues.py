"""The price of the world's motion-only cues is computed from the episodes the generator writes:
the twin drives reproduce the episode's own drive, only samples before the bus shows its
intent in one frame are priced, one frame's geometry is credited to the single-frame planner,
and a world without side roads prices nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autoe2e.config import ConfigError, GenerateConfig
from autoe2e.synthetic.generate import side_vehicle_in_view
from autoe2e.synthetic.motion_cues import (
    SingleFramePosterior,
    episode_cue_price,
    frame_geometry,
    junction_twins,
    reference_posterior,
    sample_times,
    world_cue_price,
)
from autoe2e.synthetic.plan import plan_episode
from autoe2e.synthetic.render import forward_camera
from autoe2e.synthetic.traffic import MIN_PULL_OUT_LEAD_S, VEHICLE_LENGTH_M

#: Reference side-road episodes for the posterior in these tests (the default 200 take ~20 s).
FEW_REFERENCES = 40


def _world(**overrides: object) -> GenerateConfig:
    base = dict(num_episodes=12, seed=3, lead_vehicle_probability=0.0, junction_probability=1.0)
    base.update(overrides)
    return GenerateConfig(**base)  # type: ignore[arg-type]


def _plan(config: GenerateConfig, index: int = 0):
    return plan_episode(np.random.default_rng([config.seed, index]), config)


@pytest.mark.parametrize("pulls_out", [True, False])
def test_the_twin_drives_are_the_episode_and_its_other_outcome(pulls_out: bool) -> None:
    cfg = _world(junction_pull_out_probability=1.0 if pulls_out else 0.0)
    plan = _plan(cfg)
    junction = plan.plan.junction
    assert junction is not None and junction.pulls_out is pulls_out
    crossing, waiting = junction_twins(plan, cfg)
    own = crossing if pulls_out else waiting
    np.testing.assert_allclose(own.ego_s, plan.motion.ego_s)
    # The same drive until the ego reacts to the crossing bus, a perception delay after it
    # pulls out; then the crossing twin yields and falls metres behind within 3 s.
    react = junction.pull_out_time_s + junction.perception_s
    before = crossing.t < react
    np.testing.assert_allclose(crossing.ego_s[before], waiting.ego_s[before])
    later = np.interp(react + 3.0, waiting.t, waiting.ego_s)
    assert later - np.interp(react + 3.0, crossing.t, crossing.ego_s) > 3.0


def _blind(config: GenerateConfig) -> SingleFramePosterior:
    """A single-frame planner that reads nothing from the frame: the posterior is the prior."""
    return reference_posterior(config, FEW_REFERENCES, kernel_m=(1e9, 1e9))


def test_only_samples_that_one_frame_cannot_tell_apart_are_priced() -> None:
    cfg = _world(junction_pull_out_probability=0.5)
    plan = _plan(cfg)
    price = episode_cue_price(plan, 0, cfg, _blind(cfg))
    junction = plan.plan.junction
    times = sample_times(cfg.duration_s)
    assert len(times) == price.samples == 113  # 6.4 .. 17.6 s at 10 Hz for a 24 s episode
    before_pull_out = times[times <= junction.pull_out_time_s]
    # Priced: the samples whose next 3 s hold the ego's reaction, up to the pull-out (at most 3 s
    # before the reaction, so fewer than 30), not the ones after it or far before it ...
    assert 5 <= price.ambiguous_samples <= min(len(before_pull_out), 30)
    # ... and only where the front camera showed the bus a second earlier too (a history with
    # the bus in one frame holds no motion).
    seen_from, _ = side_vehicle_in_view(plan, forward_camera(cfg), before_pull_out - 1.0)
    assert seen_from is not None
    assert price.ambiguous_samples <= int((before_pull_out - 1.0 >= seen_from).sum())
    # ... where the two futures differ by 0.2+ m ADE@3s on average (priced at min(p, 1 - p)
    # by a planner blind to the frame, so as the prior price on those samples).
    assert price.hedge_cost_m / price.ambiguous_samples > 0.5 * 0.2
    assert price.hedge_cost_m <= price.prior_hedge_cost_m + 1e-9

    # A bus that is certain to cross (or to wait) leaves nothing to hedge.
    certain = dataclasses.replace(cfg, junction_pull_out_probability=1.0)
    priced = episode_cue_price(_plan(certain), 0, certain, _blind(certain))
    assert priced.hedge_cost_m == priced.prior_hedge_cost_m == 0.0


def test_one_frame_tells_a_crossing_bus_from_a_waiting_one_and_the_price_credits_it() -> None:
    """A crossing bus's pull-out is timed to the ego's arrival, so where it stands goes with the
    ego's distance to the side road; a waiting bus's does not. The posterior over that geometry,
    fitted on reference episodes, separates the world's own (unseen) episodes, and the price
    that credits it is well below the blind one."""
    cfg = _world(junction_pull_out_probability=0.5, num_episodes=16)
    posterior = reference_posterior(cfg, FEW_REFERENCES)
    times = sample_times(cfg.duration_s)
    scores = {True: [], False: []}
    for index in range(cfg.num_episodes):
        plan = _plan(cfg, index)
        junction = plan.plan.junction
        before = times[
            (times <= junction.pull_out_time_s) & (times >= junction.pull_out_time_s - 3)
        ]
        scores[junction.pulls_out].extend(posterior(frame_geometry(plan, before)))
    crossing, waiting = np.array(scores[True]), np.array(scores[False])
    assert len(crossing) and len(waiting)
    # AUC: how often a crossing sample scores above a waiting one.
    auc = (crossing[:, None] > waiting[None, :]).mean()
    assert auc > 0.75, auc
    assert 0.0 <= posterior(np.array([[1e4, 1e4]]))[0] == pytest.approx(0.5, abs=0.01)

    credited = world_cue_price(cfg, references=FEW_REFERENCES)
    assert 0.0 < credited.mean_gain_m < 0.8 * credited.prior_gain_m
    blind = world_cue_price(cfg, kernel_m=(1e9, 1e9), references=FEW_REFERENCES)
    assert blind.prior_gain_m == pytest.approx(credited.prior_gain_m)
    # Blind, the credited price is the prior price up to the samples the history cannot see.
    assert credited.mean_gain_m < blind.mean_gain_m <= blind.prior_gain_m + 1e-12
    assert blind.mean_gain_m > 0.8 * blind.prior_gain_m


def test_a_world_prices_its_side_roads_and_nothing_else() -> None:
    none = world_cue_price(
        _world(junction_probability=0.0, num_episodes=6), references=FEW_REFERENCES
    )
    assert none.mean_gain_m == 0.0 and none.ambiguous_samples == 0
    assert {e.crossing for e in none.episodes} == {None}

    some = world_cue_price(
        _world(junction_probability=0.5, num_episodes=12), references=FEW_REFERENCES
    )
    with_side_road = [e for e in some.episodes if e.crossing is not None]
    assert 0 < len(with_side_road) < 12
    assert all(e.hedge_cost_m > 0 for e in with_side_road)
    assert all(e.hedge_cost_m == 0 for e in some.episodes if e.crossing is None)
    assert 0.0 < some.mean_gain_m < 0.2
    assert some.share_of(0.5) == pytest.approx(some.mean_gain_m / 0.5)

    chosen = world_cue_price(
        _world(junction_probability=0.5), indices=[1, 4], references=FEW_REFERENCES
    )
    assert [e.index for e in chosen.episodes] == [1, 4]
    assert chosen.episodes[1] == some.episodes[4]


def test_a_bad_world_config_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="junction_probability"):
        world_cue_price(_world(junction_probability=1.5), references=FEW_REFERENCES)


def test_a_later_pull_out_makes_the_ego_brake_harder_and_the_bus_motion_worth_more() -> None:
    """`junction_pull_out_lead_s`: at the shortest lead allowed the yielding ego still stops
    before the side road while the bus is in it, braking harder than at the default; and the
    same episodes, with the bus pulling out later, price the history higher."""
    late = _world(
        junction_pull_out_probability=1.0,
        junction_pull_out_lead_s=[MIN_PULL_OUT_LEAD_S, MIN_PULL_OUT_LEAD_S],
    )
    default = dataclasses.replace(late, junction_pull_out_lead_s=[2.4, 3.4])
    hardest = {}
    for cfg in (late, default):
        decel = []
        for index in range(6):
            plan = _plan(cfg, index)
            junction, motion = plan.plan.junction, plan.motion
            edge = junction.near_edge_lane_s(plan.lane)
            in_road = (motion.t >= junction.pull_out_time_s) & (motion.t <= junction.clear_time_s())
            front = motion.ego_s[in_road] + VEHICLE_LENGTH_M / 2
            assert front.max() < edge, (cfg.junction_pull_out_lead_s, index)
            decel.append(-motion.ego_a.min())
        hardest[cfg is late] = max(decel)
    assert hardest[True] > hardest[False] + 1.0, hardest

    mixed = dict(junction_pull_out_probability=0.5, num_episodes=8)
    priced = {
        lead: world_cue_price(
            _world(**mixed, junction_pull_out_lead_s=lead), references=FEW_REFERENCES
        ).mean_gain_m
        for lead in ((2.0, 2.6), (2.4, 3.4))
    }
    assert priced[(2.0, 2.6)] > 1.2 * priced[(2.4, 3.4)] > 0.0, priced
