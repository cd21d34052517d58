"""Warm start: the initial weights of a training run from a checkpoint or a registered model.

Nightly retraining starts from the current champion (`models:/<name>@champion`) instead of
from scratch; a path or s3:// URI of a `best.pt` works too. The ModelConfig must match the
checkpoint's (load_into names the differing fields otherwise).
"""

from __future__ import annotations

import logging

from autoe2e import storage
from autoe2e.config import ConfigError

logger = logging.getLogger(__name__)


def initial_checkpoint(uri: str, optional: bool, tracking_uri: str | None) -> bytes | None:
    """Checkpoint bytes for `TrainConfig.init_checkpoint`, or None to start from scratch."""
    if uri.startswith("models:/"):
        from autoe2e.registry import registered_checkpoint

        if not tracking_uri:
            raise ConfigError(
                f"init_checkpoint={uri!r} names a registered model but no MLflow is configured; "
                "set MLFLOW_TRACKING_URI"
            )
        data = registered_checkpoint(uri, tracking_uri)
        if data is None:
            if optional:
                logger.warning(
                    "%s does not exist yet at %s: training from scratch", uri, tracking_uri
                )
                return None
            raise ConfigError(
                f"init_checkpoint={uri!r} does not exist in the registry at {tracking_uri}; "
                "register a model first, or set init_checkpoint_optional=true"
            )
        return data
    if not storage.exists(uri):
        raise ConfigError(
            f"init_checkpoint={uri!r} does not exist; give a checkpoint written by autoe2e train "
            "(e.g. <run>/training/best.pt) or models:/<name>@<alias>"
        )
    return storage.read_bytes(uri)
