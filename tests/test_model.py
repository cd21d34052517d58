"""AutoE2E model: shapes, camera counts, gradient isolation, EMA, zero-init, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_configs import tiny_model_config

from autoe2e.config import ConfigError, ModelConfig
from autoe2e.evaluation.metrics import constant_velocity
from autoe2e.model import (
    AutoE2E,
    CheckpointError,
    ModelInputError,
    TargetEncoder,
    VisualHistoryBuffer,
    checkpoint_bytes,
    ema_momentum,
    load_into,
    load_model,
)
from autoe2e.model.trajectory import integrate_controls
from autoe2e.training.losses import jepa_l1, trajectory_l1

torch.set_num_threads(2)


def make_batch(cfg: ModelConfig, b: int = 2, v: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.image_height, cfg.image_width
    ego = torch.zeros(b, cfg.ego_history_steps, 4)
    ego[:, :, 0] = torch.linspace(5, 12, b)[:, None]
    ego[:, :, 2] = 0.1
    return {
        "images": torch.rand(b, v, 3, h, w, generator=g),
        "camera_index": torch.arange(v).repeat(b, 1),
        "history_images": torch.rand(b, cfg.history_len, v, 3, h, w, generator=g),
        "history_valid": torch.ones(b, cfg.history_len, dtype=torch.bool),
        "future_images": torch.rand(b, cfg.future_steps, v, 3, h, w, generator=g),
        "future_valid": torch.ones(b, cfg.future_steps, dtype=torch.bool),
        "map_raster": torch.rand(b, 3, cfg.map_raster_size, cfg.map_raster_size, generator=g),
        "map_valid": torch.ones(b),
        "ego_history": ego,
        "future_trajectory": torch.rand(b, cfg.trajectory_steps, 2, generator=g) * 10,
        "trajectory_valid": torch.ones(b, cfg.trajectory_steps, dtype=torch.bool),
    }


@pytest.fixture(scope="module")
def model() -> AutoE2E:
    torch.manual_seed(0)
    return AutoE2E(tiny_model_config())


def test_output_shapes_and_jepa_targets(model: AutoE2E) -> None:
    cfg = model.cfg
    batch = make_batch(cfg, b=2, v=3)
    out = model(batch)
    c = model.backbone.target_channels
    assert (model.backbone.target_layer, c) == ("blocks.4", 48)  # MobileNetV3's bottleneck
    assert out.trajectory.shape == (2, cfg.trajectory_steps, 2)
    assert out.visual_history.shape == (2, cfg.history_len * cfg.frame_embed_dim)
    g = cfg.target_grid
    assert out.jepa_prediction is not None
    assert out.jepa_prediction.shape == (2, cfg.future_steps, 3, c, g, g)
    targets = model.jepa_targets(batch["future_images"])
    assert targets.shape == out.jepa_prediction.shape
    # Layer-normalised over channels at each location: mean 0, std 1 (a bit less where the
    # feature variance is comparable to the layer-norm epsilon).
    assert torch.allclose(targets.mean(dim=3), torch.zeros(()), atol=1e-4)
    std = targets.std(dim=3, unbiased=False)
    assert float(std.max()) <= 1.0 + 1e-4 and float(std.min()) > 0.5
    assert not targets.requires_grad


def test_default_visual_history_is_896() -> None:
    assert ModelConfig().visual_history_dim == 896


def test_camera_count_can_change_and_too_many_is_rejected(model: AutoE2E) -> None:
    cfg = model.cfg
    for v in (1, 2, 4):
        assert model(make_batch(cfg, b=2, v=v)).trajectory.shape == (2, cfg.trajectory_steps, 2)
    with pytest.raises(ModelInputError, match="5 cameras.*max_cameras=4"):
        model(make_batch(cfg, b=1, v=5))
    batch = make_batch(cfg, b=1, v=2)
    batch["camera_index"] = torch.tensor([[0, 7]])
    with pytest.raises(ModelInputError, match=r"camera_index values must be in \[0, 4\)"):
        model(batch)


def test_wrong_shapes_name_expected_and_actual(model: AutoE2E) -> None:
    batch = make_batch(model.cfg)
    batch["images"] = torch.rand(2, 3, 3, 40, 48)
    with pytest.raises(
        ModelInputError, match=r"'images'.*\[2, 3, 3, 40, 48\].*\[\*, \*, 3, 32, 48\]"
    ):
        model(batch)
    batch = make_batch(model.cfg)
    batch["ego_history"] = torch.zeros(2, 5, 4)
    with pytest.raises(ModelInputError, match="ego_history"):
        model(batch)
    batch = make_batch(model.cfg)
    del batch["history_images"]
    with pytest.raises(ModelInputError, match="history_images"):
        model(batch)


def test_unknown_backbone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="backbone='no_such_net'"):
        AutoE2E(tiny_model_config(backbone="no_such_net"))


def _backbone_grad_norm(model: AutoE2E) -> float:
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    return float(sum(g.abs().sum() for g in grads)) if grads else 0.0


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_jepa_gradient_reaches_backbone_only_without_stop_gradient(stop_gradient: bool) -> None:
    torch.manual_seed(0)
    model = AutoE2E(tiny_model_config(stop_gradient_world_model=stop_gradient))
    # The predictor heads start as copy-last (zero output layers), which passes no gradient
    # back into their inputs; give them the weights of a model that has trained a little.
    with torch.no_grad():
        for head in model.world_model.predictors:
            head[-1].weight.normal_(std=0.02)
    batch = make_batch(model.cfg)
    out = model(batch)
    jepa = jepa_l1(
        out.jepa_prediction, model.jepa_targets(batch["future_images"]), batch["future_valid"]
    )
    jepa.backward()
    world_grad = sum(
        float(p.grad.abs().sum()) for p in model.world_model.parameters() if p.grad is not None
    )
    assert world_grad > 0  # the world model itself learns either way
    if stop_gradient:
        assert _backbone_grad_norm(model) == 0.0
    else:
        assert _backbone_grad_norm(model) > 0.0
    # The planner never sends gradient into the world model (it sees a detached history).
    # (Its zero-initialised output layer blocks all gradient at init, so perturb it first.)
    model.zero_grad(set_to_none=True)
    torch.nn.init.normal_(model.planner.head[1].weight, std=0.01)
    out = model(batch)
    trajectory_l1(out.trajectory, batch["future_trajectory"], batch["trajectory_valid"]).backward()
    assert _backbone_grad_norm(model) > 0.0
    assert all(
        p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in model.world_model.parameters()
    )


def test_planner_trains_the_history_encoder_when_asked_and_never_the_predictor() -> None:
    """`planner_trains_history`: the trajectory loss reaches the world model's frame encoder
    (which the test above shows it does not by default), and nothing else of the world model."""
    torch.manual_seed(0)
    model = AutoE2E(tiny_model_config(planner_trains_history=True))
    # zero-initialised at the planner's output and at its history input: perturb both
    torch.nn.init.normal_(model.planner.head[1].weight, std=0.01)
    torch.nn.init.normal_(model.planner.history_proj.weight, std=0.01)
    batch = make_batch(model.cfg)
    out = model(batch)
    trajectory_l1(out.trajectory, batch["future_trajectory"], batch["trajectory_valid"]).backward()
    world = model.world_model
    for encoder in (world.view_proj, world.frame_out):
        assert all(float(p.grad.abs().sum()) > 0.0 for p in encoder.parameters())
    assert all(p.grad is None for p in world.predictors.parameters())
    # zeroed history at test: no path from the loss into the encoder
    model.zero_grad(set_to_none=True)
    out = model(batch, history_off=True)
    trajectory_l1(out.trajectory, batch["future_trajectory"], batch["trajectory_valid"]).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in world.parameters())


def test_target_encoder_is_excluded_from_training(model: AutoE2E) -> None:
    trainable = {id(p) for p in model.trainable_parameters()}
    assert all(id(p) not in trainable for p in model.target.parameters())
    model.train()
    assert not model.target.module.training


def test_ema_update_matches_reference_lerp() -> None:
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    target = TargetEncoder(online, momentum=0.9)
    before = {k: v.clone() for k, v in target.module.state_dict().items()}
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online.train()
    online(torch.randn(8, 4))  # changes BatchNorm running stats too
    target.update(online, momentum=0.75)
    for key, value in target.module.state_dict().items():
        new = online.state_dict()[key]
        if value.is_floating_point():
            expected = 0.75 * before[key] + 0.25 * new
            assert torch.allclose(value, expected, atol=1e-6), key
        else:
            assert torch.equal(value, new), key
    assert target.updates == 1
    assert ema_momentum(0.0, 0.996, 1.0) == pytest.approx(0.996)
    assert ema_momentum(0.5, 0.996, 1.0) == pytest.approx(0.998)
    assert ema_momentum(2.0, 0.996, 1.0) == pytest.approx(1.0)


def test_zero_initialised_history_projection_and_ablation() -> None:
    torch.manual_seed(0)
    model = AutoE2E(tiny_model_config())
    assert float(model.planner.history_proj.weight.detach().abs().sum()) == 0.0
    assert float(model.planner.history_proj.bias.detach().abs().sum()) == 0.0
    model.eval()
    batch = make_batch(model.cfg)
    with_history = model(batch).trajectory
    ablation = AutoE2E(tiny_model_config(use_world_model=False))
    ablation.load_state_dict(model.state_dict())
    ablation.eval()
    out = ablation(batch)
    assert out.jepa_prediction is None
    assert float(out.visual_history.abs().sum()) == 0.0
    # At init the visual history has no influence at all.
    assert torch.allclose(out.trajectory, with_history)


def test_history_keep_zeroes_the_whole_history_of_the_other_samples() -> None:
    torch.manual_seed(0)
    model = AutoE2E(tiny_model_config())
    torch.nn.init.normal_(model.planner.history_proj.weight)  # give the history an influence
    torch.nn.init.normal_(model.planner.head[1].weight, std=0.1)  # (both are zero-initialised)
    model.eval()  # BatchNorm statistics fixed, so the passes differ only by the history
    batch = make_batch(model.cfg, b=6)
    full = model(batch).trajectory
    none = model(batch, history_off=True).trajectory
    assert not torch.allclose(full, none)
    keep = torch.tensor([True, False, False, True, True, False])
    out = model(batch, history_keep=keep)
    torch.testing.assert_close(out.trajectory[keep], full[keep])
    torch.testing.assert_close(out.trajectory[~keep], none[~keep])
    # the world model's own prediction does not depend on what the planner was shown
    torch.testing.assert_close(out.jepa_prediction, model(batch).jepa_prediction)


def test_plan_without_history_is_the_zeroed_plan_of_the_same_pass() -> None:
    """`history_loss="paired"` trains on both plans of one pass: the second is exactly what
    the model plans with its history zeroed, the first what it plans with it."""
    torch.manual_seed(0)
    model = AutoE2E(tiny_model_config())
    torch.nn.init.normal_(model.planner.history_proj.weight)  # give the history an influence
    torch.nn.init.normal_(model.planner.head[1].weight, std=0.1)  # (both are zero-initialised)
    model.eval()
    batch = make_batch(model.cfg, b=4)
    out = model(batch, plan_without_history=True)
    torch.testing.assert_close(out.trajectory, model(batch).trajectory)
    torch.testing.assert_close(
        out.trajectory_without_history, model(batch, history_off=True).trajectory
    )
    assert not torch.allclose(out.trajectory, out.trajectory_without_history)
    assert model(batch).trajectory_without_history is None
    off = AutoE2E(tiny_model_config(use_world_model=False)).eval()
    assert off(batch, plan_without_history=True).trajectory_without_history is None  # no history


def test_untrained_head_gives_the_kinematic_prior() -> None:
    """Zero-initialised head: with zero yaw rate the output is exactly constant velocity."""
    model = AutoE2E(tiny_model_config())
    model.eval()
    batch = make_batch(model.cfg)
    batch["ego_history"][:, :, 2] = 0.0
    pred = model(batch).trajectory
    cv = constant_velocity(batch["ego_history"], model.cfg.trajectory_steps, 0.1)
    assert torch.allclose(pred.double(), cv, atol=1e-4)


def test_kinematic_integration_is_exact_for_constant_acceleration() -> None:
    t = torch.arange(1, 21) * 0.1
    pos = integrate_controls(
        torch.tensor([10.0]), torch.full((1, 20), -2.0), torch.zeros(1, 20), 0.1
    )
    assert torch.allclose(pos[0, :, 0], 10 * t - t**2, atol=1e-5)
    assert float(pos[0, :, 1].abs().max()) == 0.0
    # Braking never reverses: speed clamps at zero, position stops growing.
    stop = integrate_controls(
        torch.tensor([1.0]), torch.full((1, 30), -5.0), torch.zeros(1, 30), 0.1
    )
    assert float(stop[0, -1, 0]) == pytest.approx(float(stop[0, 5, 0]))


@pytest.mark.parametrize(("frames", "stage"), [("pooled", -1), ("cells", -1), ("cells", 2)])
def test_rolling_buffer_matches_windowed_history(frames: str, stage: int) -> None:
    torch.manual_seed(0)
    # 64x96 frames: a 2x3 last feature map, so "cells" has several locations per view
    cfg = tiny_model_config(
        image_height=64, image_width=96, world_model_frames=frames, world_model_stage=stage
    )
    model = AutoE2E(cfg)
    model.eval()
    cfg = model.cfg
    batch = make_batch(cfg, b=1, v=2)
    with torch.no_grad():
        windowed = model(batch).visual_history
        buffer = VisualHistoryBuffer(cfg.history_len, cfg.frame_embed_dim)
        frames = torch.cat([batch["history_images"][:, :-1], batch["images"][:, None]], dim=1)
        for step in range(cfg.history_len):
            maps = model.feature_maps(frames[:, step])[1]
            buffer.push(model.world_model.encode_frames(maps, batch["camera_index"]))
    assert torch.allclose(buffer.visual_history(), windowed, atol=1e-5)


def test_cells_frames_tell_where_a_feature_is() -> None:
    """The same map content one cell to the right: the spatial mean cannot tell, cells can."""
    torch.manual_seed(0)
    cfg = tiny_model_config(image_height=64, image_width=96)
    pooled = AutoE2E(cfg).world_model
    cells = AutoE2E(dataclasses.replace(cfg, world_model_frames="cells")).world_model
    maps = torch.randn(2, 3, pooled.view_proj.in_features, 2, 3)
    moved = maps.roll(1, dims=-1)
    cameras = torch.arange(3).repeat(2, 1)
    with torch.no_grad():
        same = pooled.encode_frames(maps, cameras), pooled.encode_frames(moved, cameras)
        differ = cells.encode_frames(maps, cameras), cells.encode_frames(moved, cameras)
    assert torch.allclose(*same, atol=1e-5)
    assert float((differ[0] - differ[1]).abs().max()) > 0.1


def test_world_model_frames_must_be_known() -> None:
    with pytest.raises(ConfigError, match="world_model_frames='grid'.*pooled"):
        tiny_model_config(world_model_frames="grid").validate()


def test_world_model_reads_the_stage_it_is_given() -> None:
    """Stage 2 of MobileNetV3 is its stride-8 map: 8x12 cells at 64x96, all kept."""
    cfg = tiny_model_config(
        image_height=64, image_width=96, world_model_frames="cells", world_model_stage=2
    )
    model = AutoE2E(cfg)
    assert model.world_model.cell_grid == (8, 12)
    batch = make_batch(cfg, b=1, v=2)
    last, read = model.feature_maps(batch["images"])
    assert (last.shape[-2:], read.shape[-3:]) == ((2, 3), (16, 8, 12))
    with pytest.raises(ConfigError, match="world_model_stage=5 .* has 5"):
        AutoE2E(dataclasses.replace(cfg, world_model_stage=5))


def test_checkpoint_round_trip_and_config_mismatch(tmp_path) -> None:
    torch.manual_seed(1)
    model = AutoE2E(tiny_model_config())
    with torch.no_grad():
        model.planner.history_proj.weight.normal_()  # make the check sensitive to every part
    model.eval()
    batch = make_batch(model.cfg)
    data = checkpoint_bytes(model, {"step": 7, "cameras": ["a", "b"]})
    (tmp_path / "best.pt").write_bytes(data)
    loaded, extra = load_model((tmp_path / "best.pt").read_bytes())
    loaded.eval()
    assert extra == {"step": 7, "cameras": ["a", "b"]}
    assert dataclasses.asdict(loaded.cfg) == dataclasses.asdict(model.cfg)
    assert torch.equal(loaded(batch).trajectory, model(batch).trajectory)
    other = AutoE2E(tiny_model_config(embed_dim=40))
    with pytest.raises(CheckpointError, match="embed_dim: checkpoint=32 model=40"):
        load_into(other, data)
    with pytest.raises(CheckpointError, match="not a readable AutoE2E checkpoint"):
        load_model(b"not a checkpoint")


def test_uint8_images_from_the_loader_match_float_images() -> None:
    """Loaders hand over uint8 frames; the model must see exactly what float/255 would give."""
    torch.manual_seed(0)
    model = AutoE2E(tiny_model_config()).eval()
    batch = make_batch(model.cfg)
    as_uint8 = dict(batch)
    for key in ("images", "history_images", "future_images"):
        as_uint8[key] = (batch[key] * 255).round().to(torch.uint8)
        batch[key] = as_uint8[key].float() / 255
    with torch.no_grad():
        ref, got = model(batch), model(as_uint8)
        ref_targets = model.jepa_targets(batch["future_images"])
        got_targets = model.jepa_targets(as_uint8["future_images"])
    torch.testing.assert_close(got.trajectory, ref.trajectory)
    torch.testing.assert_close(got.jepa_prediction, ref.jepa_prediction)
    torch.testing.assert_close(got_targets, ref_targets)


def _sequence_inputs(cfg: ModelConfig, seconds: float, v: int = 2, seed: int = 3) -> dict:
    """A 10 Hz multi-view sequence: uint8 frames, map, ego history per tick."""
    g = torch.Generator().manual_seed(seed)
    n = round(seconds * 10) + 1
    h, w, r = cfg.image_height, cfg.image_width, cfg.map_raster_size
    ego = torch.zeros(n, cfg.ego_history_steps, 4)
    ego[:, :, 0] = torch.linspace(3, 9, n)[:, None]
    ego[:, :, 2] = torch.linspace(-0.1, 0.1, n)[:, None]
    return {
        "frames": torch.randint(0, 256, (n, v, 3, h, w), generator=g, dtype=torch.uint8),
        "camera_index": torch.tensor([0, 2][:v]),
        "map_raster": torch.rand(n, 3, r, r, generator=g),
        "ego": ego,
    }


def _windowed(model: AutoE2E, seq: dict, tick: int):
    """The training path at 10 Hz tick `tick`: history frames 1 s apart, missing ones masked."""
    cfg = model.cfg
    ticks = [tick - 10 * (cfg.history_len - 1 - k) for k in range(cfg.history_len)]
    frames = seq["frames"]
    batch = {
        "images": frames[tick][None],
        "camera_index": seq["camera_index"][None],
        "history_images": torch.stack([frames[max(t, 0)] for t in ticks])[None],
        "history_valid": torch.tensor([[t >= 0 for t in ticks]]),
        "map_raster": seq["map_raster"][tick][None],
        "map_valid": torch.ones(1),
        "ego_history": seq["ego"][tick][None],
    }
    with torch.no_grad():
        return model(batch)


def _run_policy(policy, seq: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    trajs, hists = [], []
    for i in range(seq["frames"].shape[0]):
        trajs.append(
            policy.step(
                seq["frames"][i],
                seq["camera_index"],
                seq["map_raster"][i],
                1.0,
                seq["ego"][i],
                timestamp_s=i * 0.1,
            )
        )
        hists.append(policy.last_visual_history)
    return trajs, hists


def test_policy_rolling_buffer_matches_windowed_path() -> None:
    from autoe2e.model import AutoE2EPolicy

    torch.manual_seed(0)
    model = AutoE2E(tiny_model_config())
    with torch.no_grad():  # let the visual history change the plan, so the check is sensitive
        model.planner.history_proj.weight.normal_(std=0.05)
    model.eval()
    seq = _sequence_inputs(model.cfg, seconds=5.0)
    policy = AutoE2EPolicy(model)
    trajs, hists = _run_policy(policy, seq)
    assert trajs[0].shape == (model.cfg.trajectory_steps, 2)
    # Start of the sequence (partial history) and every full-history 1 Hz tick.
    for tick in (0, 10, 30, 40, 50):
        ref = _windowed(model, seq, tick)
        torch.testing.assert_close(hists[tick], ref.visual_history)
        torch.testing.assert_close(trajs[tick], ref.trajectory[0])
    assert float(hists[0][:, : -model.cfg.frame_embed_dim].abs().sum()) == 0.0
    # Between ticks the buffer is unchanged; the planner still sees the newest images.
    assert torch.equal(hists[33], hists[30])
    assert not torch.equal(trajs[33], trajs[30])
    policy.reset()
    again, again_hists = _run_policy(policy, seq)
    for a, b in zip(trajs, again, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(again_hists[-1], hists[-1])
    with pytest.raises(ValueError, match="reset"):
        policy.step(
            seq["frames"][0], seq["camera_index"], seq["map_raster"][0], 1.0, seq["ego"][0], 0.0
        )
    with pytest.raises(ModelInputError, match="images"):
        policy.step(
            seq["frames"][:2], seq["camera_index"], seq["map_raster"][0], 1.0, seq["ego"][0], 9.0
        )


def test_wrong_history_window_length_names_history_len(model: AutoE2E) -> None:
    batch = make_batch(model.cfg, b=1, v=2)
    batch["history_images"] = batch["history_images"][:, :3]
    batch["history_valid"] = batch["history_valid"][:, :3]
    with pytest.raises(ModelInputError, match="window of 3 frames, expected history_len=4"):
        model(batch)


def test_dimensions_that_do_not_divide_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"embed_dim=40.*attention_heads=3.*= 1, expected 0"):
        tiny_model_config(embed_dim=40, attention_heads=3).validate()
    with pytest.raises(ConfigError, match="embed_dim=36.*a multiple of 8"):
        tiny_model_config(embed_dim=36).validate()
    with pytest.raises(ConfigError, match="unknown model preset 'huge'.*'default', 'demo'"):
        ModelConfig.preset("huge")


@pytest.mark.parametrize("name", ["demo", "default"])
def test_named_presets_build_and_run(name: str) -> None:
    cfg = ModelConfig.preset(name, ego_history_steps=8, trajectory_steps=16)
    assert cfg.name == name
    if name == "demo":
        base = dataclasses.asdict(ModelConfig())
        assert {**base, "ego_history_steps": 8, "trajectory_steps": 16} == dataclasses.asdict(cfg)
    else:
        assert (cfg.image_height, cfg.max_cameras, cfg.target_grid) == (256, 8, 8)
    torch.manual_seed(0)
    model = AutoE2E(cfg).eval()
    batch = make_batch(cfg, b=1, v=1 if name == "default" else 2)
    with torch.no_grad():
        out = model(batch)
        targets = model.jepa_targets(batch["future_images"][:, :1])
    assert out.trajectory.shape == (1, 16, 2)
    assert out.visual_history.shape == (1, cfg.visual_history_dim)
    assert out.jepa_prediction is not None
    assert out.jepa_prediction[:, :1].shape == targets.shape


def test_cli_model_preset_is_the_base_for_model_overrides() -> None:
    from autoe2e.cli import _cfg, make_parser

    argv = ["train", "m", "o", "--model-preset", "default", "--model-set", "max_cameras=6"]
    cfg = _cfg(make_parser().parse_args(argv), ModelConfig, "model")
    assert (cfg.name, cfg.backbone, cfg.max_cameras) == ("default", "convnext_nano", 6)
    plain = _cfg(make_parser().parse_args(["train", "m", "o"]), ModelConfig, "model")
    assert dataclasses.asdict(plain) == dataclasses.asdict(ModelConfig())
    args = make_parser().parse_args(["pipeline", "e", "o", "--model-preset", "demo"])
    assert _cfg(args, ModelConfig, "model").name == "demo"


def test_untrained_world_model_predicts_copy_last_frame(model: AutoE2E) -> None:
    """The heads predict the change from the current frame's target features, starting at none:
    an untrained world model is exactly the copy-last null predictor, never worse."""
    batch = make_batch(model.cfg)
    with torch.no_grad():
        out = model(batch)
        current = model.jepa_targets(batch["images"][:, None])
    assert out.jepa_prediction is not None
    torch.testing.assert_close(out.jepa_prediction, current.expand_as(out.jepa_prediction))
    torch.testing.assert_close(out.jepa_anchor, current[:, 0])  # what copy-last scores


def test_version_1_checkpoint_loads_with_a_warning_about_its_world_model(
    model: AutoE2E, caplog
) -> None:
    import io

    from autoe2e.model.checkpoint import CHECKPOINT_VERSION, CheckpointError, read_checkpoint

    def with_version(version: int) -> bytes:
        payload = read_checkpoint(checkpoint_bytes(model))
        payload["version"] = version
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    assert CHECKPOINT_VERSION == 4
    with caplog.at_level("WARNING"):
        loaded, _ = load_model(with_version(1), source="old.pt")
    assert "old.pt is a version-1 checkpoint" in caplog.text
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    with pytest.raises(CheckpointError, match="version 99"):
        load_model(with_version(99), source="future.pt")


def test_auto_target_layer_is_the_input_of_a_pointwise_expansion_and_the_last_map_otherwise(
    model: AutoE2E,
) -> None:
    """MobileNetV3's last feature map is a 1x1 conv of the 48-channel bottleneck: "auto" takes
    the bottleneck (the expansion's input), "last" the 288-channel map; a backbone whose last
    stage mixes space (ResNet) keeps its last map; a wrong name is refused with the field."""
    backbone = model.backbone
    images = torch.rand(2, 3, model.cfg.image_height, model.cfg.image_width)
    expansion = backbone.net.get_submodule(backbone.net.feature_info.module_name()[-1])
    seen: list[torch.Tensor] = []
    handle = expansion.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    backbone.eval()
    try:
        with torch.no_grad():
            targets = backbone.target_features(images)
    finally:
        handle.remove()
        backbone.train()
    torch.testing.assert_close(targets, seen[-1])
    assert targets.shape[1] == backbone.target_channels == 48 < backbone.channels == 288

    last = AutoE2E(tiny_model_config(target_layer="last"))
    assert last.backbone.target_layer is None and last.backbone.target_channels == 288
    assert last.world_model.channels == 288
    resnet = AutoE2E(tiny_model_config(backbone="resnet10t"))
    assert resnet.backbone.target_layer is None
    assert resnet.backbone.target_channels == resnet.backbone.channels
    named = AutoE2E(tiny_model_config(target_layer="blocks.3"))
    assert named.backbone.target_channels == 24
    with pytest.raises(ConfigError, match="target_layer='blocks.99'.*blocks.5"):
        AutoE2E(tiny_model_config(target_layer="blocks.99"))


def test_checkpoints_before_version_3_load_with_the_last_feature_map_as_target() -> None:
    """Their heads predicted the 288-channel map: loading must rebuild exactly that."""
    import io

    from autoe2e.model.checkpoint import read_checkpoint

    torch.manual_seed(0)
    old = AutoE2E(tiny_model_config(target_layer="last", history_fusion="residual"))
    payload = read_checkpoint(checkpoint_bytes(old))
    del payload["model_config"]["target_layer"], payload["model_config"]["history_fusion"]
    payload["version"] = 2
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    loaded, _ = load_model(buffer.getvalue(), source="v2.pt")
    assert loaded.cfg.target_layer == "last" and loaded.world_model.channels == 288
    # a warm start into today's default config is refused with the field named (README)
    with pytest.raises(CheckpointError, match="target_layer: checkpoint='last' model='auto'"):
        load_into(AutoE2E(tiny_model_config()), buffer.getvalue(), source="v2.pt")
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), old.state_dict().values(), strict=True)
    )


def test_checkpoints_before_version_4_load_with_the_history_added_after_the_fusion_mlp() -> None:
    """Their planner added the history to the fused features; loading must rebuild that."""
    import io

    from autoe2e.model.checkpoint import read_checkpoint

    torch.manual_seed(0)
    fused = AutoE2E(tiny_model_config())
    dim = fused.cfg.embed_dim
    assert fused.cfg.history_fusion == "fused" and fused.planner.fuse[0].in_features == 4 * dim
    old = AutoE2E(tiny_model_config(history_fusion="residual"))
    assert old.planner.fuse[0].in_features == 3 * dim
    payload = read_checkpoint(checkpoint_bytes(old))
    del payload["model_config"]["history_fusion"]
    payload["version"] = 3
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    loaded, _ = load_model(buffer.getvalue(), source="v3.pt")
    assert loaded.cfg.history_fusion == "residual"
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), old.state_dict().values(), strict=True)
    )
    with pytest.raises(
        CheckpointError, match="history_fusion: checkpoint='residual' model='fused'"
    ):
        load_into(fused, buffer.getvalue(), source="v3.pt")
    with pytest.raises(ConfigError, match="history_fusion"):
        tiny_model_config(history_fusion="concat").validate()
