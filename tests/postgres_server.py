"""A throwaway PostgreSQL server for tests: its own data directory, 127.0.0.1 only.

Uses the Debian `postgresql` package's binaries (/usr/lib/postgresql/<major>/bin, not on PATH).
initdb and postgres refuse to run as root, so under root every server command runs as the
`postgres` system user (`runuser -u postgres --`) on a data directory chowned to it; as any
other user they run directly. The server only listens on 127.0.0.1 (a free port) and on a
Unix socket inside the temporary directory, so it never meets a system PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Where the Debian package installs the server binaries; PG_BIN overrides it.
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class PostgresServer:
    """Connection details of a running server and its one database/user (password auth)."""

    host: str
    port: int
    database: str
    user: str
    password: str

    @property
    def dsn(self) -> str:
        """libpq URI, for psycopg2.connect and psql."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    @property
    def sqlalchemy_uri(self) -> str:
        """The URI the chart's Secret holds for MLflow's --backend-store-uri: the plain
        postgresql:// form the README documents (SQLAlchemy 2.1 maps it to psycopg 3, installed
        in the server image and the dev extras)."""
        return self.dsn


def find_pg_bin() -> Path | None:
    """The directory holding initdb/pg_ctl: $PG_BIN, the newest Debian major, or PATH."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))

    def major(path: Path) -> int:
        return int(path.name) if path.name.isdigit() else -1

    if DEBIAN_PG_ROOT.is_dir():
        versions = sorted(DEBIAN_PG_ROOT.iterdir(), key=major, reverse=True)
        candidates += [v / "bin" for v in versions]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def require_pg_bin() -> Path:
    """The binaries, or skip: only their absence is a reason not to run the database tests."""
    path = find_pg_bin()
    if path is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in $PG_BIN, "
            f"{DEBIAN_PG_ROOT}/*/bin or PATH: install the Debian package `postgresql`"
        )
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    """Root may not run the server: drop to `postgres`; others run it as themselves."""
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root but there is no `postgres` user to run the server as")
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _stop(pg_bin: Path, data: Path) -> None:
    """Fast shutdown through pg_ctl; if that fails, signal the postmaster by its pid file."""
    if not (data / "postmaster.pid").exists():
        return
    try:
        _run([str(pg_bin / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "20"])
        return
    except (RuntimeError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown of the postmaster and its children
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres_server(database: str = "test", user: str = "tester") -> Iterator[PostgresServer]:
    """Start a fresh server with `database` owned by `user` (random password over TCP, so the
    URI is like a real one); stop it and delete its files on exit, whatever happened."""
    import psycopg2

    pg_bin = require_pg_bin()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", database) or not re.fullmatch(
        r"[a-z_][a-z0-9_]*", user
    ):
        raise ValueError("database and user must be plain lower-case identifiers")
    # Not under pytest's tmp_path: its parents are private to the test user, and the server
    # user must be able to reach its own data directory.
    root = Path(tempfile.mkdtemp(prefix="autoe2e-pg-"))
    data, sockets = root / "data", root / "sockets"
    data.mkdir(mode=0o700)
    sockets.mkdir()
    root.chmod(0o755)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for path in (root, data, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    password = secrets.token_hex(12)
    try:
        try:
            _init_and_start(pg_bin, root, port)
            admin = psycopg2.connect(
                host=str(sockets), port=port, user="postgres", dbname="postgres"
            )
            try:
                admin.autocommit = True
                with admin.cursor() as cur:
                    cur.execute(f"CREATE ROLE {user} LOGIN PASSWORD %s", (password,))
                    cur.execute(f"CREATE DATABASE {database} OWNER {user}")
            finally:
                admin.close()
        except (RuntimeError, psycopg2.Error) as err:
            log = root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL setup failed: {err}\nserver log:\n{tail}") from None
        yield PostgresServer("127.0.0.1", port, database, user, password)
    finally:
        _stop(pg_bin, data)
        shutil.rmtree(root, ignore_errors=True)


def _init_and_start(pg_bin: Path, root: Path, port: int) -> None:
    """initdb + pg_ctl start: socket auth trusted (only this temp dir reaches it, for the
    setup), TCP with a password (scram-sha-256), the way the MLflow server connects. Durability
    is off: the data dies with the test."""
    data, sockets = root / "data", root / "sockets"
    _run(
        [
            str(pg_bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        ]
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    _run(
        [
            str(pg_bin / "pg_ctl"),
            "start",
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
        ]
    )
