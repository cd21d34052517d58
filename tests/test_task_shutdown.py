"""A task process that used flytekit's S3 data layer exits without the asyncio "Unclosed client
session" error (tasks/shutdown.py), with a real S3 endpoint (moto on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from episode_factory import moto_s3

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys
import tasks  # installs the exit hook, as every task pod imports tasks.stages
from flytekit import FlyteContextManager
ctx = FlyteContextManager.current_context()
ctx.file_access.put_data(sys.argv[1], sys.argv[2])
print("uploaded")
"""


def test_task_process_closes_flytekits_s3_sessions_at_exit(tmp_path, monkeypatch) -> None:
    with moto_s3(monkeypatch, bucket="shutdown") as bucket:
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        payload = tmp_path / "outputs.pb"
        payload.write_bytes(b"literal")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FLYTE_AWS_ENDPOINT": endpoint,
            "FLYTE_AWS_ACCESS_KEY_ID": "testing",
            "FLYTE_AWS_SECRET_ACCESS_KEY": "testing",
            "FLYTE_SDK_RICH_TRACEBACKS": "0",
        }
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(payload), f"{bucket}/out/outputs.pb"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "uploaded" in proc.stdout
        assert "Unclosed client session" not in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]

        import boto3

        body = boto3.client("s3").get_object(Bucket="shutdown", Key="out/outputs.pb")["Body"]
        assert body.read() == b"literal"
