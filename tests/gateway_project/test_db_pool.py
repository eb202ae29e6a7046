"""The gateway's Postgres backend checks pooled connections at checkout, and after a restart the
first dead one sweeps the pool, so the request gets a live connection at once.

A restart is simulated by terminating every server process of the pool from the outside, which
leaves the pool holding connections that look fine until used, exactly as a restart does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connections
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway_project.db_backends.postgresql.base import DatabaseWrapper

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
SIZE = 4


def kill_server_side(application_name: str) -> None:
    with psycopg.connect(LOCAL_POSTGRES, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                      [application_name])
        deadline = time.monotonic() + 5
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            [application_name]).fetchone() != (0,):
            assert time.monotonic() < deadline, "backends did not exit"
            time.sleep(0.05)


@pytest.fixture
def gateway_connection(settings: Any) -> Iterator[DatabaseWrapper]:
    """A second connection to the test database through the gateway's backend, with its own pool."""
    params = {**settings.DATABASES["default"], "NAME": "postgres", "TEST": {},
              "OPTIONS": {**settings.DATABASES["default"]["OPTIONS"], "application_name": "gw-sweep-test",
                          "pool": {**settings.DATABASES["default"]["OPTIONS"]["pool"],
                                   "min_size": SIZE, "max_size": SIZE}}}
    wrapper = DatabaseWrapper(params, alias="sweep-test")
    yield wrapper
    wrapper.close()
    wrapper.close_pool()


def test_psycopg_pools_own_check_backs_off_between_dead_connections() -> None:
    # Why the backend checks by itself: psycopg_pool alone waits 1 s, then 2 s, between dead ones.
    name = "gw-backoff-test"
    with ConnectionPool(LOCAL_POSTGRES, kwargs={"application_name": name, "autocommit": True}, min_size=SIZE,
                        max_size=SIZE, check=ConnectionPool.check_connection, open=True) as pool:
        pool.wait(timeout=10)
        kill_server_side(name)
        started = time.monotonic()
        try:
            with pool.connection(timeout=1.5):
                pass
        except PoolTimeout:
            pass
        assert time.monotonic() - started > 0.9


def test_after_a_restart_the_first_checkout_sweeps_and_gets_a_live_connection_at_once(
        db: None, gateway_connection: DatabaseWrapper) -> None:
    gateway_connection.ensure_connection()
    gateway_connection.close()  # back to the pool
    pool = gateway_connection.pool
    pool.wait(timeout=10)
    kill_server_side("gw-sweep-test")
    started = time.monotonic()
    with gateway_connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert time.monotonic() - started < 0.5
    assert pool.get_stats()["connections_lost"] >= SIZE - 1


def test_the_suites_connections_use_the_gateways_backend(db: None) -> None:
    assert isinstance(connections["default"], DatabaseWrapper)
