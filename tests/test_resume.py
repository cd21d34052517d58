"""Spot-safe training: `autoe2e train` killed with SIGKILL mid-epoch and started again ends with
exactly the weights of an uninterrupted run; a checkpoint of other settings is refused."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from episode_factory import TINY_PREPARE, write_episode
from mlflow_server import mlflow_server
from tiny_configs import shard_model_config

from autoe2e import pipeline
from autoe2e.config import ModelConfig, TrainConfig, to_dict
from autoe2e.model.checkpoint import read_checkpoint
from autoe2e.training.checkpointing import config_differences, identity

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SETS = {
    "epochs": 2,
    "batch_size": 4,
    "warmup_steps": 2,
    "checkpoint_every_steps": 3,
    "log_every_steps": 5,
    # two loader worker processes: their positions are part of the checkpoint
    "num_workers": 2,
    "shuffle_buffer": 32,
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("resume")
    for i in range(6):
        write_episode(root / "episodes", f"ep{i}", duration_s=6.0, heading=0.3 * i)
    prepared = pipeline.prepare_stage(
        str(root / "episodes"),
        str(root / "prepared"),
        # small row groups: the loader splits the shard between its two workers
        dataclasses.replace(TINY_PREPARE, workers=1, row_group_target_bytes=1 << 16),
    )
    return prepared.manifest_uri


def _command(manifest: str, out: Path, **overrides: object) -> list[str]:
    argv = [sys.executable, "-m", "autoe2e.cli", "train", manifest, str(out)]
    defaults = to_dict(ModelConfig())
    for key, value in to_dict(shard_model_config()).items():
        if value != defaults[key]:
            argv += ["--model-set", f"{key}={json.dumps(value)}"]
    for key, value in {**TRAIN_SETS, **overrides}.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    return argv


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": str(ROOT), **(extra or {})}


def _run(argv: list[str], extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=_env(extra), capture_output=True, text=True, timeout=600)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path.read_bytes(), str(path))["state_dict"]


def _training_dir(out: Path) -> Path:
    (run,) = [p for p in (out / "runs").iterdir() if p.is_dir()]
    return run / "training"


def _kill_after_checkpoint(
    argv: list[str], out: Path, step: int, extra: dict[str, str] | None = None
) -> str:
    """Start training, SIGKILL it once the checkpoint of `step` exists; -> its stderr."""
    proc = subprocess.Popen(argv, env=_env(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    target = f"step-{step:09d}.pt"
    deadline = time.monotonic() + 300
    try:
        while not list(out.glob(f"runs/*/training/checkpoints/{target}")):
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return err.decode()


def test_sigkilled_training_resumes_to_bit_identical_weights(manifest, tmp_path) -> None:
    straight = _run(_command(manifest, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = _training_dir(tmp_path / "straight")
    total = json.loads((reference / "train_summary.json").read_text())["metrics"]["train/steps"]
    assert total >= 10, "too few steps to interrupt mid-epoch"

    out = tmp_path / "interrupted"
    argv = _command(manifest, out)
    _kill_after_checkpoint(argv, out, step=6)
    assert (out / pipeline.IN_PROGRESS_FILE).is_file()  # the unfinished run is recorded
    assert not (_training_dir(out) / "last.pt").exists()

    resumed = _run(argv)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "step 6" in resumed.stderr
    assert not (out / pipeline.IN_PROGRESS_FILE).exists()
    trained = _training_dir(out)  # the same MLflow run and folder: only one run under runs/
    for name in ("last.pt", "best.pt"):
        expected, got = _weights(reference / name), _weights(trained / name)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{name}: {key} differs"
    # at most two resumable checkpoints are kept
    assert len(list((trained / "checkpoints").glob("step-*.pt"))) <= 2


def test_resume_with_other_settings_is_refused_naming_the_fields(manifest, tmp_path) -> None:
    out = tmp_path / "out"
    _kill_after_checkpoint(_command(manifest, out), out, step=3)
    refused = _run(_command(manifest, out, lr=0.01))
    assert refused.returncode == 2
    assert "train.lr: checkpoint=0.001 now=0.01" in refused.stderr
    assert "another OUT_URI" in refused.stderr
    # execution-only settings may change on resume
    resumed = _run(_command(manifest, out, log_every_steps=1, checkpoint_every_steps=0))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr


def test_resume_while_mlflow_is_down_keeps_the_checkpoints(manifest, tmp_path) -> None:
    """Preempted while logging to a server that is gone when the pod comes back: training
    resumes from the recorded run's checkpoints and logs to the local fallback store."""
    out = tmp_path / "out"
    (tmp_path / "mlflow").mkdir()
    with mlflow_server(tmp_path / "mlflow") as url:
        _kill_after_checkpoint(
            _command(manifest, out), out, step=3, extra={"MLFLOW_TRACKING_URI": url}
        )
    (recorded,) = (out / "runs").iterdir()
    resumed = _run(_command(manifest, out), extra={"MLFLOW_TRACKING_URI": url})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "unreachable" in resumed.stderr and "stands in for" in resumed.stderr
    assert "resuming from" in resumed.stderr and "step 3" in resumed.stderr
    assert list((out / "runs").iterdir()) == [recorded]
    assert (recorded / "training" / "last.pt").is_file()
    assert (out / "mlflow-fallback" / "mlflow.db").is_file()


FLYTE_ATTEMPT = """
import json, sys
from autoe2e.config import TrainConfig, from_dict
from tasks.stages import PreparedDataset, train_model
from mlflow_server import mlflow_server
from tiny_configs import shard_model_config

manifest, out, sets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
result = train_model(  # flytekit local execution of the registered task
    dataset=PreparedDataset(manifest_uri=manifest, num_samples=0, num_episodes=0,
                            num_quarantined=0, published=True),
    out_uri=out, model_config=shard_model_config(), train_config=from_dict(TrainConfig, sets),
)
print(json.dumps({"steps": result.steps, "run": result.mlflow_run_id}))
"""


def test_a_retried_train_task_attempt_resumes_the_killed_one(manifest, tmp_path) -> None:
    """What a spot preemption does to the interruptible train task: attempt 1 is killed, Flyte
    runs attempt 2 with the same inputs, and it continues the same run from its checkpoint."""
    out = tmp_path / "flyte-out"
    argv = [sys.executable, "-c", FLYTE_ATTEMPT, manifest, str(out), json.dumps(TRAIN_SETS)]
    env = {**_env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("runs/*/training/checkpoints/step-000000003.pt")):
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    (first_run,) = [p.name for p in (out / "runs").iterdir()]

    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["run"] == first_run  # the same MLflow run, continued
    assert result["steps"] > 3


def test_a_terminal_gets_a_progress_bar_and_a_pipe_gets_log_lines(manifest, tmp_path) -> None:
    import pty

    argv = _command(manifest, tmp_path / "tty", checkpoint_every_steps=0, max_steps=4)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(leader)
    terminal = b"".join(chunks).decode(errors="replace")
    assert "4/4" in terminal and "step" in terminal and "samples_s=" in terminal

    piped = _run(_command(manifest, tmp_path / "pipe", checkpoint_every_steps=0, max_steps=4))
    assert piped.returncode == 0
    assert "samples_s=" not in piped.stderr and "step 4" in piped.stderr


def test_a_checkpoint_from_before_a_new_config_field_resumes_as_its_default() -> None:
    """Upgrading the code must not strand a half-finished run: a field its checkpoint lacks
    (added since) counts as the field's default, the behaviour from before the field existed."""
    current = identity(ModelConfig(), TrainConfig())
    stored = copy.deepcopy(current)
    del stored["model"]["planner_trains_history"], stored["train"]["jepa_target"]
    assert config_differences(stored, current) == []
    changed = identity(ModelConfig(planner_trains_history=True), TrainConfig())
    assert config_differences(stored, changed) == [
        "model.planner_trains_history: checkpoint=False now=True"
    ]
