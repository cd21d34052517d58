"""One small storage layer for local paths and ``s3://`` URIs.

Every stage reads raw episodes and writes shards/manifests through these functions, so the same
code runs on a laptop (local folders) and in a cluster (S3 or an S3-compatible store). The S3
endpoint comes from the usual AWS environment/config; ``AWS_ENDPOINT_URL`` (or
`set_endpoint_url`) points it at MinIO, moto or another compatible store.

boto3 clients are not fork-safe, so clients are created lazily and cached per process id: a
DataLoader worker that inherits this module gets its own client on first use.

Network faults: botocore's own retries ("standard" mode, `S3_MAX_ATTEMPTS` attempts) repeat a
request whose connection fails or is reset before the response headers arrive. They do not cover
an object body that breaks while it streams (a reset or stall in the middle of `Body.read()`), so
`read_bytes` and `read_range` repeat the whole GET for that (`BODY_READ_ATTEMPTS`). A PUT sends
its length, and S3 stores an object only when the whole body arrived, so a write is complete or
absent: `write_bytes` returns or raises `StorageError`. Connect and read timeouts are short
enough that an unreachable endpoint fails in about half a minute, naming the endpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

S3_SCHEME = "s3://"
_endpoint_override: str | None = None
_clients: dict[tuple[int, str | None], Any] = {}
_clients_lock = threading.Lock()

#: botocore attempts per request (first try included) for connection errors, throttling and 5xx.
S3_MAX_ATTEMPTS = 5
#: Seconds to open a TCP connection. S3 and in-cluster stores connect in milliseconds. With
#: botocore's backoff (random, at most 1+2+4+8 s between the 5 attempts) an unreachable endpoint
#: fails within ~15 s (refused) or ~30 s (no answer: 5 x 3 s + backoff) instead of minutes.
S3_CONNECT_TIMEOUT_S = 3.0
#: Seconds without a byte from an open connection before botocore gives up on it (and retries).
#: S3 answers well within this even for large PUTs; botocore's default is 60.
S3_READ_TIMEOUT_S = 30.0
#: Whole-GET attempts when the object body breaks while streaming (see the module docstring).
BODY_READ_ATTEMPTS = 5
#: Backoff before GET retry n (n = 1, 2, ...): base * 2**(n-1) seconds, times a jitter in [0.5, 1].
BODY_RETRY_BASE_S = 0.2


class StorageError(OSError):
    """A storage operation failed; the message names the URI and the likely fix."""


def set_endpoint_url(url: str | None) -> None:
    """Use an explicit S3 endpoint (overrides AWS_ENDPOINT_URL); None restores the default."""
    global _endpoint_override
    _endpoint_override = url
    with _clients_lock:
        _clients.clear()


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def join_uri(base: str, *parts: str) -> str:
    """Join path parts with '/' for S3 and the OS separator for local paths."""
    if is_s3(base):
        out = base.rstrip("/")
        for part in parts:
            part = part.strip("/")
            if part:
                out = f"{out}/{part}"
        return out
    return str(Path(base, *parts))


def parent_uri(uri: str) -> str:
    """The folder holding ``uri`` (used to resolve manifest-relative shard paths)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        head = key.rstrip("/").rsplit("/", 1)[0] if "/" in key.rstrip("/") else ""
        return f"{S3_SCHEME}{bucket}/{head}".rstrip("/")
    return str(Path(uri).parent)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); rejects URIs without a bucket."""
    rest = uri[len(S3_SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} has no bucket name; use s3://<bucket>/<key>")
    return bucket, key


def _client() -> Any:
    """The S3 client of this process (created on first use; fork/worker safe)."""
    import boto3
    from botocore.config import Config

    endpoint = _endpoint_override or os.environ.get("AWS_ENDPOINT_URL") or None
    key = (os.getpid(), endpoint)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # Some S3-compatible stores reject the CRC checksums boto3 >= 1.36 sends by default.
            config = Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                # total_max_attempts counts the first try; botocore's "max_attempts" key means
                # retries (5 there would be 6 attempts).
                retries={"total_max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
                connect_timeout=S3_CONNECT_TIMEOUT_S,
                read_timeout=S3_READ_TIMEOUT_S,
            )
            client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
            _clients[key] = client
        return client


def _endpoint_description() -> str:
    """The S3 endpoint requests go to, for error messages."""
    return _endpoint_override or os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"


def _s3_error(exc: Exception, uri: str, action: str) -> StorageError:
    """Translate botocore errors into one message naming the URI and the fix."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionRefusedError)):
        return StorageError(
            f"cannot {action} {uri}: S3 endpoint {_endpoint_description()} is unreachable "
            f"({exc}); check AWS_ENDPOINT_URL / network"
        )
    if isinstance(exc, NoCredentialsError):
        return StorageError(
            f"cannot {action} {uri}: no AWS credentials found; set AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a pod identity"
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        bucket = split_s3(uri)[0]
        if code == "NoSuchBucket":
            return StorageError(f"cannot {action} {uri}: bucket {bucket!r} does not exist")
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageError(f"cannot {action} {uri}: no such object")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"cannot {action} {uri}: access denied ({code}); check the credentials and the "
                f"bucket policy for {bucket!r}"
            )
        return StorageError(f"cannot {action} {uri}: {code or exc}")
    return StorageError(f"cannot {action} {uri}: {exc}")


#: Bytes this process has read through `read_bytes`/`read_range` (benchmarks/train.py
#: compares it with the data set's size).
_bytes_read = 0


def bytes_read() -> int:
    """Bytes read by this process so far (all URIs)."""
    return _bytes_read


def _count(data: bytes) -> bytes:
    global _bytes_read
    _bytes_read += len(data)
    return data


def _body_errors() -> tuple[type[BaseException], ...]:
    """Errors of an object body that broke while streaming (botocore does not retry these)."""
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import ReadTimeoutError as URLLib3ReadTimeoutError

    return (
        ResponseStreamingError,
        IncompleteReadError,
        ReadTimeoutError,
        ProtocolError,
        URLLib3ReadTimeoutError,
        ConnectionError,  # ConnectionResetError and friends, should one escape unwrapped
    )


def _get_object(uri: str, **kwargs: Any) -> bytes:
    """GET an object body, repeating the whole GET when the body breaks mid-stream.

    botocore retries only until the response headers arrive; a reset or stall while the body
    streams surfaces from ``Body.read()`` and would fail a training epoch or a resume. The retry
    is a plain loop because the project declares no retry library (tenacity is not installed)
    and the policy is small: `BODY_READ_ATTEMPTS` GETs, exponential backoff with jitter (at most
    0.2 + 0.4 + 0.8 + 1.6 s in all). Errors of the GET request itself (missing key, access
    denied, unreachable endpoint) are raised at once: botocore has already retried those that
    can be retried.
    """
    bucket, key = split_s3(uri)
    retryable = _body_errors()
    for attempt in range(1, BODY_READ_ATTEMPTS + 1):
        body = _client().get_object(Bucket=bucket, Key=key, **kwargs)["Body"]
        try:
            return body.read()
        except retryable as exc:
            if attempt == BODY_READ_ATTEMPTS:
                raise StorageError(
                    f"cannot read {uri}: the connection to S3 endpoint {_endpoint_description()} "
                    f"broke while reading the object {attempt} times in a row (last: {exc}); "
                    "check the network and the endpoint's health"
                ) from exc
            wait = BODY_RETRY_BASE_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
            logger.warning(
                "reading %s broke off (%s: %s); GET again in %.2f s (attempt %d of %d)",
                uri,
                type(exc).__name__,
                exc,
                wait,
                attempt + 1,
                BODY_READ_ATTEMPTS,
            )
        finally:
            body.close()
        time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def read_bytes(uri: str) -> bytes:
    """Whole object/file as bytes."""
    if is_s3(uri):
        try:
            return _count(_get_object(uri))
        except StorageError:
            raise
        except Exception as exc:  # botocore raises many types; translate them all
            raise _s3_error(exc, uri, "read") from exc
    try:
        return _count(Path(uri).read_bytes())
    except FileNotFoundError as exc:
        raise StorageError(f"cannot read {uri}: file does not exist") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {uri}: {exc}") from exc


def read_range(uri: str, offset: int, length: int) -> bytes:
    """``length`` bytes from ``offset`` (an S3 ranged GET; a seek locally)."""
    if length <= 0:
        return b""
    if is_s3(uri):
        byte_range = f"bytes={offset}-{offset + length - 1}"
        try:
            data = _get_object(uri, Range=byte_range)
        except StorageError:
            raise
        except Exception as exc:
            raise _s3_error(exc, uri, "read") from exc
    else:
        try:
            with open(uri, "rb") as handle:
                handle.seek(offset)
                data = handle.read(length)
        except FileNotFoundError as exc:
            raise StorageError(f"cannot read {uri}: file does not exist") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc}") from exc
    if len(data) != length:
        raise StorageError(
            f"cannot read {uri}: asked for {length} bytes at {offset}, got {len(data)} "
            "(the file is shorter than the manifest says; re-run `autoe2e prepare`)"
        )
    return _count(data)


def write_bytes(uri: str, data: bytes, *, create_only: bool = False) -> bool:
    """Write ``data``; with ``create_only`` return False instead of overwriting an existing key.

    On S3 create-only uses ``IfNoneMatch='*'`` so two writers racing for the same key cannot both
    win; locally it uses an exclusive create.
    """
    if is_s3(uri):
        bucket, key = split_s3(uri)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": data}
        if create_only:
            kwargs["IfNoneMatch"] = "*"
        try:
            _client().put_object(**kwargs)
        except Exception as exc:
            from botocore.exceptions import ClientError

            if isinstance(exc, ClientError) and str(
                exc.response.get("Error", {}).get("Code", "")
            ) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise _s3_error(exc, uri, "write") from exc
        return True
    path = Path(uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if create_only:
            try:
                with open(path, "xb") as handle:
                    handle.write(data)
            except FileExistsError:
                return False
            return True
        # Write to a temp file then rename, so a crash never leaves a half-written file.
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {uri}: {exc}") from exc
    return True


def delete(uri: str) -> None:
    """Remove one file/object (missing is fine)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            _client().delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise _s3_error(exc, uri, "delete") from exc
        return
    with contextlib.suppress(FileNotFoundError):
        Path(uri).unlink()


def exists(uri: str) -> bool:
    """True for an existing file/object or a non-empty S3 prefix / existing local folder."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        client = _client()
        try:
            if key:
                try:
                    client.head_object(Bucket=bucket, Key=key)
                    return True
                except Exception as exc:
                    from botocore.exceptions import ClientError

                    code = (
                        str(exc.response.get("Error", {}).get("Code", ""))
                        if isinstance(exc, ClientError)
                        else ""
                    )
                    if code not in ("404", "NoSuchKey", "NotFound"):
                        raise
            prefix = key.rstrip("/") + "/" if key else ""
            resp = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
            return resp.get("KeyCount", 0) > 0
        except Exception as exc:
            raise _s3_error(exc, uri, "check") from exc
    return Path(uri).exists()


def _s3_list(uri: str, delimiter: bool) -> list[dict[str, Any]]:
    bucket, key = split_s3(uri)
    prefix = key.rstrip("/") + "/" if key else ""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = "/"
    out: list[dict[str, Any]] = []
    try:
        for page in _client().get_paginator("list_objects_v2").paginate(**kwargs):
            out.extend({"Key": p["Prefix"], "dir": True} for p in page.get("CommonPrefixes", []))
            out.extend({**obj, "dir": False} for obj in page.get("Contents", []))
    except Exception as exc:
        raise _s3_error(exc, uri, "list") from exc
    for item in out:
        item["Name"] = item["Key"][len(prefix) :].rstrip("/")
    return out


def list_children(uri: str, *, only_dirs: bool = False) -> list[str]:
    """Sorted names of the immediate children of a folder/prefix (only sub-folders if asked)."""
    if is_s3(uri):
        items = _s3_list(uri, delimiter=True)
        if not items:
            raise StorageError(f"cannot list {uri}: no such prefix or it is empty")
        return sorted({i["Name"] for i in items if i["Name"] and (i["dir"] or not only_dirs)})
    path = Path(uri)
    if not path.is_dir():
        raise StorageError(f"cannot list {uri}: not an existing folder")
    try:
        return sorted(c.name for c in path.iterdir() if c.is_dir() or not only_dirs)
    except OSError as exc:
        raise StorageError(f"cannot list {uri}: {exc}") from exc


def file_fingerprints(uri: str) -> dict[str, str]:
    """Relative path -> content fingerprint of every file under a folder/prefix.

    Used to decide whether inputs changed since the last publication: sha256 for local files,
    size + ETag (content MD5 for single-part uploads) for S3 objects, which avoids downloads.
    """
    if is_s3(uri):
        return {
            item["Name"]: f"{item['Size']}:{str(item.get('ETag', '')).strip(chr(34))}"
            for item in _s3_list(uri, delimiter=False)
            if item["Name"]
        }
    root = Path(uri)
    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
        out[path.relative_to(root).as_posix()] = f"{path.stat().st_size}:{digest.hexdigest()}"
    return out


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path for ``uri``: the path itself when local, else a temporary download.

    An S3 key is downloaded as one file; an S3 prefix (folder) is downloaded with everything
    below it, so an episode folder can be handed to PyAV/pyarrow as ordinary files.
    """
    if not is_s3(uri):
        path = Path(uri)
        if not path.exists():
            raise StorageError(f"cannot open {uri}: it does not exist")
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="autoe2e-"))
    try:
        bucket, key = split_s3(uri)
        client = _client()
        name = key.rstrip("/").rsplit("/", 1)[-1] or bucket
        items = [item for item in _s3_list(uri, delimiter=False) if item["Name"]]
        if items:
            target = tmp / name
            for item in items:
                dest = target / item["Name"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    client.download_file(bucket, item["Key"], str(dest))
                except Exception as exc:
                    raise _s3_error(exc, f"{S3_SCHEME}{bucket}/{item['Key']}", "download") from exc
        else:
            target = tmp / name
            target.write_bytes(read_bytes(uri))
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(uri: str) -> None:
    """Fail fast, naming ``uri``, when outputs cannot be written there (probe write + delete)."""
    probe = join_uri(uri, f".write-probe-{os.getpid()}")
    try:
        write_bytes(probe, b"probe")
    except StorageError as exc:
        raise StorageError(f"output location {uri} is not writable: {exc}") from exc
    delete(probe)
