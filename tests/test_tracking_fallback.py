"""MLflow outages: an unreachable server costs a training run nothing but a warning and a local
fallback store (or fails fast with tracking_strict), and a server that dies mid-run turns the
logging calls into warnings within seconds instead of minutes of retries."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from episode_factory import TINY_PREPARE, write_episode
from mlflow import MlflowClient
from mlflow_server import mlflow_server as serve_mlflow
from tiny_configs import shard_model_config

from autoe2e import pipeline
from autoe2e.config import TrainConfig
from autoe2e.tracking import (
    FALLBACK_RUN_TAG,
    FALLBACK_TAG,
    Tracker,
    TrackingError,
    probe_server,
)
from autoe2e.tracking_server import _HTTP_RETRY_DEFAULTS


@pytest.fixture(autouse=True)
def _restore_retry_env() -> Iterator[None]:
    """Trackers on http URIs set bounded MLflow retry defaults process-wide; keep them out of
    other test modules (monkeypatch does not undo a variable it did not set)."""
    before = {key: os.environ.get(key) for key in _HTTP_RETRY_DEFAULTS}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def dead_uri(monkeypatch) -> str:
    """MLFLOW_TRACKING_URI at a port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _fallback_client(fallback: Path) -> MlflowClient:
    store = f"sqlite:///{fallback.resolve() / 'mlflow.db'}"
    return MlflowClient(tracking_uri=store, registry_uri=store)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_unreachable_server_warns_and_logs_to_the_fallback_store(
    dead_uri, tmp_path, caplog
) -> None:
    fallback = tmp_path / "fallback"
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="autoe2e.tracking"):
        tracker = Tracker.open(experiment="down", strict=False, fallback_dir=str(fallback))
    opened_s = time.monotonic() - started
    assert opened_s < 15, f"opening took {opened_s:.1f} s"  # ~0.5 s probe + sqlite schema
    (warning,) = [m for m in _warnings(caplog) if dead_uri in m]
    assert "fallback store" in warning and str(fallback.resolve()) in warning
    assert "Connection refused" in warning
    assert tracker.fallback_from == dead_uri
    assert tracker.tracking_uri == f"sqlite:///{fallback.resolve() / 'mlflow.db'}"

    tracker.log_metrics({"train/loss": 1.5}, step=3)
    tracker.end()
    run = _fallback_client(fallback).get_run(tracker.run_id)
    assert run.data.tags[FALLBACK_TAG] == dead_uri
    assert run.data.metrics["train/loss"] == 1.5
    assert run.info.status == "FINISHED"


def test_unreachable_server_with_tracking_strict_fails_naming_it(dead_uri, tmp_path) -> None:
    started = time.monotonic()
    with pytest.raises(TrackingError) as info:
        Tracker.open(strict=True, fallback_dir=str(tmp_path / "fallback"))
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert dead_uri in message and "unreachable" in message
    assert "tracking_strict=false" in message and "MLFLOW_TRACKING_URI" in message
    assert not (tmp_path / "fallback").exists()


def test_resuming_a_run_of_the_unreachable_server_starts_a_fallback_run(
    dead_uri, tmp_path, caplog
) -> None:
    fallback = str(tmp_path / "fallback")
    with caplog.at_level("WARNING", logger="autoe2e.tracking"):
        tracker = Tracker.open(run_id="0123abcd", fallback_dir=fallback)
    assert tracker.run_id != "0123abcd"
    assert any("0123abcd" in m and "new run" in m for m in _warnings(caplog))
    tags = _fallback_client(Path(fallback)).get_run(tracker.run_id).data.tags
    assert tags[FALLBACK_TAG] == dead_uri and tags[FALLBACK_RUN_TAG] == "0123abcd"
    # the next stage, server still down, continues that fallback run
    again = Tracker.open(run_id=tracker.run_id, fallback_dir=fallback)
    assert again.run_id == tracker.run_id and again.fallback_from == dead_uri


class _BrokenMlflow(BaseHTTPRequestHandler):
    """Answers /health, fails every API call: a server whose database is down."""

    def do_GET(self) -> None:
        if self.path == "/health":
            self._answer(200, b"OK")
        else:
            self._answer(500, b'{"error_code": "INTERNAL_ERROR", "message": "database is down"}')

    do_POST = do_GET

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


def test_server_that_answers_health_but_fails_counts_as_down(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        assert probe_server(uri) is None
        with pytest.raises(TrackingError, match="answers /health but fails: too many 500 error"):
            Tracker.open(strict=True, fallback_dir=str(tmp_path / "fallback"))
        with caplog.at_level("WARNING", logger="autoe2e.tracking"):
            tracker = Tracker.open(fallback_dir=str(tmp_path / "fallback"))
        assert tracker.fallback_from == uri
        assert any(uri in m and "500 error" in m for m in _warnings(caplog))
    finally:
        server.shutdown()
        server.server_close()


def test_probe_of_a_dead_server_is_quick(dead_uri) -> None:
    started = time.monotonic()
    assert "Connection refused" in (probe_server(dead_uri) or "")
    assert time.monotonic() - started < 2  # refused at once; one 0.5 s pause between tries


def test_server_dying_mid_run_turns_logging_into_quick_warnings(
    dead_uri, tmp_path, monkeypatch, caplog
) -> None:
    """MLflow's default retries (7, backoff 2) spend ~4 minutes per call on a dead server; the
    Tracker's bounded defaults make the first failing call take seconds and the later ones
    skip after a probe. Before that: a run logged to the fallback store while the server was
    down is continued there by the next stage once the server is back."""
    for key in _HTTP_RETRY_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    fallback = str(tmp_path / "fallback")
    earlier = Tracker.open(experiment="earlier", fallback_dir=fallback)  # dead_uri: falls back
    with serve_mlflow(tmp_path, serve_artifacts=True) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        assert probe_server(url) is None
        with caplog.at_level("WARNING", logger="autoe2e.tracking"):
            resumed = Tracker.open(run_id=earlier.run_id, fallback_dir=fallback)
        assert (resumed.run_id, resumed.tracking_uri) == (earlier.run_id, earlier.tracking_uri)
        assert resumed.fallback_from == dead_uri
        assert any(earlier.run_id in m and "fallback store" in m for m in _warnings(caplog))
        with pytest.raises(TrackingError, match="could not resume run feedbeef"):
            Tracker.open(run_id="feedbeef", fallback_dir=fallback)  # a wrong id stays an error

        tracker = Tracker.open(experiment="dies", fallback_dir=fallback)
        assert tracker.fallback_from is None and tracker.tracking_uri == url
        tracker.set_tags({"stage": "train"})
    # the server is gone now: the calls at the end of training
    caplog.clear()
    timings = {}
    with caplog.at_level("WARNING", logger="autoe2e.tracking"):
        for what, call in [
            ("metrics", lambda: tracker.log_metrics({"val/ade_m": 1.0}, step=5)),
            ("tags", lambda: tracker.set_tags({"done": "yes"})),
            ("artifact", lambda: tracker.log_artifact_bytes("best.pt", b"w", "checkpoint")),
            ("dict", lambda: tracker.log_dict("train_summary.json", {"steps": 5})),
            ("end", tracker.end),
        ]:
            started = time.monotonic()
            call()  # no exception
            timings[what] = time.monotonic() - started
    assert timings["metrics"] < 20, timings
    assert sum(timings.values()) < 30, timings
    warnings = [m for m in _warnings(caplog) if url in m]
    assert any("not logged" in m and "metrics at step 5" in m for m in warnings)
    assert any("artifact checkpoint/best.pt" in m for m in warnings)


# ---------------------------------------------------------------------- through train_stage
TRAIN = TrainConfig(
    epochs=1,
    max_steps=2,
    batch_size=4,
    warmup_steps=1,
    log_every_steps=1,
    checkpoint_every_steps=0,
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("fallback-data")
    for i in range(4):
        write_episode(root / "episodes", f"ep{i}", duration_s=5.0, heading=0.4 * i)
    prepared = pipeline.prepare_stage(
        str(root / "episodes"), str(root / "prepared"), dataclasses.replace(TINY_PREPARE, workers=1)
    )
    return prepared.manifest_uri


def test_training_with_mlflow_down_completes_into_the_fallback_store(
    manifest, dead_uri, tmp_path, caplog
) -> None:
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="autoe2e.tracking"):
        result = pipeline.train_stage(manifest, str(out), shard_model_config(), TRAIN)
    assert result.steps == 2
    assert any(dead_uri in m and "fallback store" in m for m in _warnings(caplog))
    assert not (out / pipeline.IN_PROGRESS_FILE).exists()
    assert (out / "runs" / result.run_id / "training" / "best.pt").is_file()

    client = _fallback_client(out / pipeline.MLFLOW_FALLBACK_DIR)
    run = client.get_run(result.run_id)
    assert run.data.tags[FALLBACK_TAG] == dead_uri
    assert "train/loss" in run.data.metrics
    history = client.get_metric_history(result.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]
    artifacts = {f.path for f in client.list_artifacts(result.run_id)}
    assert "checkpoint" in artifacts


def test_training_with_mlflow_down_and_tracking_strict_fails_before_training(
    manifest, dead_uri, tmp_path
) -> None:
    out = tmp_path / "out"
    strict = dataclasses.replace(TRAIN, tracking_strict=True)
    with pytest.raises(TrackingError, match="tracking_strict=false"):
        pipeline.train_stage(manifest, str(out), shard_model_config(), strict)
    assert not (out / "runs").exists()
    assert not (out / pipeline.MLFLOW_FALLBACK_DIR).exists()
    assert not (out / pipeline.IN_PROGRESS_FILE).exists()
