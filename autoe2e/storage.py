"""One small storage layer for local paths and ``s3://`` URIs.

Every stage reads raw episodes and writes shards/manifests through these functions, so the same
code runs on a laptop (local folders) and in a cluster (S3 or an S3-compatible store). The S3
endpoint comes from the usual AWS environment/config; ``AWS_ENDPOINT_URL`` (or
`set_endpoint_url`) points it at MinIO, moto or another compatible store.

boto3 clients are not fork-safe, so clients are created lazily and cached per process id: a
DataLoader worker that inherits this module gets its own client on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

S3_SCHEME = "s3://"
_endpoint_override: str | None = None
_clients: dict[tuple[int, str | None], Any] = {}
_clients_lock = threading.Lock()


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
                retries={"max_attempts": 5, "mode": "standard"},
            )
            client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
            _clients[key] = client
        return client


def _s3_error(exc: Exception, uri: str, action: str) -> StorageError:
    """Translate botocore errors into one message naming the URI and the fix."""
    from botocore.exceptions import ClientError, NoCredentialsError

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


def read_bytes(uri: str) -> bytes:
    """Whole object/file as bytes."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            return _count(_client().get_object(Bucket=bucket, Key=key)["Body"].read())
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
        bucket, key = split_s3(uri)
        byte_range = f"bytes={offset}-{offset + length - 1}"
        try:
            body = _client().get_object(Bucket=bucket, Key=key, Range=byte_range)["Body"]
            data = body.read()
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
