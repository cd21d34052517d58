"""A real `mlflow server` on 127.0.0.1 for tests, stopped with its worker processes.

Two artifact modes, as deployments use them: artifacts in a folder the client writes itself
(`--default-artifact-root`), or served through the server (`--artifacts-destination`, what the
MLflow chart does), which a client in a container needs since it cannot reach the host's files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(workdir: Path, *, serve_artifacts: bool = False) -> Iterator[str]:
    """Yields the server's URL once /health answers; the store lives under `workdir`."""
    port = free_port()
    artifacts = (
        ["--artifacts-destination", (workdir / "srv-artifacts").as_uri()]
        if serve_artifacts
        else ["--default-artifact-root", str(workdir / "srv-artifacts")]
    )
    log_path = workdir / "mlflow-server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--backend-store-uri",
                f"sqlite:///{workdir / 'srv.db'}",
                *artifacts,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown stops the workers too
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{url}/health", timeout=2),
                ):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text()[-2000:])
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
