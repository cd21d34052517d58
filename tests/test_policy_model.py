"""What a training run leaves in MLflow besides its curves, on a real `mlflow server`: the policy
as an MLflow PyTorch model that loads (here and in a fresh process) into a module planning
exactly like the trained one, and system metrics sampled while it ran."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
from mlflow_server import mlflow_server as serve_mlflow
from test_model import make_batch
from tiny_configs import tiny_model_config

from autoe2e.model import AutoE2E
from autoe2e.tracking import Tracker
from autoe2e.tracking_server import _HTTP_RETRY_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)

LOAD_AND_PLAN = """
import sys, torch, mlflow.pytorch
model = mlflow.pytorch.load_model(sys.argv[1])
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2])).trajectory, sys.argv[3])
print(type(model).__module__, type(model).__name__, model.training)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """Artifacts served through the server, as the MLflow chart deploys it."""
    before = {key: os.environ.get(key) for key in _HTTP_RETRY_DEFAULTS}
    with serve_mlflow(tmp_path_factory.mktemp("mlflow"), serve_artifacts=True) as url:
        yield url
    for key, value in before.items():  # Tracker sets bounded retry defaults process-wide
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_logged_policy_loads_and_plans_like_the_trained_model(
    server, tmp_path, monkeypatch
) -> None:
    torch.manual_seed(0)
    model = AutoE2E(tiny_model_config())
    model.train()  # as the training loop hands it over
    tracker = Tracker(tracking_uri=server, experiment="policy")
    started = time.monotonic()
    uri = tracker.log_policy(model)
    log.info("log_policy of the tiny model: %.2f s", time.monotonic() - started)
    assert uri is not None and uri.startswith("models:/")
    assert model.training  # the caller's module is untouched; a copy was logged

    logged = tracker.client.search_logged_models([tracker.experiment_id])
    assert [(m.name, m.source_run_id, str(m.status)) for m in logged] == [
        ("policy", tracker.run_id, "READY")
    ]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)  # how a consumer resolves models:/
    loaded = mlflow.pytorch.load_model(uri)
    assert isinstance(loaded, AutoE2E) and not loaded.training
    batch = make_batch(model.cfg, b=2, v=3, seed=1)
    model.eval()
    with torch.no_grad():
        expected = model(batch).trajectory
        assert torch.equal(loaded(batch).trajectory, expected)

    # a fresh interpreter: the class is found by import (autoe2e), nothing from this process
    torch.save(batch, tmp_path / "batch.pt")
    out = tmp_path / "trajectory.pt"
    env = {**os.environ, "MLFLOW_TRACKING_URI": server, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", LOAD_AND_PLAN, uri, str(tmp_path / "batch.pt"), str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-3:] == ["autoe2e.model.autoe2e_model", "AutoE2E", "False"]
    assert torch.equal(torch.load(out), expected)


def test_system_metrics_are_sampled_into_the_run_without_errors(server, capfd) -> None:
    tracker = Tracker(tracking_uri=server, experiment="system-metrics")
    tracker.start_system_metrics(sampling_interval_s=0.2)
    deadline = time.monotonic() + 30
    while True:
        metrics = tracker.client.get_run(tracker.run_id).data.metrics
        if "system/cpu_utilization_percentage" in metrics:
            break
        assert time.monotonic() < deadline, f"no system metrics after 30 s: {sorted(metrics)}"
        time.sleep(0.2)
    tracker.flush()  # the end of training: stops the sampler
    assert not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]
    metrics = tracker.client.get_run(tracker.run_id).data.metrics
    for name in (
        "system/cpu_utilization_percentage",
        "system/system_memory_usage_megabytes",
        "system/system_memory_usage_percentage",
        "system/disk_usage_percentage",
        "system/network_receive_megabytes",
    ):
        assert name in metrics, sorted(metrics)
    assert 0 < metrics["system/system_memory_usage_percentage"] <= 100
    tracker.end()
    # a CPU-only machine has no GPU metrics, and that is not an error
    err = capfd.readouterr().err
    assert " ERROR " not in err and "Traceback" not in err, err[-2000:]
