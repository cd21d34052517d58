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


@pytest.mark.parametrize(("frames", "stage"), [("pooled", -1), ("cells", 2)])
def test_every_representation_comes_from_one_sample_window(frames: str, stage: int) -> None:
    """Each probed representation is one flat vector per sample, the change rows twice their
    frame's size, and the visual history is what the model's own forward pass hands the planner
    (the probe must read the world model the way training does, whichever map it reads)."""
    import torch
    from test_model import make_batch
    from tiny_configs import tiny_model_config

    from autoe2e.model import AutoE2E

    torch.manual_seed(0)
    cfg = tiny_model_config(
        image_height=64, image_width=96, world_model_frames=frames, world_model_stage=stage
    )
    model = AutoE2E(cfg)
    model.eval()
    batch = make_batch(model.cfg, b=1, v=3)
    history = torch.cat([batch["history_images"][:, :-1], batch["images"][:, None]], dim=1)
    item = {
        "history_images": (history[0] * 255).to(torch.uint8),
        "camera_index": batch["camera_index"][0],
        "history_valid": batch["history_valid"][0],
        "ego_history": batch["ego_history"][0],
    }
    found = probe.representations(model, item, views=[0, 2])
    assert all(np.asarray(value).ndim == 1 for value in found.values())
    cells = found["backbone cells (front, right), current frame"]
    assert cells.numel() == 2 * model.backbone.channels * 2 * 3  # two views' 2x3 maps
    assert found["backbone cells (front, right), current frame + change in 1 s"].numel() == (
        2 * cells.numel()
    )
    read = found["backbone cells the world model reads (front, right), current frame"]
    channels, rows, columns = model.backbone.stage_shape(stage, 64, 96)
    stride = 8 if stage == 2 else 32  # MobileNetV3: stage 2 is the stride-8 map, -1 the last
    assert (rows, columns) == (64 // stride, 96 // stride)
    assert read.numel() == 2 * channels * rows * columns  # the two views' maps, not the last's
    uint8_batch = {**batch, "images": item["history_images"][None, -1],
                   "history_images": item["history_images"][None]}  # fmt: skip
    with torch.no_grad():
        expected = model(uint8_batch).visual_history[0]
    assert torch.allclose(found["world model, visual history (planner input)"], expected, atol=1e-5)


def test_the_bus_blob_is_where_its_colour_is() -> None:
    import torch

    from autoe2e.synthetic.traffic import SIDE_VEHICLE_COLOUR

    frame = torch.zeros(3, 64, 112, dtype=torch.uint8)
    assert probe.bus_blob(frame).tolist() == [0.0] * 6
    frame[:, 10:13, 80:88] = torch.tensor(SIDE_VEHICLE_COLOUR, dtype=torch.uint8)[:, None, None]
    frame[:, 40:50, 0:20] = 200  # grey: not the bus
    assert probe.bus_blob(frame).tolist() == [1.0, 83.5, 11.0, 8.0, 3.0, 24.0]
