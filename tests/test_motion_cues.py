"""The price of the world's motion-only cues is computed from the episodes the generator writes:
the twin drives reproduce the episode's own drive, only samples before the bus shows its
intent in one frame are priced, and a world without side roads prices nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autoe2e.config import ConfigError, GenerateConfig
from autoe2e.synthetic.motion_cues import (
    episode_cue_price,
    junction_twins,
    sample_times,
    world_cue_price,
)
from autoe2e.synthetic.plan import plan_episode


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


def test_only_samples_that_one_frame_cannot_tell_apart_are_priced() -> None:
    cfg = _world(junction_pull_out_probability=0.5)
    plan = _plan(cfg)
    price = episode_cue_price(plan, 0, cfg)
    junction = plan.plan.junction
    times = sample_times(cfg.duration_s)
    assert len(times) == price.samples == 113  # 6.4 .. 17.6 s at 10 Hz for a 24 s episode
    before_pull_out = int((times <= junction.pull_out_time_s).sum())
    # Priced: the samples whose next 3 s hold the ego's reaction, up to the pull-out (at most 3 s
    # before the reaction, so fewer than 30), not the ones after it or far before it.
    assert 5 <= price.ambiguous_samples <= min(before_pull_out, 30)
    # ... where the two futures differ by 0.2+ m ADE@3s on average (priced at min(p, 1 - p)).
    assert price.hedge_cost_m / price.ambiguous_samples > 0.5 * 0.2

    # A bus that is certain to cross (or to wait) leaves nothing to hedge.
    certain = dataclasses.replace(cfg, junction_pull_out_probability=1.0)
    assert episode_cue_price(_plan(certain), 0, certain).hedge_cost_m == 0.0


def test_a_world_prices_its_side_roads_and_nothing_else() -> None:
    none = world_cue_price(_world(junction_probability=0.0, num_episodes=6))
    assert none.mean_gain_m == 0.0 and none.ambiguous_samples == 0
    assert {e.crossing for e in none.episodes} == {None}

    some = world_cue_price(_world(junction_probability=0.5, num_episodes=12))
    with_side_road = [e for e in some.episodes if e.crossing is not None]
    assert 0 < len(with_side_road) < 12
    assert all(e.hedge_cost_m > 0 for e in with_side_road)
    assert all(e.hedge_cost_m == 0 for e in some.episodes if e.crossing is None)
    assert 0.0 < some.mean_gain_m < 0.2
    assert some.share_of(0.5) == pytest.approx(some.mean_gain_m / 0.5)

    chosen = world_cue_price(_world(junction_probability=0.5), indices=[1, 4])
    assert [e.index for e in chosen.episodes] == [1, 4]
    assert chosen.episodes[1] == some.episodes[4]


def test_a_bad_world_config_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="junction_probability"):
        world_cue_price(_world(junction_probability=1.5))
