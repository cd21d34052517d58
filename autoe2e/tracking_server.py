"""Where the MLflow tracking server is and whether it answers, for `autoe2e.tracking`.

Kept apart from the `Tracker` so the connection rules read on their own: the tracking URI
(`MLFLOW_TRACKING_URI` or an embedded store), a short `/health` probe (MLflow's own client
retries a refused connection for minutes), bounded HTTP retries for the process, and the global
tracking URI that MLflow's model logging insists on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

#: The reachability probe: seconds per try, tries, pause between tries. A refused connection
#: answers at once; a black-holed host costs at most tries * timeout + pauses (~4.5 s).
_PROBE_TIMEOUT_S = 2.0
_PROBE_TRIES = 2
_PROBE_PAUSE_S = 0.5

#: MLflow's defaults (7 retries, backoff factor 2) keep one request to a dead server retrying for
#: ~4 minutes, which blocks the end of training (or a queued metrics flush) that long. These keep
#: a few retries for a server restart or rate limiting (backoff 0, 2, 4 s plus jitter: ~6-9 s
#: for a refused connection). Set the variables in the environment to override them.
_HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


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


def _is_http(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def _short_reason(exc: BaseException) -> str:
    """`[Errno 111] Connection refused` (or `too many 500 error responses`) rather than
    requests' three nested exception reprs."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\][^'\")]*|too many \d+ error responses", text)
    return match.group(0).strip() if match else f"{type(exc).__name__}: {text[:200]}"


def probe_server(
    uri: str, timeout_s: float = _PROBE_TIMEOUT_S, tries: int = _PROBE_TRIES
) -> str | None:
    """None when the MLflow server at `uri` answers HTTP, else why not (for messages).

    Any answer below 500 counts, 401/404 included (a proxy without /health, a server that wants
    credentials): the question is whether it is up, not whether the setup is right; a 5xx is a
    gateway whose backend is down. A TLS error also counts as up: the server answered, and
    certificates are the MLflow client's business (MLFLOW_TRACKING_SERVER_CERT_PATH etc.).
    Uses `requests` like MLflow does, so the same proxy variables apply.
    """
    import requests

    url = f"{uri.rstrip('/')}/health"
    reason = "no attempt"
    for attempt in range(max(1, tries)):
        if attempt:
            time.sleep(_PROBE_PAUSE_S)
        try:
            response = requests.get(url, timeout=timeout_s)
        except requests.exceptions.SSLError:
            return None
        except requests.exceptions.Timeout:
            reason = f"no answer from {url} within {timeout_s:g} s"
        except requests.exceptions.RequestException as exc:
            reason = _short_reason(exc)
        else:
            if response.status_code < 500:
                return None
            reason = f"HTTP {response.status_code} from {url}"
    return reason


def _bound_http_retries() -> None:
    for key, value in _HTTP_RETRY_DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            logger.debug("%s=%s (MLflow's default retries a dead server for minutes)", key, value)


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's model logging resolves its client from the global tracking URI; set it for the
    duration and restore both the global and the MLFLOW_TRACKING_URI variable it rewrites
    (`mlflow.set_tracking_uri(None)` would delete a user's variable)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = getattr(tracking_utils, "_tracking_uri", None)
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before
