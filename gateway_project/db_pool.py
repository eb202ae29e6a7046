"""After a Postgres restart, one failed connection check sweeps the whole pool.

With CONN_HEALTH_CHECKS Django gives psycopg_pool `check=ConnectionPool.check_connection`, so a
connection killed by a restart is discarded instead of failing its request. But psycopg_pool
backs off (about 1 s, then 2 s, ...) before it hands the same request the next connection, and
that next one is usually dead too: every idle connection died in the same restart. With a few
idle connections a request runs out of DB_POOL_TIMEOUT and fails (measured: 3 of 40 requests
after an idle restart). So the first failed check also checks every other idle connection
(`ConnectionPool.check()`, a round trip each); the dead ones are replaced while the request
backs off, and its next try gets a live one.

Django builds the pool itself and passes `check=` itself, so there is no option for a custom
check: `install` replaces the pool's check after the fact. psycopg-pool is pinned exactly
(requirements.txt) and tests/gateway_project/test_db_pool.py fails if that attribute changes.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)


class SweepingCheck:
    """psycopg_pool's own check, plus a sweep of the idle connections when it fails."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def __call__(self, conn: Any) -> None:
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            logger.warning("a pooled database connection was dead; checking the other idle ones")
            # Not holding the pool's lock here (psycopg_pool checks outside it), so this is safe.
            self.pool.check()
            raise


def install(pool: ConnectionPool[Any] | None) -> None:
    """Make a pool sweep on a failed check; no-op without a pool or with health checks off."""
    if pool is None:
        return
    current = pool._check  # noqa: SLF001 - see the module docstring
    if current is ConnectionPool.check_connection:
        pool._check = SweepingCheck(pool)  # noqa: SLF001


def on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    """`connection_created` receiver: Django may build a new pool at any time (tests do)."""
    install(getattr(connection, "pool", None))
