"""S3 through a faulty network: resets and delays between autoe2e.storage and a moto server.

`fault_proxy.FaultProxy` sits on 127.0.0.1 between the client and moto and resets connections
(before, during the upload, during the response body) or delays answers. Reads must still return
exactly the stored bytes, checkpoints must be complete or absent, an epoch must see every sample
once, and an unreachable endpoint must fail quickly with a message that names it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from episode_factory import TINY_PREPARE, moto_client, moto_s3, upload_tree, write_episode
from fault_proxy import RESET_MID_REQUEST, RESET_MID_RESPONSE, FaultProxy

from autoe2e import storage
from autoe2e.data.prepare import prepare_dataset
from autoe2e.training.checkpointing import CheckpointManager

logger = logging.getLogger(__name__)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(s3://bucket, moto endpoint); the endpoint override is cleared again afterwards."""
    with moto_s3(monkeypatch, bucket="faults") as bucket:
        try:
            yield bucket, os.environ["AWS_ENDPOINT_URL"]
        finally:
            storage.set_endpoint_url(None)


@contextlib.contextmanager
def faulty_network(endpoint: str, **kwargs: Any) -> Iterator[FaultProxy]:
    """Route autoe2e.storage through a `FaultProxy` in front of ``endpoint``; check that the
    proxy leaves no thread behind."""
    target = urlparse(endpoint)
    assert target.hostname and target.port
    with FaultProxy(target.hostname, target.port, **kwargs) as proxy:
        storage.set_endpoint_url(proxy.url)
        try:
            yield proxy
        finally:
            storage.set_endpoint_url(None)
    logger.info(
        "proxy: %d connections, %d exchanges, %d resets %s, %d delayed",
        proxy.connections,
        proxy.exchanges,
        proxy.resets,
        dict(proxy.reset_kinds),
        proxy.delayed,
    )
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("fault-proxy")]
    assert not leaked, leaked


def _body_retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum("broke off" in r.getMessage() for r in caplog.records if r.name == storage.__name__)


def test_reads_and_writes_survive_resets_and_delays(
    moto: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    bucket, endpoint = moto
    caplog.set_level(logging.WARNING, logger=storage.__name__)
    rng = np.random.default_rng(0)
    objects = {
        f"{bucket}/blobs/{i:02d}.bin": rng.bytes(int(rng.integers(1 << 20, 3 << 20)))
        for i in range(30)
    }
    with faulty_network(endpoint, reset_fraction=0.2, delay_fraction=0.2, seed=1) as proxy:
        for uri, data in objects.items():
            assert storage.write_bytes(uri, data) is True
        before = storage.bytes_read()
        expected_bytes = 0
        for uri, data in objects.items():
            assert storage.read_bytes(uri) == data, uri
            expected_bytes += len(data)
            size = len(data)
            for offset, length in ((0, 1000), (size // 3, size // 2), (size - 4096, 4096)):
                assert storage.read_range(uri, offset, length) == data[offset : offset + length]
                expected_bytes += length
    # Only successful reads count, once each, whatever was retried underneath.
    assert storage.bytes_read() - before == expected_bytes
    # Not vacuous: uploads and downloads really were cut, and the body retry really ran.
    assert proxy.reset_kinds[RESET_MID_RESPONSE] > 0 and proxy.reset_kinds[RESET_MID_REQUEST] > 0
    assert proxy.delayed > 0
    assert _body_retries(caplog) > 0
    # What the store holds (seen directly, not through the proxy) is exactly what was written.
    s3 = moto_client(endpoint)
    name = bucket.removeprefix("s3://")
    for uri, data in objects.items():
        key = uri.removeprefix(f"{bucket}/")
        assert s3.get_object(Bucket=name, Key=key)["Body"].read() == data, key


def test_checkpoints_are_complete_or_absent(
    moto: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, endpoint = moto
    identity = {"model": {"name": "fault-test"}, "train": {"lr": 0.1}}
    sent: dict[str, bytes] = {}
    write_bytes = storage.write_bytes

    def recording_write(uri: str, data: bytes, *, create_only: bool = False) -> bool:
        sent[uri] = data
        return write_bytes(uri, data, create_only=create_only)

    monkeypatch.setattr(storage, "write_bytes", recording_write)
    steps = list(range(0, 150, 10))
    saved: dict[int, torch.Tensor] = {}
    failed: list[int] = []
    # Heavy faults: a save may fail (StorageError), but it must never leave a partial object.
    with faulty_network(
        endpoint,
        reset_fraction=0.4,
        delay_fraction=0.2,
        seed=2,
        max_reset_bytes=1 << 20,
        reset_weights=(1, 2, 1),
    ) as proxy:
        # keep everything, so every save is checked below (deleting old ones is not the point)
        manager = CheckpointManager(f"{bucket}/run", keep=len(steps))
        for step in steps:
            blob = torch.randn(384 + step, 1024, generator=torch.Generator().manual_seed(step))
            saved[step] = blob
            try:
                manager.save(step, {"identity": identity, "blob": blob})
            except storage.StorageError as exc:  # allowed; anything else fails the test
                logger.info("save of step %d failed: %s", step, exc)
                failed.append(step)
        resumed = manager.latest(identity)
    assert proxy.reset_kinds[RESET_MID_REQUEST] > 0 and proxy.delayed > 0

    s3 = moto_client(endpoint)
    name = bucket.removeprefix("s3://")
    listing = s3.list_objects_v2(Bucket=name, Prefix="run/checkpoints/")
    keys = sorted(obj["Key"] for obj in listing.get("Contents", []))
    # Every save that returned is there; one that raised may be there too (its PUT landed but
    # every answer was lost), but then whole like the rest.
    wanted = {f"run/checkpoints/step-{s:09d}.pt": s for s in steps}
    assert set(keys) <= set(wanted)
    assert {wanted[k] for k in keys} >= set(steps) - set(failed)
    for key in keys:
        data = s3.get_object(Bucket=name, Key=key)["Body"].read()
        assert data == sent[f"{bucket}/{key}"], f"{key} differs from what was saved"
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        assert state["step"] == wanted[key] and state["identity"] == identity
        assert torch.equal(state["blob"], saved[state["step"]])
    assert resumed is not None and resumed[1]["step"] == max(wanted[k] for k in keys)


def test_a_body_that_always_breaks_fails_after_the_documented_attempts(
    moto: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, endpoint = moto
    data = np.random.default_rng(5).bytes(2 << 20)
    moto_client(endpoint).put_object(Bucket=bucket.removeprefix("s3://"), Key="big", Body=data)
    monkeypatch.setattr(storage, "BODY_RETRY_BASE_S", 0.01)
    before = storage.bytes_read()
    # Every response is cut after 1 B..1 MiB: (nearly) always inside the 2 MiB body.
    with (
        faulty_network(
            endpoint, reset_fraction=1.0, delay_fraction=0.0, reset_weights=(0, 0, 1)
        ) as proxy,
        pytest.raises(storage.StorageError) as info,
    ):
        storage.read_bytes(f"{bucket}/big")
    message = str(info.value)
    assert f"cannot read {bucket}/big" in message and proxy.url in message
    assert f"broke while reading the object {storage.BODY_READ_ATTEMPTS} times" in message
    assert proxy.reset_kinds[RESET_MID_RESPONSE] == storage.BODY_READ_ATTEMPTS
    assert storage.bytes_read() == before  # failed reads are not counted


@pytest.fixture
def prepared_s3(moto: tuple[str, str], tmp_path: Path) -> str:
    """A small data set prepared into moto (directly, no proxy) in several shards."""
    bucket, _ = moto
    raw = tmp_path / "episodes"
    for i in range(5):
        write_episode(raw, f"ep{i}", cameras=("front",), duration_s=5.0, heading=0.1 * i)
    upload_tree(raw, f"{bucket}/raw")
    config = dataclasses.replace(
        TINY_PREPARE, shard_target_bytes=1 << 16, row_group_target_bytes=1 << 16
    )
    result = prepare_dataset(f"{bucket}/raw", f"{bucket}/prepared", config)
    assert result.published and not result.quarantined
    return result.manifest_uri


def test_epoch_through_faults_yields_every_sample_once(
    moto: tuple[str, str], prepared_s3: str, caplog: pytest.LogCaptureFixture
) -> None:
    from autoe2e.data import manifest as mf
    from autoe2e.data.streaming import StreamingShardDataset

    bucket, endpoint = moto
    caplog.set_level(logging.WARNING, logger=storage.__name__)
    manifest = mf.read_manifest(prepared_s3)
    assert len(manifest["shards"]) >= 4
    # The expected samples, straight from the shards in moto (no proxy, no loader).
    s3 = moto_client(endpoint)
    name = bucket.removeprefix("s3://")
    expected: collections.Counter[tuple[str, float]] = collections.Counter()
    for shard in manifest["shards"]:
        key = f"prepared/{shard['path']}"
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket=name, Key=key)["Body"].read()))
        expected.update(
            zip(
                table.column("episode_id").to_pylist(),
                table.column("timestamp_s").to_pylist(),
                strict=True,
            )
        )
    assert sum(expected.values()) == manifest["num_samples"] and set(expected.values()) == {1}

    # Small reset budgets: these shards are tens of KB, so cuts land inside their bodies.
    with faulty_network(
        endpoint, reset_fraction=0.25, delay_fraction=0.2, seed=3, max_reset_bytes=32 << 10
    ) as proxy:
        dataset = StreamingShardDataset(
            prepared_s3,
            batch_size=8,
            seed=0,
            shuffle=True,
            shuffle_buffer=64,
            uneven="none",
            load_world_model_frames=False,
        )
        dataset.set_epoch(0)
        seen: collections.Counter[tuple[str, float]] = collections.Counter()
        for batch in dataset:
            seen.update(zip(batch["episode_id"], batch["timestamp_s"].tolist(), strict=True))
    assert proxy.reset_kinds[RESET_MID_RESPONSE] > 0 and proxy.delayed > 0
    assert _body_retries(caplog) > 0  # shard bodies really broke off and were read again
    assert seen == expected


def test_unreachable_endpoint_fails_fast_naming_it(
    moto: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, _ = moto
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    storage.set_endpoint_url(dead)
    started = time.monotonic()
    with pytest.raises(storage.StorageError) as info:
        storage.read_bytes(f"{bucket}/some/key")
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert f"cannot read {bucket}/some/key" in message
    assert f"S3 endpoint {dead} is unreachable" in message
    assert "check AWS_ENDPOINT_URL / network" in message
    # The real policy: 5 refused attempts, backoff at most 1 + 2 + 4 + 8 s.
    assert elapsed < 30, f"took {elapsed:.1f} s"
    # Writes name the endpoint too (one attempt: the retry timing was checked above).
    monkeypatch.setattr(storage, "S3_MAX_ATTEMPTS", 1)
    storage.set_endpoint_url(dead)  # drops the cached client, so the new limit applies
    with pytest.raises(storage.StorageError, match=f"not writable.*{dead} is unreachable"):
        storage.check_writable(f"{bucket}/out")
    # Without an override the message says so (no request: AWS itself is not reachable here).
    from botocore.exceptions import EndpointConnectionError

    storage.set_endpoint_url(None)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    error = storage._s3_error(EndpointConnectionError(endpoint_url="https://x"), "s3://b/k", "read")
    assert "S3 endpoint the default AWS endpoint is unreachable" in str(error)
