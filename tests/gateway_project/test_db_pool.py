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
from django.db import OperationalError, connections
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


def _wrapper(settings: Any, alias: str, **overrides: Any) -> DatabaseWrapper:
    base = settings.DATABASES["default"]
    pool = {**base["OPTIONS"]["pool"], "min_size": 1, "max_size": 1, "timeout": 0.5}
    params = {**base, "NAME": "postgres", "TEST": {}, **overrides,
              "OPTIONS": {**base["OPTIONS"], "application_name": alias, "pool": pool}}
    return DatabaseWrapper(params, alias=alias)


def test_a_busy_pool_makes_a_request_wait_instead_of_failing(db: None, settings: Any) -> None:
    import threading

    settings.DB_POOL_BUSY_TIMEOUT = 10
    waiter = _wrapper(settings, "gw-busy")
    pool = waiter.pool
    pool.open()
    held = pool.getconn()  # the pool's only connection, busy elsewhere ...
    threading.Timer(1.5, pool.putconn, args=(held,)).start()  # ... for 1.5 s
    try:
        started = time.monotonic()
        waiter.ensure_connection()  # three rounds of the 0.5 s timeout: busy, not down
        assert 1.2 < time.monotonic() - started < 5
    finally:
        waiter.close()
        waiter.close_pool()


def test_a_database_that_is_down_fails_the_request_fast(db: None, settings: Any) -> None:
    import socket

    settings.DB_POOL_BUSY_TIMEOUT = 10
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens there: every connection is refused
    down = _wrapper(settings, "gw-down", PORT=str(port))
    started = time.monotonic()
    with pytest.raises(OperationalError):
        down.ensure_connection()
    assert time.monotonic() - started < 2  # one wait of the pool timeout, not the busy budget
    down.close_pool()


def test_a_pool_busy_past_its_budget_raises_pool_busy(db: None, settings: Any) -> None:
    from gateway_project.db_backends.postgresql.base import PoolBusy

    settings.DB_POOL_BUSY_TIMEOUT = 1
    waiter = _wrapper(settings, "gw-busy-budget")
    pool = waiter.pool
    pool.open()
    held = pool.getconn()
    try:
        with pytest.raises(OperationalError) as raised:
            waiter.ensure_connection()
        assert isinstance(raised.value.__cause__, PoolBusy)
    finally:
        pool.putconn(held)
        waiter.close_pool()


def test_a_bursts_connections_are_given_back_after_max_idle(settings: Any) -> None:
    """DB_POOL_MAX_IDLE reaches psycopg_pool: connections opened for a burst are closed again, one
    per idle period, down to the pool's minimum."""
    name = "gw-max-idle-test"
    params = {**settings.DATABASES["default"], "NAME": "postgres", "TEST": {},
              "OPTIONS": {**settings.DATABASES["default"]["OPTIONS"], "application_name": name,
                          "pool": {**settings.DATABASES["default"]["OPTIONS"]["pool"],
                                   "min_size": 1, "max_size": SIZE, "max_idle": 0.2}}}
    wrapper = DatabaseWrapper(params, alias="max-idle-test")
    try:
        pool = wrapper.pool
        pool.open(wait=True, timeout=10)  # as Django does on its first connection
        held = [pool.getconn() for _ in range(SIZE)]  # a burst: every connection at once
        for conn in held:
            pool.putconn(conn)
        assert pool.get_stats()["pool_size"] == SIZE
        deadline = time.monotonic() + 10
        while pool.get_stats()["pool_size"] > 1:
            assert time.monotonic() < deadline, pool.get_stats()
            time.sleep(0.05)
    finally:
        wrapper.close_pool()
