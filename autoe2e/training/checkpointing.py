"""Training checkpoints for resuming: everything that decides what the next step computes.

One file per saved step under `<out>/checkpoints/step-<n>.pt`, holding the `state_dict()` of
every stateful part of the run (torch's `Stateful` protocol): the model (with the EMA target
encoder), the optimizer, the progress (step, epoch, position in it, best validation so far,
time spent: the LR/EMA schedule is a function of step and time), the loader position and
every rank's RNGs, plus the configs it may be resumed with.
Each file is written whole or not at all (a local temp file renamed into place; one S3 PUT), so
the newest file that exists is complete; the two newest are kept. Loading uses
`torch.load(weights_only=True)`: RNG states are stored as tensors and plain lists for that.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any, Protocol

import torch

from autoe2e import storage
from autoe2e.config import ConfigError, ModelConfig, TrainConfig, to_dict

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FORMAT = "autoe2e.train-state"
_NAME = re.compile(r"^step-(\d{9})\.pt$")
#: TrainConfig fields that only change how a run executes or reports, never what it computes:
#: a resumed run may change them.
EXECUTION_ONLY = (
    "checkpoint_every_steps",
    "log_every_steps",
    "prefetch_factor",
    "experiment",
    "tracking_strict",
)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def identity(model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    """The configuration a checkpoint can only be resumed with (execution-only fields aside)."""
    train = {k: v for k, v in to_dict(train_cfg).items() if k not in EXECUTION_ONLY}
    return {"model": to_dict(model_cfg), "train": train}


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`section.field: checkpoint=... now=...` for every setting that differs.

    A field the stored identity lacks was added to the config after the checkpoint was written;
    it counts as its default, because a new field's default keeps the behaviour from before it
    existed (so upgrading the code does not strand a half-finished run).
    """
    out = []
    for section, defaults in (("model", to_dict(ModelConfig())), ("train", to_dict(TrainConfig()))):
        a, b = stored.get(section, {}), current[section]
        for key in sorted(set(a) | set(b)):
            was = a[key] if key in a else defaults.get(key)
            if was != b.get(key):
                out.append(f"{section}.{key}: checkpoint={was!r} now={b.get(key)!r}")
    return out


class CheckpointManager:
    def __init__(self, out_uri: str, keep: int = 2) -> None:
        self.root = storage.join_uri(out_uri, CHECKPOINT_DIR)
        self.keep = keep
        #: URI of the newest checkpoint this process wrote (for error messages)
        self.last_saved: str | None = None

    def _steps(self) -> list[int]:
        try:
            names = storage.list_children(self.root)
        except storage.StorageError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _NAME.match(n)))

    def uri(self, step: int) -> str:
        return storage.join_uri(self.root, f"step-{step:09d}.pt")

    def save(self, step: int, state: dict[str, Any]) -> str:
        """Write `state` (plain values) as the checkpoint of `step`, whole or not at all."""
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "step": step, **state}, buffer)
        uri = self.uri(step)
        storage.write_bytes(uri, buffer.getvalue())
        self.last_saved = uri
        for old in self._steps()[: -self.keep]:
            storage.delete(self.uri(old))
        logger.info("checkpoint at step %d -> %s", step, uri)
        return uri

    def latest(self, expected_identity: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The newest checkpoint, checked against the current configs; None when there is none.

        A checkpoint of other configs is refused with the differing fields named: resuming it
        would silently train something else.
        """
        steps = self._steps()
        if not steps:
            return None
        uri = self.uri(steps[-1])
        state = torch.load(
            io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True
        )
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{uri} is not an AutoE2E training checkpoint")
        differences = config_differences(state["identity"], expected_identity)
        if differences:
            raise ConfigError(
                f"{uri} was written by a run with other settings ({'; '.join(differences)}); "
                f"resume with the same settings, or train into another OUT_URI (or delete "
                f"{self.root} to start over)"
            )
        return uri, state


def collect_state(parts: dict[str, Stateful]) -> dict[str, Any]:
    """`state_dict()` of every part (on every rank: some parts gather across ranks)."""
    return {name: part.state_dict() for name, part in parts.items()}


def restore_state(parts: dict[str, Stateful], state: dict[str, Any]) -> None:
    for name, part in parts.items():
        part.load_state_dict(state[name])
