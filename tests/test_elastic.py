"""Multi-process training the way Flyte's PyTorch Elastic plugin runs it: the train task,
registered with AUTOE2E_TRAIN_NPROC=2, executed locally, so the plugin calls torch's
`elastic_launch` with 2 CPU worker processes on gloo."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from episode_factory import TINY_PREPARE, write_episode

from autoe2e import pipeline
from autoe2e.model.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
#: per-rank batch. The single-process reference gets the same global batches: its 2 loader
#: workers stream what the 2 ranks' in-process loaders stream (the order depends on world size
#: x workers = 2 in both), and it accumulates their 2 batches into one optimizer step.
BATCH = 4
RUN_TASK = """
import json, sys
from autoe2e.config import TrainConfig
from tasks.stages import PreparedDataset, train_model
from tiny_configs import shard_model_config

manifest, out = sys.argv[1], sys.argv[2]
batch, workers, accum = (int(v) for v in sys.argv[3:6])
result = train_model(
    dataset=PreparedDataset(manifest_uri=manifest, num_samples=0, num_episodes=0,
                            num_quarantined=0, published=True),
    out_uri=out,
    # LayerNorm, no BatchNorm: per-rank batch statistics would make DDP differ from one process
    model_config=shard_model_config(backbone="convnext_atto", image_width=96, image_height=64),
    train_config=TrainConfig(epochs=1, max_steps=4, batch_size=batch, warmup_steps=1,
                             log_every_steps=1, checkpoint_every_steps=0,
                             num_workers=workers, grad_accum_steps=accum),
)
print(json.dumps({"steps": result.steps, "run": result.mlflow_run_id}))
"""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("elastic")
    for i in range(6):
        write_episode(
            root / "episodes", f"ep{i}", duration_s=6.0, heading=0.2 * i, width=128, height=96
        )
    # frames large enough for convnext's stride-32 features
    config = dataclasses.replace(
        TINY_PREPARE, workers=1, image_width=96, image_height=64, row_group_target_bytes=1 << 16
    )
    return pipeline.prepare_stage(
        str(root / "episodes"), str(root / "prepared"), config
    ).manifest_uri


def _train(
    manifest: str, out: Path, nproc: int, workers: int, accum: int
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        AUTOE2E_TRAIN_GPUS="0",
        AUTOE2E_TRAIN_NPROC=str(nproc),
        OMP_NUM_THREADS="1",
        FLYTE_LOCAL_CACHE_ENABLED="false",
        AUTOE2E_SAMPLE_LOG_DIR=str(out / "samples"),
    )
    argv = [sys.executable, "-c", RUN_TASK, manifest, str(out), str(BATCH), str(workers)]
    argv.append(str(accum))
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def _last(out: Path) -> dict[str, torch.Tensor]:
    (path,) = out.glob("runs/*/training/last.pt")
    return read_checkpoint(path.read_bytes(), str(path))["state_dict"]


def test_two_gloo_workers_train_in_sync_like_one_process(manifest, tmp_path) -> None:
    pair = _train(manifest, tmp_path / "ddp", nproc=2, workers=0, accum=1)
    assert pair.returncode == 0, pair.stderr[-4000:]
    assert "DDP rank 0/2" in pair.stderr and "DDP rank 1/2" in pair.stderr
    # the replicas' parameter checksums were compared (all_gather) after each of the 4 steps
    assert json.loads(pair.stdout.strip().splitlines()[-1])["steps"] == 4
    # rank 0 alone owns the MLflow run: one run folder
    assert len(list((tmp_path / "ddp" / "runs").iterdir())) == 1

    # each rank trained on its own samples: no sample was served to both ranks
    served = [
        {tuple(json.loads(line)) for line in (tmp_path / "ddp" / "samples" / f"rank-{r}.jsonl")
         .read_text().splitlines()}
        for r in range(2)
    ]  # fmt: skip
    assert served[0] and served[1] and not served[0] & served[1]
    single = _train(manifest, tmp_path / "one", nproc=1, workers=2, accum=2)
    assert single.returncode == 0, single.stderr[-4000:]
    ddp, one = _last(tmp_path / "ddp"), _last(tmp_path / "one")
    # The same global batches and averaged gradients: the same weights up to float reduction
    # order.
    worst = max((ddp[k].double() - one[k].double()).abs().max().item() for k in one)
    logging.getLogger(__name__).warning("largest weight difference DDP vs one process: %.3g", worst)
    assert worst < 1e-4, worst
