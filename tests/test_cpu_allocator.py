"""glibc malloc settings for CPU training (autoe2e.training.runtime.keep_freed_cpu_memory).

Each case runs in a fresh interpreter: mallopt() changes the whole process for good, and the
point is what happens to a process that frees and allocates tensors of training-step size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the settings are glibc's"
)

_CYCLES = """
import json, resource, sys, torch
from autoe2e.training.runtime import keep_freed_cpu_memory
took = keep_freed_cpu_memory() if sys.argv[1] == "keep" else None
def cycle():  # what a training step does: allocate activations, free them, again
    torch.empty(16 << 20).fill_(1.0)  # 64 MiB
cycle(); cycle()  # the heap grows to its working size: new pages either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):
    cycle()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 12
print(json.dumps({"took": took, "faults_per_cycle": faults}))
"""


def _cycle(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(
        [sys.executable, "-c", _CYCLES, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_freed_tensor_memory_is_reused_instead_of_faulted_in_again():
    default = _cycle("default")
    kept = _cycle("keep")
    pages = (64 << 20) / 4096
    # glibc's defaults: the 64 MiB buffer is unmapped on free and faulted in page by page again
    assert default["faults_per_cycle"] > 0.9 * pages, default
    assert kept["took"] is True
    # kept: the heap settles after a few cycles (seen: 3 of the first 12 still fault), then the
    # freed pages are reused
    assert kept["faults_per_cycle"] < 0.4 * pages, kept


def test_a_users_own_malloc_settings_are_left_alone():
    mine = _cycle("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert mine["took"] is False
    assert mine["faults_per_cycle"] > 0.5 * (64 << 20) / 4096, mine
