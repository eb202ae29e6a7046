"""Run the gateway under real gunicorn as a subprocess, against its own fresh Postgres database.

    with GatewayProcess(config_yaml_text) as gw:
        httpx/requests/openai SDK against gw.url ("http://127.0.0.1:<port>"), gw.base_url ("/v1")

The database is created and migrated per process (named after the test), and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class GatewayProcess:
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
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

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
        env.update(self.extra_env)
        return env

    def start(self) -> GatewayProcess:
        env = self.env()
        if self._database_url is None:
            create_database(self.db_name)
            subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env,
                           check=True)
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

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
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
