"""Local and S3 (moto server on 127.0.0.1) behave the same through autoe2e.storage."""

from __future__ import annotations

from pathlib import Path

import pytest
from episode_factory import moto_s3

from autoe2e import storage


@pytest.fixture
def s3_root(monkeypatch: pytest.MonkeyPatch):
    with moto_s3(monkeypatch) as root:
        yield root


def _roundtrip(root: str) -> None:
    uri = storage.join_uri(root, "a", "b.bin")
    assert not storage.exists(uri)
    assert storage.write_bytes(uri, b"one")
    assert storage.exists(uri) and storage.read_bytes(uri) == b"one"
    assert storage.write_bytes(uri, b"two", create_only=True) is False
    assert storage.read_bytes(uri) == b"one"
    assert storage.write_bytes(uri, b"three")
    assert storage.read_bytes(uri) == b"three"
    storage.write_bytes(storage.join_uri(root, "a", "sub", "c.txt"), b"c")
    storage.write_bytes(storage.join_uri(root, "top.txt"), b"t")
    assert storage.list_children(storage.join_uri(root, "a")) == ["b.bin", "sub"]
    assert storage.list_children(storage.join_uri(root, "a"), only_dirs=True) == ["sub"]
    assert storage.exists(storage.join_uri(root, "a"))  # folder / prefix
    with storage.local_copy(storage.join_uri(root, "a")) as local:
        assert (local / "b.bin").read_bytes() == b"three"
        assert (local / "sub" / "c.txt").read_bytes() == b"c"
    with storage.local_copy(uri) as local:
        assert local.read_bytes() == b"three"
    prints = storage.file_fingerprints(storage.join_uri(root, "a"))
    assert sorted(prints) == ["b.bin", "sub/c.txt"]
    storage.write_bytes(uri, b"four")
    assert storage.file_fingerprints(storage.join_uri(root, "a"))["b.bin"] != prints["b.bin"]
    storage.check_writable(storage.join_uri(root, "out"))
    storage.delete(uri)
    assert not storage.exists(uri)


def test_local_roundtrip(tmp_path: Path) -> None:
    _roundtrip(str(tmp_path))


def test_s3_roundtrip(s3_root: str) -> None:
    _roundtrip(s3_root)
    assert storage.join_uri(s3_root, "x/", "/y") == f"{s3_root}/x/y"
    assert storage.parent_uri(f"{s3_root}/x/manifest.json") == f"{s3_root}/x"


def test_local_errors_name_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.bin")
    with pytest.raises(storage.StorageError, match="nope.bin"):
        storage.read_bytes(missing)
    with pytest.raises(storage.StorageError, match="not an existing folder"):
        storage.list_children(missing)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(storage.StorageError, match="not writable"):
        storage.check_writable(str(blocker / "out"))


def test_s3_errors_name_the_uri(s3_root: str) -> None:
    with pytest.raises(storage.StorageError, match="no-such-bucket.*does not exist"):
        storage.read_bytes("s3://no-such-bucket/key")
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.read_bytes(f"{s3_root}/missing")
    with pytest.raises(storage.StorageError, match="not writable"):
        storage.check_writable("s3://no-such-bucket/out")
    with pytest.raises(storage.StorageError, match="no bucket"):
        storage.read_bytes("s3:///key")
