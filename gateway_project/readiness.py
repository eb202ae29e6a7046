"""The database check behind /ready, bounded in time whatever state Postgres is in.

A load balancer probes /ready with a short timeout (often 1 s). Through the ORM the check would
wait the full pool timeout (DB_POOL_TIMEOUT) for a connection while Postgres is down, and the
probe would time out instead of getting a 503 that says why. So on Postgres the check borrows a
connection straight from Django's psycopg pool with its own, shorter wait.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from psycopg_pool import PoolTimeout

# Half the usual probe timeout: the rest of /ready (config checks, rendering) is microseconds.
DATABASE_TIMEOUT = 0.5

HEALTHY = "healthy"


def check_database(timeout: float = DATABASE_TIMEOUT) -> str:
    """`healthy`, or `unhealthy: ...` naming the failure."""
    # Only the postgresql backend has a pool (and only when OPTIONS["pool"] is set).
    pool = getattr(connection, "pool", None)
    if pool is None:
        return _check_with_orm()
    return check_pool(pool, timeout)


def check_pool(pool: Any, timeout: float) -> str:
    """Borrow a connection from a psycopg pool for at most `timeout` seconds and run SELECT 1."""
    try:
        # Django opens its pool on the first query; /ready may well be the first.
        pool.open()
        with pool.connection(timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except PoolTimeout:
        # psycopg_pool cannot say which: its size counts connection attempts still in progress, so
        # a pool retrying a dead server looks as full as one whose connections are all in use.
        # Either way this instance cannot serve database work promptly.
        return f"unhealthy: no database connection within {timeout:g} s (PoolTimeout: Postgres down or pool exhausted)"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which kind
        return f"unhealthy: {_describe(exc)}"
    return HEALTHY


def _check_with_orm() -> str:
    # SQLite (a first local run) or Postgres without a pool: a plain query, then give the
    # connection back as the request cycle would. Inside a test's transaction there is none to give.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which kind
        return f"unhealthy: {_describe(exc)}"
    finally:
        if not connection.in_atomic_block:
            connection.close()
    return HEALTHY


def _describe(exc: BaseException) -> str:
    # The first line of a libpq message names the cause ("connection refused", "the database
    # system is shutting down") without the hint lines that follow.
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
