"""Tracker: embedded sqlite store and a real `mlflow server`; train -> evaluate on one run."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow_server import mlflow_server as serve_mlflow

from autoe2e.tracking import Tracker, TrackingError


def _round_trip(tracker: Tracker, reopen, download_dir: Path) -> MlflowClient:
    """Train stage logs, evaluate stage resumes the same run by id, then registers."""
    tracker.log_params({"model.backbone": "mobilenetv3_small_050", "train.cameras": ["a", "b"]})
    tracker.log_metrics({"train/loss": 2.0, "train/lr": 1e-3}, step=1)
    tracker.log_metrics({"train/loss": 1.0, "bad": float("nan")}, step=2)
    tracker.set_tags({"stage": "train"})
    tracker.log_artifact_bytes("best.pt", b"weights", artifact_path="checkpoint")
    run_id = tracker.run_id

    resumed = reopen(run_id)
    assert resumed.run_id == run_id
    resumed.log_metrics({"test/model/ade_m": 0.7}, step=2)
    resumed.log_dict("report.json", {"gate": {"passed": True}})
    assert resumed.has_artifact("checkpoint")
    assert resumed.register_model("autoe2e-test") == "1"
    assert resumed.register_model("autoe2e-test") == "2"
    resumed.end()

    client = resumed.client
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.cameras"] == '["a", "b"]'
    assert run.data.tags["stage"] == "train"
    assert run.data.metrics["test/model/ade_m"] == pytest.approx(0.7)
    assert "bad" not in run.data.metrics
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]
    names = {f.path for f in client.list_artifacts(run_id)}
    assert names == {"checkpoint", "report.json"}
    local = client.download_artifacts(run_id, "checkpoint/best.pt", str(download_dir))
    assert Path(local).read_bytes() == b"weights"
    versions = client.search_model_versions("name='autoe2e-test'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert all(v.run_id == run_id for v in versions)
    return client


def test_local_store_round_trip(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "mlflow"
    tracker = Tracker(local_dir=str(store), experiment="unit", run_name="r")
    assert tracker.tracking_uri == f"sqlite:///{store.resolve() / 'mlflow.db'}"
    _round_trip(tracker, lambda rid: Tracker(local_dir=str(store), run_id=rid), tmp_path)
    assert any((store / "artifacts").rglob("best.pt"))


def test_missing_location_and_unknown_run_are_clear_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingError, match="MLFLOW_TRACKING_URI"):
        Tracker()
    with pytest.raises(TrackingError, match="could not resume run deadbeef"):
        Tracker(local_dir=str(tmp_path), run_id="deadbeef")


@pytest.fixture
def mlflow_server(tmp_path):
    with serve_mlflow(tmp_path) as url:
        yield url


def test_real_mlflow_server_round_trip(mlflow_server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tracker = Tracker(local_dir=None, experiment="server-test")
    assert tracker.tracking_uri == mlflow_server
    _round_trip(tracker, lambda rid: Tracker(run_id=rid), tmp_path)


def test_metrics_logged_without_waiting_all_arrive_after_flush(mlflow_server) -> None:
    tracker = Tracker(tracking_uri=mlflow_server, experiment="async")
    for step in range(25):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step, wait=False)
    tracker.flush()
    history = tracker.client.get_metric_history(tracker.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(25))


def test_metrics_lost_to_a_stopped_server_are_a_warning_naming_it(tmp_path, monkeypatch, caplog):
    from mlflow_server import mlflow_server as serve

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with serve(tmp_path) as url:
        tracker = Tracker(tracking_uri=url, experiment="gone")
    tracker.log_metrics({"train/loss": 1.0}, step=1, wait=False)  # the server is gone now
    with caplog.at_level("WARNING", logger="autoe2e.tracking"):
        tracker.flush()  # does not raise: training already happened
    assert any(url in r.getMessage() and "lost" in r.getMessage() for r in caplog.records)
