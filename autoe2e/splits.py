"""Deterministic train/val/test split by episode.

Samples of one episode are strongly correlated, so splitting by frame leaks the test set into
training. Each episode id is hashed (with a seed) to a stable position; the order therefore
does not depend on how episodes were listed, and adding an episode does not reshuffle others.
"""

from __future__ import annotations

import hashlib
import math


def _rank(episode_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{episode_id}".encode()).hexdigest()


def split_episodes(
    ids: list[str], val_fraction: float, test_fraction: float, seed: int = 0
) -> dict[str, list[str]]:
    """-> {"train": [...], "val": [...], "test": [...]} (each sorted).

    With >= 3 episodes every part gets at least one episode (test and val round up, train keeps
    the rest). With fewer, an honest held-out split is impossible, so a clear error is raised
    instead of silently evaluating on training data.
    """
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"episode ids must be unique, duplicated: {dupes}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and sum to < 1"
        )
    n = len(ids)
    if n < 3:
        raise ValueError(
            f"need at least 3 episodes for a train/val/test split by episode, got {n} ({ids}); "
            "generate or prepare more episodes"
        )
    ordered = sorted(ids, key=lambda e: _rank(e, seed))
    n_test = max(1, math.ceil(n * test_fraction))
    n_val = max(1, math.ceil(n * val_fraction))
    while n - n_test - n_val < 1:  # keep at least one training episode
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        else:
            n_test -= 1
    return {
        "test": sorted(ordered[:n_test]),
        "val": sorted(ordered[n_test : n_test + n_val]),
        "train": sorted(ordered[n_test + n_val :]),
    }
