"""A throwaway PostgreSQL cluster (Debian's binaries) on a free 127.0.0.1 port.

For the quota ledger's tests and benchmarks. ``initdb`` and ``postgres`` refuse to run as
root, so as root the cluster runs as the ``postgres`` system user (``runuser``) in a directory
that user owns; otherwise as the current user. Password authentication over TCP only; no Unix
socket; everything is removed on stop.

    with PostgresCluster.start_new() as pg:
        url = pg.url  # postgresql+psycopg://workbench:...@127.0.0.1:PORT/workbench
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN_DIRS = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15, 14, 13)]


def postgres_bin_dir() -> Path | None:
    """Where initdb and postgres are: $WORKBENCH_PG_BIN, Debian's layout, else $PATH."""
    env = os.environ.get("WORKBENCH_PG_BIN")
    candidates = ([Path(env)] if env else []) + BIN_DIRS
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "postgres").exists():
            return directory
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("postgres") else None


def missing_reason() -> str | None:
    """Why no cluster can start here, or None when one can."""
    if postgres_bin_dir() is None:
        return "PostgreSQL is not installed (Debian package 'postgresql'); set WORKBENCH_PG_BIN otherwise"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the cluster as"
        if shutil.which("runuser") is None:
            return "running as root without 'runuser' to drop privileges for PostgreSQL"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the Python driver psycopg is not installed (pip install 'psycopg[binary]')"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    directory: Path
    port: int
    password: str
    user: str = "workbench"
    database: str = "workbench"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @classmethod
    def start_new(cls, timeout: float = 30.0) -> PostgresCluster:
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        directory = Path(tempfile.mkdtemp(prefix="wb-pg-"))
        cluster = cls(directory, _free_port(), secrets.token_hex(16))
        try:
            cluster._init()
            cluster._start(timeout)
            cluster._create_database()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _init(self) -> None:
        bin_dir = postgres_bin_dir()
        assert bin_dir is not None
        data = self.directory / "data"
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.directory, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        subprocess.run(
            self._as_owner([
                str(bin_dir / "initdb"), "-D", str(data), "-U", self.user, "--pwfile", str(pwfile),
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
            ]),
            check=True, capture_output=True, timeout=120,
        )
        pwfile.unlink()

    def _start(self, timeout: float) -> None:
        bin_dir = postgres_bin_dir()
        assert bin_dir is not None
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115 - the child writes to it
        self.process = subprocess.Popen(
            self._as_owner([
                str(bin_dir / "postgres"), "-D", str(self.directory / "data"),
                "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                "-c", "unix_socket_directories=", "-c", "fsync=off",
                "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=300", "-c", "shared_buffers=64MB",
            ]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited:\n{self.log_tail()}")
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"PostgreSQL not ready after {timeout} s:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} password={self.password} dbname={database}"

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.database}"')

    def log_tail(self, lines: int = 30) -> str:
        path = self.directory / "postgres.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the cluster's directory."""
        if self.process is not None and self.process.poll() is None:
            # Signal the postmaster itself (runuser, when we are root, does not forward SIGINT).
            self.process.send_signal(signal.SIGINT)
            try:
                pid = int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGINT)
            except (OSError, ValueError, IndexError):
                pass
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
