"""Process pools whose workers stop when the process that started them dies.

A `ProcessPoolExecutor` worker outlives a killed parent (SIGKILL, an OOM kill, SIGTERM to the
parent alone): it goes on with its task and the ones already queued to it, for seconds to
minutes of CPU (measured: a killed `benchmarks/quality.py` left its two episode-generation
workers rendering for over a minute; a training worker would go on for up to ~20 min). Beside a
rerun that resumes the same output folder that is two writers on one folder and half the CPU
gone. On Linux each worker asks the kernel for SIGTERM when its parent dies
(`prctl(PR_SET_PDEATHSIG)`); what it had written stays, and a rerun resumes from it as after any
interruption. Elsewhere the pool behaves as a plain `ProcessPoolExecutor`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import Any

#: prctl(2) option: the signal a process gets when the thread that started it dies
PR_SET_PDEATHSIG = 1


def _exit_with_parent(parent: int) -> None:
    """Have this process get SIGTERM when `parent` (its parent) dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _start_worker(
    parent: int, setup: Callable[..., None] | None, setup_args: tuple[Any, ...]
) -> None:
    _exit_with_parent(parent)
    if setup is not None:
        setup(*setup_args)


def worker_pool(
    max_workers: int,
    *,
    context: BaseContext | None = None,
    setup: Callable[..., None] | None = None,
    setup_args: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """A `ProcessPoolExecutor` whose workers stop with this process; `setup(*setup_args)` runs
    in each worker after that (a module-level function, so spawned workers can import it).

    The kernel signals a worker when the *thread* that started it ends. Workers start in the
    thread that submits (a replacement for a dead one in the pool's manager thread, which lives
    as long as the pool): use the pool in a `with` block in that thread, as every caller here
    does, not from a short-lived thread that hands it on.
    """
    return ProcessPoolExecutor(
        max_workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(os.getpid(), setup, setup_args),
    )


__all__ = ["worker_pool"]
