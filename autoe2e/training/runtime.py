"""Pieces shared by training and evaluation: dataset construction, precision choice and the
CPU allocator's settings."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Allocations up to this size come from the heap, and the heap keeps up to this much freed
#: memory at its top instead of giving it back to the kernel.
_KEEP_BYTES = 1 << 30
#: Some glibc versions refuse mmap thresholds above HEAP_MAX_SIZE / 2 (this, on 64-bit); with
#: it the benchmark's step still took a third of the faults (79k vs 238k; 1.18 vs 1.71 s).
_OLD_GLIBC_MMAP_MAX = 32 << 20
#: A user who tunes glibc's allocator through its environment variables keeps their choice.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_allocator_tuned = False


def keep_freed_cpu_memory() -> bool:
    """Let glibc's malloc reuse freed tensor memory instead of returning it to the kernel;
    -> whether the setting took effect.

    Why: every CPU training step allocates and frees activation and gradient tensors of tens of
    MB. With glibc's defaults they are mmap()ed and munmap()ed each time, so the kernel hands out
    and zero-fills fresh pages for every one of them. Measured on the quality benchmark's model
    (demo preset, batch 32, world model on, 2-core VM): 238k minor page faults and 0.63 s of
    system time per 1.7 s step; with these settings no faults and ~1.0 s per step (at 2 torch
    threads 0.99 -> 0.62 s); benchmarks/cpu_allocator.py measures it side by side. Peak RSS
    grows ~0.1-0.2 GB, since freed memory stays with the process. The weights after N steps are
    bit-identical either way (only where memory comes from changes).

    mallopt() applies to allocations from the moment it is called, in this process and in
    DataLoader workers it forks later. No-op on other C libraries (musl, macOS) and when the
    user set one of glibc's MALLOC_* variables. jemalloc / tcmalloc through LD_PRELOAD do the
    same but need a system package the venv cannot install; this needs nothing.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version
    except (OSError, AttributeError):  # not glibc
        return False
    version.restype = ctypes.c_char_p
    for mmap_max in (_KEEP_BYTES, _OLD_GLIBC_MMAP_MAX):
        if mallopt(_M_MMAP_THRESHOLD, mmap_max):
            break
    else:
        return False
    _allocator_tuned = bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
    logger.info(
        "glibc %s malloc: heap allocations up to %d MiB, freed memory kept: %s",
        version().decode(),
        mmap_max >> 20,
        _allocator_tuned,
    )
    return _allocator_tuned


#: (manifest_uri, episodes or None for all, load_world_model_frames) -> dataset with
#: `.episode_ids()` and `.cameras`; the default is autoe2e.data.dataset.ShardDataset.
DatasetFactory = Callable[[str, list[str] | None, bool], Any]


def shard_dataset_factory(manifest_uri: str, episodes: list[str] | None, frames: bool) -> Any:
    from autoe2e.data.dataset import ShardDataset

    return ShardDataset(manifest_uri, episodes=episodes, load_world_model_frames=frames)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None = plain fp32. bf16 needs no loss scaling (its exponent range equals fp32's)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None
