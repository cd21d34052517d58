"""Resource and retry settings shared by the tasks, in one place for the platform team.

Figures follow the upstream EKS setup (training: 1 GPU, 4 CPU, 16 GiB, an 8 GiB memory-backed
/dev/shm so DataLoader workers do not die with bus errors; data prep: 16 CPU, 32 GiB, large
ephemeral storage, retries). The GPU type is chosen at registration time with
AUTOE2E_GPU_ACCELERATOR (a name from flytekit.extras.accelerators, e.g. L40S, A10G, L4); unset
means any GPU node.
"""

from __future__ import annotations

import os

from flytekit import Resources
from flytekit.extras import accelerators

PREPARE_RESOURCES = Resources(cpu="16", mem="32Gi", ephemeral_storage="100Gi")
TRAIN_REQUESTS = Resources(cpu="4", mem="16Gi", gpu="1", ephemeral_storage="20Gi")
TRAIN_LIMITS = Resources(gpu="1")
EVALUATE_RESOURCES = Resources(cpu="4", mem="16Gi", gpu="1")
TRAIN_SHARED_MEMORY = "8Gi"
#: Transient storage / spot failures are retried; user errors fail on the first attempt anyway.
RETRIES = 2


def gpu_accelerator() -> accelerators.BaseAccelerator | None:
    name = os.environ.get("AUTOE2E_GPU_ACCELERATOR", "").strip()
    if not name:
        return None
    accelerator = getattr(accelerators, name.upper(), None)
    if not isinstance(accelerator, accelerators.BaseAccelerator):
        raise ValueError(
            f"AUTOE2E_GPU_ACCELERATOR={name!r} is not a flytekit accelerator; "
            "use one of A10G, L4, L40S, A100, H100, H200, T4"
        )
    return accelerator
