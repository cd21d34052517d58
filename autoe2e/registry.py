"""Reading checkpoints back out of MLflow: a run's artifact folder, or the version a registered
model URI (`models:/<name>@<alias>`, `models:/<name>/<version>`) points at. Used by warm
starts (nightly retraining from the champion) and by promotion (re-scoring the champion)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from autoe2e.tracking import MISSING_ERROR_CODES, TrackingError

logger = logging.getLogger(__name__)


def checkpoint_from_artifacts(artifact_uri: str, tracking_uri: str, what: str) -> bytes:
    """Download an artifact folder (or file) and return the one checkpoint (`*.pt`) in it."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=artifact_uri, dst_path=tmp, tracking_uri=tracking_uri
            )
        )
        files = [local] if local.is_file() else sorted(local.rglob("*.pt"))
        if len(files) != 1:
            raise TrackingError(
                f"{what} ({artifact_uri}) holds {len(files)} checkpoint files, expected one .pt"
            )
        return files[0].read_bytes()


def registered_checkpoint(uri: str, tracking_uri: str) -> bytes | None:
    """Bytes of the checkpoint behind `models:/<name>@<alias>` or `models:/<name>/<version>`;
    None when that alias or version does not exist (yet)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ref = uri.removeprefix("models:/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = ref.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except ValueError:
        raise TrackingError(
            f"{uri!r} is not a registered-model URI; use models:/<name>@<alias> or "
            "models:/<name>/<version>"
        ) from None
    except MlflowException as exc:
        if exc.error_code in MISSING_ERROR_CODES:
            logger.info("%s does not resolve at %s: %s", uri, tracking_uri, exc)
            return None
        raise TrackingError(f"cannot resolve {uri} at {tracking_uri}: {exc}") from exc
    return checkpoint_from_artifacts(version.source, tracking_uri, uri)
