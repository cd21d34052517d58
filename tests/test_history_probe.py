"""The history probe's parts: its cross-validation never lets a probe score by recognising an
episode it was fitted on, its windows come from the episodes' own scenario.json, and it reads
the world a kept benchmark folder was generated with."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from tiny_configs import SIDE_ROAD_WORLD

from autoe2e.config import GenerateConfig
from autoe2e.synthetic import generate_episodes
from autoe2e.synthetic.plan import plan_episode

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "history_probe.py"
_SPEC = importlib.util.spec_from_file_location("history_probe", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(probe)


def _episodes(n: int, per_episode: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    labels = np.repeat(rng.random(n) < 0.5, per_episode)
    groups = np.repeat([f"ep{i}" for i in range(n)], per_episode)
    return labels, groups


def test_a_feature_that_only_names_the_episode_scores_chance() -> None:
    rng = np.random.default_rng(0)
    labels, groups = _episodes(80, 5, rng)
    # Each episode's samples share a random code: a probe that saw the episode in training
    # would read its label off the code. (Over 12 draws of this null the grouped AUC averaged
    # 0.50 and reached 0.58 at most; the ungrouped one was 1.0 every time.)
    codes = rng.normal(size=(80, 128))
    identity = np.repeat(codes, 5, axis=0) + 0.01 * rng.normal(size=(len(labels), 128))
    assert probe.grouped_auc(identity, labels, groups) < 0.75
    ungrouped = np.arange(len(labels))  # every sample its own group: the leak the folds prevent
    assert probe.grouped_auc(identity, labels, ungrouped) > 0.9

    signal = labels[:, None] + 0.5 * rng.normal(size=(len(labels), 4))
    assert probe.grouped_auc(signal, labels, groups) > 0.9


def test_a_probe_with_one_episode_of_an_outcome_is_refused_by_name() -> None:
    labels = np.array([True] * 10 + [False] * 10)
    groups = np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 10)
    with pytest.raises(ValueError, match="crossing / waiting.*junction_probability"):
        probe.grouped_auc(labels[:, None].astype(float), labels, groups)


def test_windows_follow_the_bus_of_each_generated_episode(tmp_path: Path) -> None:
    """Seed 3: a bus that crosses in front of the ego, then one that waits."""
    cfg = SIDE_ROAD_WORLD
    ids = generate_episodes(tmp_path, cfg, workers=1)
    windows = probe.bus_windows(tmp_path, ids)
    assert sorted(windows) == sorted(ids)
    for index, eid in enumerate(ids):
        start, end, crossing = windows[eid]
        junction = plan_episode(np.random.default_rng([3, index]), cfg).plan.junction
        assert crossing is junction.pulls_out
        assert 0.0 < end - start <= probe.WINDOW_S
        if crossing:
            assert end <= junction.pull_out_time_s + 1e-3  # before one frame shows the intent
    assert {w[2] for w in windows.values()} == {True, False}


@pytest.mark.parametrize(
    ("marker", "overrides"),
    [("ok", {}), (json.dumps({"junction_probability": 0.85}), {"junction_probability": 0.85})],
)
def test_the_world_is_read_from_the_kept_folder(
    tmp_path: Path, marker: str, overrides: dict
) -> None:
    (tmp_path / "episodes").mkdir()
    (tmp_path / "episodes" / ".complete-seed-8-n-150").write_text(marker + "\n")
    assert probe.world_of(tmp_path) == GenerateConfig(num_episodes=150, seed=8, **overrides)


def test_a_folder_the_benchmark_did_not_make_is_refused(tmp_path: Path) -> None:
    (tmp_path / "episodes").mkdir()
    with pytest.raises(SystemExit, match="completion marker"):
        probe.world_of(tmp_path)
