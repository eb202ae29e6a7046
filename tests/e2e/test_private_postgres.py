"""tests/e2e/private_postgres.py: a cluster a test can restart, and never one left running."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.e2e.private_postgres import PrivatePostgres

pytestmark = pytest.mark.e2e


def postmaster_pid(server: PrivatePostgres) -> int:
    return int((server.data / "postmaster.pid").read_text().split()[0])


def alive(pid: int, within: float = 5.0) -> bool:
    """Whether `pid` still runs after `within` seconds (pg_ctl -w returns as the pid file goes,
    a moment before the process is gone; an unreaped zombie counts as gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        if "\nState:\tZ" in status:
            return False
        time.sleep(0.05)
    return True


def test_it_restarts_on_its_own_port_and_stops():
    with PrivatePostgres() as server:
        url = server.create_database("gateway")
        with psycopg.connect(url) as conn:
            before = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        server.restart()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT pg_postmaster_start_time()").fetchone() != before
            assert conn.execute("SHOW port").fetchone() == (str(server.port),)
        server.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)


def test_it_leaves_no_server_running_when_the_test_fails():
    with pytest.raises(RuntimeError), PrivatePostgres() as server:
        pid = postmaster_pid(server)
        raise RuntimeError("the test failed")
    assert not alive(pid)
    assert not server.root.exists()
