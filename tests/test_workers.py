"""Pool workers stop when the process that started them is killed (`autoe2e.workers`).

Without that they go on with the tasks queued to them beside a rerun that resumes the same
output folder (measured: a killed benchmark's episode-generation workers rendered on for over a
minute). Each test kills the parent with SIGKILL, which it cannot catch, so only the kernel's
parent-death signal can stop the workers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from processes import child_pids, kill_once_ready, still_running_after

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only"
)

_POOL = """
import multiprocessing, sys, time
from autoe2e.workers import worker_pool

def ready(path):
    open(path, "w").close()

if __name__ == "__main__":
    context = multiprocessing.get_context(sys.argv[1])
    with worker_pool(2, context=context, setup=ready, setup_args=(sys.argv[2],)) as pool:
        list(pool.map(time.sleep, [300, 300]))
"""


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_pool_workers_stop_when_their_parent_is_killed(tmp_path: Path, start_method: str) -> None:
    flag = tmp_path / "a worker is set up"
    workers = kill_once_ready(
        _POOL,
        [start_method, str(flag)],
        tmp_path,
        lambda pid: flag.exists() and len(child_pids(pid)) >= 2,
    )
    assert len(workers) >= 2  # both workers (and, spawned, the resource tracker)
    assert still_running_after(workers, 30) == set()


_GENERATE = """
import sys
from autoe2e.config import GenerateConfig
from autoe2e.synthetic import generate_episodes

if __name__ == "__main__":
    config = GenerateConfig(
        num_episodes=8, duration_s=600.0, cameras=["front"], image_width=64, image_height=48
    )
    generate_episodes(sys.argv[1], config, workers=2)
"""


def test_episode_generation_stops_with_a_killed_generator(tmp_path: Path) -> None:
    """Each of these episodes renders for tens of seconds: a worker that outlived its parent
    would still run 10 s after the kill."""
    out = tmp_path / "episodes"
    workers = kill_once_ready(
        _GENERATE,
        [str(out)],
        tmp_path,
        lambda pid: out.exists() and len(list(out.iterdir())) >= 2,  # both are rendering
    )
    assert len(workers) >= 2
    assert still_running_after(workers, 10) == set()
