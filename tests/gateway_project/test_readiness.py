"""gateway_project.readiness: the /ready database check answers in time and names the failure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway_project.readiness import check_database, check_pool

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def test_it_is_healthy_through_the_django_pool(db: None) -> None:
    assert check_database() == "healthy"


def test_it_is_unhealthy_within_its_timeout_when_postgres_is_unreachable() -> None:
    # Port 9 (discard) refuses connections: the pool keeps retrying in the background.
    pool: ConnectionPool[Any] = ConnectionPool("host=127.0.0.1 port=9 dbname=x", min_size=1, open=False)
    try:
        started = time.monotonic()
        result = check_pool(pool, timeout=0.3)
        assert time.monotonic() - started < 1
        assert result == ("unhealthy: no database connection within 0.3 s "
                          "(PoolTimeout: Postgres down or pool exhausted)")
    finally:
        pool.close()


def test_an_exhausted_pool_answers_within_its_timeout_too() -> None:
    with ConnectionPool(LOCAL_POSTGRES, min_size=1, max_size=1, open=True) as pool:
        pool.wait(timeout=5)
        with pool.connection():
            started = time.monotonic()
            result = check_pool(pool, timeout=0.3)
        assert time.monotonic() - started < 1
        assert result.startswith("unhealthy: no database connection within 0.3 s")


class BrokenPool:
    """A pool whose connection fails with a libpq-style two-line message."""

    def open(self) -> None:
        pass

    @contextmanager
    def connection(self, timeout: float) -> Iterator[Any]:
        raise psycopg.OperationalError("the database system is shutting down\nHINT: try later")
        yield


def test_any_other_failure_is_unhealthy_with_the_first_line_of_its_message() -> None:
    assert check_pool(BrokenPool(), timeout=0.3) == (
        "unhealthy: OperationalError: the database system is shutting down")
