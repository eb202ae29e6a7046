"""A throwaway Postgres cluster a test owns: initdb into a temp dir, pg_ctl start/stop/restart.

    def test_x(private_postgres: PrivatePostgres):
        url = private_postgres.create_database("gateway")
        private_postgres.restart()      # fast mode, like an operator's restart

The shared server on :5432 cannot be restarted by a test (other tests and other engineers use
it), so outage tests get their own cluster on a free port, with its socket in the temp dir.
Postgres refuses to run as root, so when the suite runs as root (CI does) every server command
runs as the `postgres` OS user; otherwise as the current user.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.e2e.gunicorn import free_port

SERVER_USER = "postgres"


def _bin_dir() -> Path:
    """Debian keeps server binaries out of PATH, under /usr/lib/postgresql/<major>/bin."""
    if explicit := os.environ.get("PG_BIN"):
        return Path(explicit)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found is None:
        raise RuntimeError("no pg_ctl: install Postgres server binaries or set PG_BIN")
    return Path(found).parent


class PrivatePostgres:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        # As root, TMPDIR may be a directory the server user cannot enter (/root/...): use /tmp.
        self.root = Path(tempfile.mkdtemp(prefix="gw-pg-", dir="/tmp" if self._as_root else None))  # noqa: S108
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.logfile = self.root / "postgres.log"
        self._initialised = False
        self.sockets.mkdir()
        # Even an interpreter exit that skips the fixture's teardown (an error in another fixture,
        # a KeyboardInterrupt) stops the server and removes the directory.
        atexit.register(self.close)
        if self._as_root:
            # The server user must own everything it writes: data, socket and log.
            shutil.chown(self.root, SERVER_USER)
            shutil.chown(self.sockets, SERVER_USER)

    @property
    def url(self) -> str:
        """The maintenance database; see create_database for one the gateway can own."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [*args]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)

    def _pg_ctl(self, action: str, *extra: str) -> None:
        # -o on every start: pg_ctl restart would otherwise reuse postmaster.opts, which is fine,
        # but saying it each time keeps one source of truth for the port and socket.
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        try:
            self._run(str(self.bin / "pg_ctl"), action, "-D", str(self.data), "-l", str(self.logfile),
                      "-w", "-t", "30", "-o", options, *extra)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"pg_ctl {action} failed: {exc.stderr}\n{self.log()}") from None

    def init(self) -> None:
        # Trust auth on loopback only; the cluster lives as long as one test.
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SERVER_USER, "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        self._initialised = True

    def start(self) -> None:
        if not self._initialised:
            self.init()
        self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("restart", "-m", mode)

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the server if it runs (immediate: nothing here is worth a checkpoint) and delete it all."""
        if self.data.exists() and self.is_running():
            try:
                self._run(str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w",
                          timeout=30)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        # Last resort when pg_ctl cannot stop it: SIGQUIT to the postmaster named in its own pid file.
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 3)
        except (OSError, ValueError, IndexError):
            pass

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private cluster, stopped and deleted after the test whatever its outcome."""
    with PrivatePostgres() as server:
        yield server
