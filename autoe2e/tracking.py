"""A small MLflow wrapper shared by the train and evaluate stages.

It talks to MLflow through an explicit `MlflowClient` and run id (no global "active run"), so
two stages in different processes/pods can write to the same run: train creates it, evaluate
resumes it by `run_id`. The server is `MLFLOW_TRACKING_URI` when set (the in-cluster MLflow);
otherwise an embedded store under a local directory (`sqlite:///<dir>/mlflow.db`, artifacts in
`<dir>/artifacts`; MLflow 3 deprecates the plain file store).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: MLflow rejects param values longer than this; longer values are truncated with a marker.
_MAX_PARAM_LEN = 6000


class TrackingError(RuntimeError):
    """The tracking server/store cannot be used; the message names it and the fix."""


def resolve_tracking_uri(local_dir: str | None) -> tuple[str, str | None]:
    """-> (tracking URI, artifact location for new experiments or None = server default)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env, None
    if not local_dir:
        raise TrackingError(
            "no MLflow tracking location: set MLFLOW_TRACKING_URI or give a local directory"
        )
    root = Path(local_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


class Tracker:
    """One MLflow run: create it (run_id=None) or resume it (run_id from an earlier stage)."""

    def __init__(
        self,
        local_dir: str | None = None,
        experiment: str = "autoe2e",
        run_id: str | None = None,
        run_name: str | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        from mlflow import MlflowClient

        if tracking_uri:
            self.tracking_uri, artifact_location = tracking_uri, None
            if tracking_uri.startswith("sqlite:///"):
                db = Path(tracking_uri.removeprefix("sqlite:///"))
                artifact_location = (db.parent / "artifacts").as_uri()
        else:
            self.tracking_uri, artifact_location = resolve_tracking_uri(local_dir)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        try:
            if run_id:
                run = self.client.get_run(run_id)
                self.experiment_id = run.info.experiment_id
                if run.info.status != "RUNNING":
                    self.client.update_run(run_id, status="RUNNING")
            else:
                exp = self.client.get_experiment_by_name(experiment)
                self.experiment_id = (
                    exp.experiment_id
                    if exp is not None
                    else self.client.create_experiment(
                        experiment, artifact_location=artifact_location
                    )
                )
                run = self.client.create_run(self.experiment_id, run_name=run_name)
        except Exception as exc:
            raise TrackingError(
                f"MLflow at {self.tracking_uri} could not "
                f"{'resume run ' + run_id if run_id else 'start a run'} "
                f"({type(exc).__name__}: {exc}); check MLFLOW_TRACKING_URI, the server and run id"
            ) from exc
        self.run_id: str = run.info.run_id
        #: asynchronous log operations not yet confirmed (see `flush`)
        self._pending: list[Any] = []
        logger.info("MLflow run %s at %s", self.run_id, self.tracking_uri)

    # ------------------------------------------------------------------ logging
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = []
        for key, value in params.items():
            text = value if isinstance(value, str) else json.dumps(value)
            if len(text) > _MAX_PARAM_LEN:
                text = text[: _MAX_PARAM_LEN - 3] + "..."
            items.append(Param(key, text))
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0, wait: bool = True) -> None:
        """Log many metrics in one request; NaN/inf values are skipped (MLflow rejects some).

        `wait=False` hands the request to MLflow's background logging queue so a training step
        never waits for the server; `flush()` confirms them.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(key.replace("@", "_at_"), float(value), now, int(step))
            for key, value in metrics.items()
            if value is not None
            and float(value) == float(value)
            and abs(float(value)) != float("inf")
        ]
        if not items:
            return
        if wait:
            self.client.log_batch(self.run_id, metrics=items)
        else:
            self._pending.append(
                self.client.log_batch(self.run_id, metrics=items, synchronous=False)
            )

    def flush(self) -> None:
        """Wait for the asynchronous metric logging; a failure is a warning, not an error: the
        training it describes has already happened and its checkpoints are written."""
        pending, self._pending = self._pending, []
        for operation in pending:
            try:
                operation.wait()
            except Exception as exc:  # noqa: BLE001 - any transport/server error
                logger.warning("MLflow at %s lost some metrics: %s", self.tracking_uri, exc)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifact_bytes(self, name: str, data: bytes, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp, name)
            file.write_bytes(data)
            self.log_artifact(file, artifact_path)

    def log_dict(self, name: str, data: dict[str, Any], artifact_path: str | None = None) -> None:
        payload = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
        self.log_artifact_bytes(name, payload, artifact_path)

    def has_artifact(self, artifact_path: str) -> bool:
        return bool(self.client.list_artifacts(self.run_id, artifact_path))

    # ------------------------------------------------------------------ registry
    def register_model(self, name: str, artifact_path: str = "checkpoint") -> str:
        """Register this run's `artifact_path` as a new version of model `name`; -> version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        artifact_uri = self.client.get_run(self.run_id).info.artifact_uri
        version = self.client.create_model_version(
            name, source=f"{artifact_uri}/{artifact_path}", run_id=self.run_id
        )
        logger.info("registered %s version %s from run %s", name, version.version, self.run_id)
        return str(version.version)

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version of `name` that holds `alias`, or None (no such model or alias)."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if exc.error_code in _MISSING:
                return None
            raise

    def version_checkpoint(self, name: str, version: str) -> bytes:
        """The checkpoint file a registered version points at."""
        source = self.client.get_model_version(name, version).source
        return checkpoint_from_artifacts(source, self.tracking_uri, f"{name} version {version}")

    def set_alias(self, name: str, alias: str, version: str, tags: dict[str, str]) -> None:
        self.client.set_registered_model_alias(name, alias, version)
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.end("FAILED" if exc_type else "FINISHED")


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


#: What the registry answers for a model, version or alias that does not exist.
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


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
        if exc.error_code in _MISSING:
            logger.info("%s does not resolve at %s: %s", uri, tracking_uri, exc)
            return None
        raise TrackingError(f"cannot resolve {uri} at {tracking_uri}: {exc}") from exc
    return checkpoint_from_artifacts(version.source, tracking_uri, uri)
