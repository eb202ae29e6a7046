"""gateway_project.db_pool: after a restart, the first dead connection sweeps the pool.

A restart is simulated by terminating every server process of one pool from the outside, which
leaves the pool holding connections that look fine until used, exactly as a restart does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway_project import db_pool

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
SIZE = 4


@pytest.fixture
def pool() -> Iterator[ConnectionPool[Any]]:
    name = f"gw-sweep-{secrets.token_hex(4)}"
    with ConnectionPool(LOCAL_POSTGRES, kwargs={"application_name": name, "autocommit": True}, min_size=SIZE,
                        max_size=SIZE, check=ConnectionPool.check_connection, open=True, name=name) as pool:
        pool.wait(timeout=10)
        yield pool


def kill_server_side(pool: ConnectionPool[Any]) -> None:
    with psycopg.connect(LOCAL_POSTGRES, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                      [pool.name])
        deadline = time.monotonic() + 5
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            [pool.name]).fetchone() != (0,):
            assert time.monotonic() < deadline, "backends did not exit"
            time.sleep(0.05)


def test_install_wraps_psycopg_pools_own_check_once(pool: ConnectionPool[Any]) -> None:
    db_pool.install(pool)
    db_pool.install(pool)
    # The private attribute db_pool relies on: if psycopg_pool renames it, this fails first.
    assert isinstance(pool._check, db_pool.SweepingCheck)
    assert pool._check.pool is pool


def test_install_leaves_a_pool_without_health_checks_alone() -> None:
    unchecked: ConnectionPool[Any] = ConnectionPool(LOCAL_POSTGRES, open=False)
    db_pool.install(unchecked)
    assert unchecked._check is None


def test_without_the_sweep_each_dead_connection_costs_a_request_a_backoff(pool: ConnectionPool[Any]) -> None:
    # Why db_pool exists: psycopg_pool alone backs off 1 s, then 2 s, between dead connections.
    kill_server_side(pool)
    started = time.monotonic()
    try:
        with pool.connection(timeout=1.5):
            pass
    except PoolTimeout:
        pass
    assert time.monotonic() - started > 0.9


def test_with_the_sweep_the_first_request_after_a_restart_gets_a_live_connection_at_once(
        pool: ConnectionPool[Any]) -> None:
    db_pool.install(pool)
    kill_server_side(pool)
    started = time.monotonic()
    with pool.connection(timeout=1.5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert time.monotonic() - started < 0.5
    assert pool.get_stats()["connections_lost"] == SIZE


def test_djangos_pool_gets_the_sweep(db: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert isinstance(connection.pool._check, db_pool.SweepingCheck)

