"""A small MLflow wrapper shared by the train and evaluate stages.

It talks to MLflow through an explicit `MlflowClient` and run id (no global "active run"), so
two stages in different processes/pods can write to the same run: train creates it, evaluate
resumes it by `run_id`. The server is `MLFLOW_TRACKING_URI` when set (the in-cluster MLflow);
otherwise an embedded store under a local directory (`sqlite:///<dir>/mlflow.db`, artifacts in
`<dir>/artifacts`; MLflow 3 deprecates the plain file store).

An MLflow outage must not cost a training run (`Tracker.open`):

* Before a run is created on an http(s) server, `GET <uri>/health` is probed with a short
  timeout: MLflow's own client retries a refused connection for about four minutes.
* Unreachable and `strict=False`: a warning names the URI and the fallback store, and the run is
  logged to an embedded store in a local fallback directory instead, tagged
  `tracking_fallback_from=<uri>`. `strict=True` raises `TrackingError` before anything starts.
* For http(s) servers the process's MLflow HTTP retries are bounded (`_HTTP_RETRY_DEFAULTS`,
  unless the environment sets them), so a request to a server that went down mid-run fails in
  seconds. Logging calls (params, metrics, tags, artifacts, the policy model, ending the run)
  then warn instead of raising: what they record also lives in OUT_URI. Registry reads and
  writes still raise: promotion must not decide on missing information.

The connection rules (URI, probe, retry bounds) are in `autoe2e.tracking_server`; the
registry readers in `autoe2e.registry`.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from autoe2e.tracking_server import (
    TrackingError,
    _bound_http_retries,
    _global_tracking_uri,
    _is_http,
    _short_reason,
    probe_server,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: MLflow rejects param values longer than this; longer values are truncated with a marker.
_MAX_PARAM_LEN = 6000

#: Where `Tracker.open` logs while the server is unreachable when no fallback directory is given
#: (relative to the working directory, i.e. local to this machine/pod).
DEFAULT_FALLBACK_DIR = "mlflow-fallback"
#: Tag on a fallback run: the tracking URI that was unreachable.
FALLBACK_TAG = "tracking_fallback_from"
#: Tag on a fallback run that stands in for a run it could not resume on the unreachable server.
FALLBACK_RUN_TAG = "tracking_fallback_for_run"

#: Error codes of a server that answered but failed on its side (or of a transport failure,
#: which MLflow reports as INTERNAL_ERROR): an outage for logging purposes, not a caller bug.
_SERVER_SIDE = ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")


#: What MLflow answers for a run, model, version or alias that does not exist.
MISSING_ERROR_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _policy_requirements() -> list[str]:
    """pip requirements of a logged policy, pinned to what is installed here. Listed instead of
    inferred (MLflow would load the model in a subprocess to find them: slow). The autoe2e
    package itself is not listed: it is not on a public index (a same-named package there would
    be someone else's); a loader needs it importable, as in the project's image."""
    from importlib.metadata import version

    import mlflow.pytorch

    return [*mlflow.pytorch.get_default_pip_requirements(), f"timm=={version('timm')}"]


class Tracker:
    """One MLflow run: create it (run_id=None) or resume it (run_id from an earlier stage).

    The constructor uses exactly the store it is given and raises `TrackingError` when that
    fails; `Tracker.open` adds the reachability probe and the local fallback.
    """

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
        if _is_http(self.tracking_uri):
            _bound_http_retries()
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
        #: True when this continues an existing run (system metrics then continue its steps)
        self.resumed = bool(run_id)
        #: The unreachable tracking URI this run stands in for (`Tracker.open`), else None.
        self.fallback_from: str | None = None
        #: asynchronous log operations not yet confirmed (see `flush`)
        self._pending: list[Any] = []
        #: set when a logging call found the server down: later calls probe before trying
        self._down = False
        self._system_metrics: Any = None
        logger.info("MLflow run %s at %s", self.run_id, self.tracking_uri)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        local_dir: str | None = None,
        *,
        experiment: str = "autoe2e",
        run_id: str | None = None,
        run_name: str | None = None,
        strict: bool = False,
        fallback_dir: str | None = None,
    ) -> Tracker:
        """The run on MLFLOW_TRACKING_URI (or the embedded store under `local_dir`), with the
        outage policy in one place.

        An http(s) server is probed first (a few seconds at most, not MLflow's minutes of
        retries). Unreachable, or failing to create/resume the run for a server-side reason:
        `strict` raises `TrackingError` naming the URI and the fixes; otherwise a warning names
        the URI and the fallback store, and the run goes to `sqlite:///<fallback_dir>/mlflow.db`
        (default `./mlflow-fallback`), tagged `tracking_fallback_from=<uri>`. A `run_id` that
        the fallback store holds (an earlier stage fell back) is resumed there, also when the
        server is back; one that only the unreachable server holds gets a fresh fallback run,
        tagged `tracking_fallback_for_run=<run_id>`. A run id the reachable server does not know
        stays an error either way: that is a wrong id, not an outage.
        """
        from mlflow.exceptions import MlflowException

        uri = resolve_tracking_uri(local_dir)[0]
        if not _is_http(uri):
            return cls(local_dir=local_dir, experiment=experiment, run_id=run_id, run_name=run_name)
        fallback_root = Path(fallback_dir or DEFAULT_FALLBACK_DIR).resolve()
        started = time.monotonic()
        problem = probe_server(uri)
        if problem is None:
            try:
                return cls(
                    tracking_uri=uri, experiment=experiment, run_id=run_id, run_name=run_name
                )
            except TrackingError as exc:
                cause = exc.__cause__
                code = cause.error_code if isinstance(cause, MlflowException) else None
                if run_id and code in MISSING_ERROR_CODES:
                    resumed = _fallback_run(fallback_root, run_id)
                    if resumed is None:
                        raise
                    logger.warning(
                        "run %s is not at %s but in the local fallback store %s (an earlier "
                        "stage logged there while MLflow was unreachable); continuing it there",
                        run_id, uri, resumed.tracking_uri,
                    )  # fmt: skip
                    return resumed
                if code not in _SERVER_SIDE:
                    raise
                # /health answered, creating/resuming the run did not (e.g. its database is down)
                problem = f"it answers /health but fails: {_short_reason(cause or exc)}"
        logger.debug(
            "MLflow at %s unusable after %.1f s: %s", uri, time.monotonic() - started, problem
        )
        if strict:
            raise TrackingError(
                f"MLflow at {uri} is unreachable ({problem}); start the MLflow server, fix "
                "MLFLOW_TRACKING_URI, or set tracking_strict=false to log to a local fallback "
                "store instead"
            )
        return _open_fallback(uri, problem, fallback_root, experiment, run_id, run_name)

    # ------------------------------------------------------------------ logging
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = []
        for key, value in params.items():
            text = value if isinstance(value, str) else json.dumps(value)
            if len(text) > _MAX_PARAM_LEN:
                text = text[: _MAX_PARAM_LEN - 3] + "..."
            items.append(Param(key, text))

        def send() -> None:
            for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
                self.client.log_batch(self.run_id, params=items[i : i + 100])

        self._logging_call(f"{len(items)} params", send)

    def log_metrics(self, metrics: dict[str, float], step: int = 0, wait: bool = True) -> None:
        """Log many metrics in one request; NaN/inf values are skipped (MLflow rejects some).

        `wait=False` hands the request to MLflow's background logging queue so a training step
        never waits for the server; `flush()` confirms them. With `wait=True` a server outage
        is a warning (the metrics are lost, training goes on).
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
            self._logging_call(
                f"{len(items)} metrics at step {step}",
                lambda: self.client.log_batch(self.run_id, metrics=items),
            )
        else:
            self._pending.append(
                self.client.log_batch(self.run_id, metrics=items, synchronous=False)
            )

    def flush(self) -> None:
        """End of a logging phase (the training loop calls it when training ends or fails):
        stop the system-metrics sampler, then wait for the asynchronous metric logging. A
        failure is a warning, not an error: the training it describes has already happened and
        its checkpoints are written."""
        self.stop_system_metrics()
        pending, self._pending = self._pending, []
        failures: list[Exception] = []
        for operation in pending:
            try:
                operation.wait()
            except Exception as exc:  # noqa: BLE001 - any transport/server error
                failures.append(exc)
        if failures:
            logger.warning(
                "MLflow at %s lost %d of %d metric batches: %s",
                self.tracking_uri, len(failures), len(pending), _short_reason(failures[0]),
            )  # fmt: skip

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        self._logging_call(
            f"tags {sorted(tags)}", lambda: self.client.log_batch(self.run_id, tags=items)
        )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file to the run. An outage is a warning: every artifact the pipeline logs
        is a copy of a file it already wrote to OUT_URI, and evaluate re-uploads the checkpoint
        a registered version needs when the run lacks it."""
        where = f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name
        self._logging_call(
            f"artifact {where}",
            lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
        )

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

    def log_policy(
        self, model: torch.nn.Module, name: str = "policy", *, step: int = 0
    ) -> str | None:
        """Log `model` as an MLflow PyTorch model of this run; -> its URI (`models:/m-...`), for
        `mlflow.pytorch.load_model(uri)`, which returns the module (call it on a batch dict).

        What is logged is a CPU copy in eval mode (the caller's module is left as it is), so it
        loads on a machine without a GPU and plans deterministically. It is pickled (cloudpickle,
        classes by reference): MLflow 3's default "pt2" export needs an input example and only
        takes tensor inputs, while AutoE2E takes a dict. A loader needs the autoe2e package
        importable. `step`: the training step whose metrics MLflow links to the model. An outage
        is a warning and returns None (the checkpoint is in OUT_URI regardless).
        """

        def send() -> str:
            import mlflow.pytorch

            snapshot = copy.deepcopy(model).cpu().eval()
            with _global_tracking_uri(self.tracking_uri):
                # Created here, in this run's experiment: without an active run MLflow would
                # otherwise file the model under the default experiment.
                logged = self.client.create_logged_model(
                    self.experiment_id, name=name, source_run_id=self.run_id
                )
                info = mlflow.pytorch.log_model(
                    snapshot,
                    name=name,
                    model_id=logged.model_id,
                    run_id=self.run_id,  # passed on to mlflow.models.Model.log
                    pip_requirements=_policy_requirements(),
                    serialization_format="pickle",
                    step=step,
                )
            return str(info.model_uri)

        started = time.monotonic()
        uri = self._logging_call(f"policy model {name!r}", send)
        if uri is not None:
            logger.info("logged policy %s in %.1f s", uri, time.monotonic() - started)
        return uri

    # ------------------------------------------------------------------ system metrics
    def start_system_metrics(self, sampling_interval_s: float = 10.0) -> None:
        """Sample CPU, memory, disk, network (and NVIDIA GPU where NVML finds one) every
        `sampling_interval_s` seconds into `system/...` metrics of this run, in a background
        thread, until `flush()` / `end()`. MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides the
        interval. A machine without a GPU just has no GPU metrics; a failure to start is a
        warning: system metrics are diagnostics, never a reason to stop training."""
        if self._system_metrics is not None:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                self.run_id,
                sampling_interval=sampling_interval_s,
                samples_before_logging=1,
                resume_logging=self.resumed,  # continue the steps of an earlier attempt
                tracking_uri=self.tracking_uri,
            )
            monitor.start()
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            logger.warning("system metrics for run %s not started: %s", self.run_id, exc)
            return
        self._system_metrics = monitor

    def stop_system_metrics(self) -> None:
        """Stop the sampler and write its last samples (no-op when it is not running)."""
        monitor, self._system_metrics = self._system_metrics, None
        if monitor is not None:
            monitor.finish()

    # ------------------------------------------------------------------ registry
    def register_model(self, name: str, artifact_path: str = "checkpoint") -> str:
        """Register this run's `artifact_path` as a new version of model `name`; -> version.

        Refused when the run has no such artifact (an upload lost to an outage is only a
        warning): a version must not point at nothing."""
        from mlflow.exceptions import MlflowException

        if not self.has_artifact(artifact_path):
            raise TrackingError(
                f"run {self.run_id} at {self.tracking_uri} has no artifact {artifact_path!r} to "
                f"register as {name}"
            )
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
            if exc.error_code in MISSING_ERROR_CODES:
                return None
            raise

    def version_checkpoint(self, name: str, version: str) -> bytes:
        """The checkpoint file a registered version points at."""
        source = self.client.get_model_version(name, version).source
        from autoe2e.registry import checkpoint_from_artifacts

        return checkpoint_from_artifacts(source, self.tracking_uri, f"{name} version {version}")

    def set_alias(self, name: str, alias: str, version: str, tags: dict[str, str]) -> None:
        self.client.set_registered_model_alias(name, alias, version)
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)

    def end(self, status: str = "FINISHED") -> None:
        """Finish the run: stop system metrics, confirm queued metrics, set the status (an
        outage is a warning: the run then stays RUNNING on the server)."""
        self.flush()
        self._logging_call(
            f"run status {status}",
            lambda: self.client.set_terminated(self.run_id, status=status),
        )

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.end("FAILED" if exc_type else "FINISHED")

    # ------------------------------------------------------------------ outages
    def _logging_call(self, what: str, call: Callable[[], _T]) -> _T | None:
        """Run one synchronous logging request; a server outage is a warning (-> None).

        Once a call has found the server down, the next ones probe first (a refused connection
        answers at once) instead of spending MLflow's retries on each; they go through again as
        soon as the server answers. Errors of a server that is up (a rejected value, a missing
        run) and of local stores still raise: those are bugs, not outages.
        """
        if self._down:
            problem = probe_server(self.tracking_uri)
            if problem is not None:
                logger.warning(
                    "MLflow at %s is still unreachable (%s): %s not logged",
                    self.tracking_uri, problem, what,
                )  # fmt: skip
                return None
            self._down = False
            logger.info("MLflow at %s answers again", self.tracking_uri)
        try:
            return call()
        except Exception as exc:
            if not self._is_outage(exc):
                raise
            self._down = True
            logger.warning(
                "MLflow at %s failed (%s): %s not logged; training goes on, its results are in "
                "OUT_URI regardless",
                self.tracking_uri, _short_reason(exc), what,
            )  # fmt: skip
            return None

    def _is_outage(self, exc: Exception) -> bool:
        from mlflow.exceptions import MlflowException

        if not _is_http(self.tracking_uri):
            return False
        if isinstance(exc, MlflowException):
            return exc.error_code in _SERVER_SIDE
        return probe_server(self.tracking_uri) is not None


def _fallback_store(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def _fallback_run(root: Path, run_id: str) -> Tracker | None:
    """Resume `run_id` from the fallback store under `root` if it holds that run, else None."""
    if not (root / "mlflow.db").is_file():
        return None
    try:
        tracker = Tracker(tracking_uri=_fallback_store(root), run_id=run_id)
    except TrackingError:
        return None
    tags = tracker.client.get_run(run_id).data.tags
    tracker.fallback_from = tags.get(FALLBACK_TAG)
    return tracker


def _open_fallback(
    uri: str,
    problem: str,
    root: Path,
    experiment: str,
    run_id: str | None,
    run_name: str | None,
) -> Tracker:
    """The run in the fallback store for an unreachable `uri` (see `Tracker.open`)."""
    root.mkdir(parents=True, exist_ok=True)
    store = _fallback_store(root)
    logger.warning(
        "MLflow at %s is unreachable (%s); logging to the local fallback store %s instead "
        "(artifacts in %s; tracking_strict=true makes this an error)",
        uri, problem, store, root / "artifacts",
    )  # fmt: skip
    tracker = _fallback_run(root, run_id) if run_id else None
    if tracker is None:
        if run_id:
            logger.warning(
                "run %s exists only at the unreachable %s; starting a new run in the fallback "
                "store (tagged %s=%s)",
                run_id, uri, FALLBACK_RUN_TAG, run_id,
            )  # fmt: skip
        tracker = Tracker(tracking_uri=store, experiment=experiment, run_name=run_name)
        tags = {FALLBACK_TAG: uri, **({FALLBACK_RUN_TAG: run_id} if run_id else {})}
        tracker.set_tags(tags)
    tracker.fallback_from = uri
    return tracker
