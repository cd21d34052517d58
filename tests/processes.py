"""Process helpers shared by tests that check nothing is left running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pid_alive(pid: int) -> bool:
    """Whether `pid` still runs; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return not (fields and fields[0] == "Z")


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    return {
        int(stat_file.parent.name)
        for stat_file in Path("/proc").glob("[0-9]*/stat")
        if (fields := _stat_fields(stat_file)) and int(fields[1]) == pid
    }


def _stat_fields(stat_file: Path) -> list[str]:
    """The fields of a /proc/PID/stat after the command name (state, parent pid, ...); none
    when the process is gone. The name is in parentheses and may itself hold spaces."""
    try:
        return stat_file.read_text().rsplit(") ", 1)[-1].split()
    except OSError:
        return []


def kill_once_ready(
    script: str, args: list[str], tmp_path: Path, ready: Callable[[int], bool]
) -> set[int]:
    """Run `script` (Python source, the repository on its path) with `args`; once
    `ready(its pid)`, SIGKILL it and return the pids its children had then."""
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, str(path), *args], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready(parent.pid):
            assert parent.poll() is None, f"{path} ended before it was ready"
            assert time.monotonic() < deadline, f"{path} not ready after 120 s"
            time.sleep(0.2)
        children = child_pids(parent.pid)
    finally:
        parent.kill()
        parent.wait()
    return children


def still_running_after(pids: set[int], seconds: float) -> set[int]:
    """The `pids` still running once all are gone or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {pid for pid in pids if pid_alive(pid)}
