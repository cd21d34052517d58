"""Resource and retry settings shared by the tasks, in one place for the platform team.

Figures follow the upstream EKS setup (training: 1 GPU, 4 CPU, 16 GiB, an 8 GiB memory-backed
/dev/shm so DataLoader workers do not die with bus errors). Data prep is fanned out one episode
per pod (4 CPU, 8 GiB, 20 GiB scratch) and published by one larger pod; every task retries
transient storage errors. The GPU type is chosen at registration time with
AUTOE2E_GPU_ACCELERATOR (a name from flytekit.extras.accelerators, e.g. L40S, A10G, L4); unset
means any GPU node.
"""

from __future__ import annotations

import os

from flytekit import Resources
from flytekit.extras import accelerators
from flytekitplugins.kfpytorch import Elastic

#: One episode per mapped pod: one decode thread per CPU (cameras decoded concurrently), the
#: episode's videos on disk and its tables in RAM.
PREPARE_EPISODE_CPUS = 4
PREPARE_EPISODE_RESOURCES = Resources(
    cpu=str(PREPARE_EPISODE_CPUS), mem="8Gi", ephemeral_storage="20Gi"
)
#: Publishing reads one shard's staged episodes at a time (256 MiB default target): the Arrow
#: tables, the serialised Parquet bytes and the read-back copy validation checks.
PUBLISH_RESOURCES = Resources(cpu="4", mem="8Gi", ephemeral_storage="20Gi")
LIST_RESOURCES = Resources(cpu="1", mem="1Gi")
TRAIN_SHARED_MEMORY = "8Gi"
#: Transient storage / spot failures are retried; user errors fail on the first attempt anyway.
RETRIES = 2
#: Spot capacity where a preempted pod loses nothing: every episode is staged under a
#: content-addressed folder whose `staged.json` is written last and publishing is create-only;
#: training checkpoints every `checkpoint_every_steps` and a retried attempt resumes the run that
#: OUT_URI records (`pipeline.train_stage`). Evaluation stays on on-demand nodes: a retried
#: attempt would register a second model version.
PREPARE_INTERRUPTIBLE = True
TRAIN_INTERRUPTIBLE = True
EVALUATE_INTERRUPTIBLE = False


def train_gpus() -> int:
    """GPUs per training/evaluation pod (AUTOE2E_TRAIN_GPUS at registration, default 1).

    0 registers CPU-only train/evaluate tasks, for a cluster without GPU nodes such as the kind
    sandbox; the request is compiled into the task, so it is a registration-time setting.
    """
    raw = os.environ.get("AUTOE2E_TRAIN_GPUS", "").strip() or "1"
    if not raw.isdigit():
        raise ValueError(f"AUTOE2E_TRAIN_GPUS={raw!r} is not a whole number; e.g. 1, or 0 on kind")
    return int(raw)


def _positive_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}={raw!r} is not a positive integer")
    return int(raw)


def train_elastic() -> Elastic | None:
    """PyTorch Elastic for the train task: AUTOE2E_TRAIN_NNODES nodes (default 1) x
    AUTOE2E_TRAIN_NPROC processes each (default one per GPU of the pod), read at registration.

    None for a single process: Elastic would only add a spawned child around the same work.
    nnodes > 1 becomes a Kubeflow PyTorchJob (the training operator must run in the cluster).
    """
    nnodes = _positive_env("AUTOE2E_TRAIN_NNODES", 1)
    nproc = _positive_env("AUTOE2E_TRAIN_NPROC", max(train_gpus(), 1))
    if nnodes * nproc == 1:
        return None
    return Elastic(nnodes=nnodes, nproc_per_node=nproc)


def train_launch_env() -> dict[str, str]:
    """The train task's launch settings as container environment variables.

    With one node, Elastic leaves no trace in the task spec: the pod re-imports this module and
    reads these variables to decide how many processes to start, so they must travel with the
    task (`@task(environment=...)`) instead of depending on the pod's environment.
    """
    nnodes = _positive_env("AUTOE2E_TRAIN_NNODES", 1)
    nproc = _positive_env("AUTOE2E_TRAIN_NPROC", max(train_gpus(), 1))
    return {"AUTOE2E_TRAIN_NNODES": str(nnodes), "AUTOE2E_TRAIN_NPROC": str(nproc)}


def _gpu_resources(cpu: str, mem: str, **extra: str) -> tuple[Resources, Resources | None]:
    """(requests, limits): a GPU goes in both, since Kubernetes schedules extended resources
    by their limit and Flyte adds the accelerator affinity only when the limit names a GPU."""
    gpus = train_gpus()
    if gpus == 0:
        return Resources(cpu=cpu, mem=mem, **extra), None
    return Resources(cpu=cpu, mem=mem, gpu=str(gpus), **extra), Resources(gpu=str(gpus))


TRAIN_REQUESTS, TRAIN_LIMITS = _gpu_resources("4", "16Gi", ephemeral_storage="20Gi")
EVALUATE_REQUESTS, EVALUATE_LIMITS = _gpu_resources("4", "16Gi")


def prepare_concurrency() -> int:
    """How many episodes are prepared at once (AUTOE2E_PREPARE_CONCURRENCY, default 16).

    Read at registration time: the map task's concurrency is compiled into the workflow, it is
    not a run-time input.
    """
    raw = os.environ.get("AUTOE2E_PREPARE_CONCURRENCY", "").strip() or "16"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"AUTOE2E_PREPARE_CONCURRENCY={raw!r} is not a positive integer; e.g. 16")
    return int(raw)


def gpu_accelerator() -> accelerators.BaseAccelerator | None:
    """The GPU type the train task asks for (AUTOE2E_GPU_ACCELERATOR), None = any GPU node.

    Flyte turns it into a node affinity on its `gpu-device-node-label` (charts/flyte values)
    with the device string as value, which the GPU NodePools (charts/gpu-nodes) carry as label.
    """
    name = os.environ.get("AUTOE2E_GPU_ACCELERATOR", "").strip()
    if not name or train_gpus() == 0:
        return None
    accelerator = getattr(accelerators, name.upper(), None)
    if not isinstance(accelerator, accelerators.BaseAccelerator):
        raise ValueError(
            f"AUTOE2E_GPU_ACCELERATOR={name!r} is not a flytekit accelerator; "
            "use one of A10G, L4, L40S, A100, H100, H200, T4"
        )
    return accelerator
