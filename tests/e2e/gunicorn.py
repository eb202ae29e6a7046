"""Run the gateway under real gunicorn as a subprocess, against its own fresh Postgres database.

    with GatewayProcess(config_yaml_text) as gw:
        httpx/requests/openai SDK against gw.url ("http://127.0.0.1:<port>"), gw.base_url ("/v1")

The database is created and migrated per process (named after the test), and dropped afterwards.
Instances of one deployment share it: `GatewayProcess(config, database_url=first.database_url)`
(the first one, entered first, creates and drops it).
The static files are collected once per test process (collected_static), so the admin is served
as in production.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_database(name: str, template: str | None = None) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return f"postgres://postgres@127.0.0.1:5432/{name}"


_template: str | None = None
_template_lock = threading.Lock()


def migrated_template(env: dict[str, str]) -> str:
    """A database migrated once per test process, which every gateway's own database is copied from
    (CREATE DATABASE ... TEMPLATE, a file copy): `migrate` on each new database took ~2 s of the
    ~4 s a gateway took to start, on every one of the suite's gunicorn runs."""
    global _template
    with _template_lock:
        if _template is None:
            name = f"gw_e2e_template_{os.getpid()}"
            url = create_database(name)
            subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT,
                           env={**env, "DATABASE_URL": url}, check=True)
            atexit.register(drop_database, name)
            _template = name
        return _template


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_static_root: str | None = None
_static_lock = threading.Lock()


def collected_static(env: dict[str, str]) -> str:
    """A STATIC_ROOT filled by `collectstatic`, once per test process, as production does before
    start: the admin's pages need its manifest (hashed names), and gunicorn serves it (WhiteNoise)."""
    global _static_root
    with _static_lock:
        if _static_root is None:
            root = tempfile.mkdtemp(prefix="gw-e2e-static-")
            atexit.register(shutil.rmtree, root, ignore_errors=True)
            subprocess.run([sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"], cwd=ROOT,
                           env={**env, "STATIC_ROOT": root}, check=True)
            _static_root = root
        return _static_root


def _become_subreaper() -> None:
    """Orphaned descendants of this process become its children (Linux's PR_SET_CHILD_SUBREAPER)."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def _reap(pids: list[int], timeout: float = 10.0) -> None:
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    pending.discard(pid)
            except ChildProcessError:
                if not Path(f"/proc/{pid}").exists():
                    pending.discard(pid)  # gone, reaped by someone else
        time.sleep(0.02)


class OnLoopback:
    """Something on 127.0.0.1:`port` that serves the gateway's API (the gateway, or a proxy in front)."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


class GatewayProcess(OnLoopback):
    def __init__(self, config_yaml: str, *, workers: int = 2, env: dict[str, str] | None = None,
                 database: str | None = None, args: list[str] | None = None,
                 database_url: str | None = None) -> None:
        self.config_yaml = config_yaml
        self.workers = workers
        self.extra_env = env or {}
        self.db_name = database or f"gw_e2e_{secrets.token_hex(4)}"
        self.args = args or []
        # An explicit URL (e.g. an unreachable server) skips creating and migrating a database.
        self._database_url = database_url
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="gw-e2e-")
        self.log_path = Path(self._tmp.name) / "gunicorn.log"

    @property
    def database_url(self) -> str:
        return self._database_url or f"postgres://postgres@127.0.0.1:5432/{self.db_name}"

    def env(self) -> dict[str, str]:
        config = Path(self._tmp.name) / "config.yaml"
        config.write_text(self.config_yaml)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_SETTINGS"))}
        # No DJANGO_SETTINGS_MODULE: the gateway must start from the production command alone.
        env.update({"DATABASE_URL": self.database_url, "GATEWAY_CONFIG": str(config),
                    "WEB_CONCURRENCY": str(self.workers)})
        # DEBUG is off, so the gateway refuses to start on its public development key.
        env.setdefault("SECRET_KEY", "e2e-secret-key-" + "not-for-production-" * 3)
        # Plain HTTP on loopback, as scripts/local-env serves a local run: the admin's cookies must
        # come back to it (Secure ones would not be sent over http).
        env.setdefault("SESSION_COOKIE_SECURE", "false")
        env.setdefault("CSRF_COOKIE_SECURE", "false")
        env.update(self.extra_env)
        if "STATIC_ROOT" not in env:
            env["STATIC_ROOT"] = collected_static(env)
        return env

    def start(self) -> GatewayProcess:
        env = self.env()
        if self._database_url is None:
            create_database(self.db_name, template=migrated_template(env))
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "gateway_project/gunicorn.conf.py",
             "gateway_project.wsgi", "-b", f"127.0.0.1:{self.port}", *self.args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the master and every worker at once, as a host or container dying would: no hook runs,
        nothing is flushed or settled, and the workers' leases stay behind in the database."""
        assert self.proc is not None
        master = psutil.Process(self.proc.pid)
        workers = master.children(recursive=True)
        # The workers lose their parent with them. Where PID 1 does not reap orphans (a container's
        # init that is no init), they would stay zombies, which the sweep's same-host check takes for
        # running processes; this process reaps them instead, as a host's init would.
        _become_subreaper()
        for process in [master, *workers]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        _reap([worker.pid for worker in workers])

    def stop(self) -> None:
        """Tear down: SIGQUIT, gunicorn's quick shutdown. A graceful one (SIGTERM) waits for every
        idle keep-alive connection a test's client left open to time out (`keepalive`, 5 s), which
        cost most teardowns 1.5-6.5 s; tests of the graceful shutdown send SIGTERM themselves."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._database_url is None:
            with contextlib.suppress(psycopg.Error):
                drop_database(self.db_name)
        self._tmp.cleanup()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
