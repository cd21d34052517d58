"""Champion / challenger in a real MLflow registry (`mlflow server` on 127.0.0.1), and the warm
start from `models:/<name>@champion` that nightly retraining uses."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient
from mlflow_server import mlflow_server
from test_evaluation import StraightRoad, tiny_cfg
from test_training import factory_for

from autoe2e.config import ConfigError, EvalConfig, TrainConfig
from autoe2e.evaluation import evaluate
from autoe2e.model import AutoE2E, checkpoint_bytes, load_model
from autoe2e.registry import registered_checkpoint
from autoe2e.tracking import Tracker
from autoe2e.training import train

NAME = "autoe2e-promotion-test"
SPLIT = {"train": ["t1", "t2"], "val": ["v1"], "test": ["x1", "x2", "x3"]}
#: Every straight-road sample is exact for constant velocity, so no model can beat it here;
#: these tests are about the champion comparison, so the absolute and CV checks are relaxed.
RELAXED = EvalConfig(
    batch_size=4, horizons_s=[1.0], max_ade_m=1e9, max_fde_m=1e9, cv_margin_m=-1e9,
    registered_model=NAME,
)  # fmt: skip


def _model(drift: float) -> AutoE2E:
    """The untrained planner is the CTRV rollout, exact on a straight road; `drift` bends it."""
    torch.manual_seed(0)
    model = AutoE2E(tiny_cfg())
    with torch.no_grad():
        model.planner.head[1].bias[model.cfg.trajectory_basis_size :] = drift
    return model


def _evaluate(url, tmp_path, label: str, model: AutoE2E, cameras=("front", "left")) -> dict:
    ckpt = tmp_path / f"{label}.pt"
    ckpt.write_bytes(checkpoint_bytes(model, {"split": SPLIT, "cameras": list(cameras)}))
    tracker = Tracker(tracking_uri=url, experiment="promotion", run_name=label)
    tracker.log_artifact_bytes("best.pt", ckpt.read_bytes(), artifact_path="checkpoint")
    return evaluate(
        "fake://manifest",
        str(ckpt),
        str(tmp_path / label),
        RELAXED,
        tracking=tracker,
        dataset_factory=lambda m, episodes, f: StraightRoad(tiny_cfg(), episodes, list(cameras)),
    )["promotion"]


@pytest.fixture
def registry(tmp_path):
    with mlflow_server(tmp_path, serve_artifacts=True) as url:
        yield url


def test_champion_moves_only_to_a_better_model(registry, tmp_path) -> None:
    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    bad, good = _model(drift=1.0), _model(drift=0.0)

    first = _evaluate(registry, tmp_path, "bad", bad)
    assert (first["version"], first["alias"], first["previous_champion"]) == ("1", "champion", None)
    assert any("no champion" in r for r in first["reasons"])

    second = _evaluate(registry, tmp_path, "good", good)
    assert (second["version"], second["alias"], second["previous_champion"]) == (
        "2",
        "champion",
        "1",
    )
    assert any(r.startswith("PASS: model - champion v1 ADE") for r in second["reasons"])

    third = _evaluate(registry, tmp_path, "bad-again", bad)
    assert (third["version"], third["alias"], third["champion"]) == ("3", "challenger", "2")
    assert any(r.startswith("FAIL: model - champion v2 ADE") for r in third["reasons"])

    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "3"
    tags = client.get_model_version(NAME, "3").tags
    assert tags["promotion"] == "challenger" and "champion v2" in tags["promotion_reasons"]

    # models:/<name>@champion resolves to the good model's checkpoint and loads
    data = registered_checkpoint(f"models:/{NAME}@champion", registry)
    assert data is not None
    loaded, _ = load_model(data)
    for key, value in good.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert registered_checkpoint(f"models:/{NAME}@nobody", registry) is None


def test_a_champion_that_cannot_be_scored_keeps_its_alias(registry, tmp_path) -> None:
    _evaluate(registry, tmp_path, "first", _model(drift=1.0))
    other = _evaluate(registry, tmp_path, "rear", _model(drift=0.0), cameras=("front", "rear"))
    assert other["alias"] == "challenger" and other["champion"] == "1"
    assert any("could not be scored" in r and "cameras" in r for r in other["reasons"])


def test_warm_start_from_the_registered_champion(registry, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    champion = _model(drift=0.3)
    _evaluate(registry, tmp_path, "champion", champion)
    cfg = tiny_cfg()
    # a vanishing learning rate: one AdamW step moves weights by ~1e-12, so the checkpoint
    # holds the initial weights
    frozen = TrainConfig(
        epochs=1, max_steps=1, batch_size=4, lr=1e-12, warmup_steps=0, log_every_steps=1,
        init_checkpoint=f"models:/{NAME}@champion",
    )  # fmt: skip
    result = train(
        "fake://m", str(tmp_path / "warm"), cfg, frozen, dataset_factory=factory_for(cfg)
    )
    started, _ = load_model((tmp_path / "warm" / "best.pt").read_bytes())
    # parameters, not buffers: BatchNorm statistics move in the one training step
    expected = dict(champion.named_parameters())
    for key, value in started.named_parameters():
        assert torch.allclose(value, expected[key], atol=1e-6), key
    bias = "planner.head.1.bias"
    assert not torch.allclose(dict(AutoE2E(cfg).named_parameters())[bias], expected[bias])
    assert result.steps == 1

    missing = TrainConfig(
        epochs=1, max_steps=1, batch_size=4, init_checkpoint=f"models:/{NAME}@nightly-best"
    )
    with pytest.raises(ConfigError, match="does not exist in the registry"):
        train("fake://m", str(tmp_path / "x"), cfg, missing, dataset_factory=factory_for(cfg))
    optional = TrainConfig(
        epochs=1, max_steps=1, batch_size=4, init_checkpoint=missing.init_checkpoint,
        init_checkpoint_optional=True,
    )  # fmt: skip
    result = train("fake://m", str(tmp_path / "y"), cfg, optional, dataset_factory=factory_for(cfg))
    assert result.steps == 1
    with pytest.raises(ConfigError, match="does not exist; give a checkpoint"):
        train(
            "fake://m",
            str(tmp_path / "z"),
            cfg,
            TrainConfig(epochs=1, init_checkpoint=str(tmp_path / "nope.pt")),
            dataset_factory=factory_for(cfg),
        )
