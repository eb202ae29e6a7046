"""The gateway's Postgres backend: django-prometheus's (every query counted and timed), whose pooled
connections are checked at checkout, which waits for a busy pool but fails fast when Postgres is
down, and whose restart costs no request an error.

- **Checked at checkout.** A restart kills every pooled connection at once, and each looks fine
  until used. psycopg_pool's own check (Django's CONN_HEALTH_CHECKS) finds them one at a time and
  backs off 1 s, then 2 s, between them, so a request that draws two dead connections runs out of
  its wait and fails (measured: 3 of 40 requests after an idle restart). Here the check is the same
  `ConnectionPool.check_connection`, made where Django takes a connection (`get_new_connection`,
  the backend method Django meant for subclasses), on every connection the server has said
  something on (a closed one has its goodbye or EOF waiting; a healthy idle one has nothing, and
  a non-blocking select() costs no round trip), and the first dead one makes the pool check all
  its idle connections at once (`ConnectionPool.check()`).
- **Busy is not down.** Each wait for a pooled connection lasts at most DB_POOL_TIMEOUT (1.5 s), so
  a request fails fast while Postgres is down. When that wait runs out but the pool made no failed
  connection attempt meanwhile, Postgres is up and every connection is just busy (a burst of
  traffic): the request keeps waiting, up to DB_POOL_BUSY_TIMEOUT, instead of failing a burst that
  the database would have served a moment later.

Only public Django and psycopg_pool APIs are used.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from django.conf import settings
from django_prometheus.db.backends.postgresql import base
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway_project.concurrency import readable_now

logger = logging.getLogger(__name__)

# A restart leaves no live idle connection after one sweep; more tries than this means the
# database went away again, and the request should hear so.
_CHECKOUTS = 3


def is_quiet(connection: Any) -> bool:
    """An idle connection has nothing to read. One the server closed (a restart, a terminated
    backend) has its goodbye or EOF waiting: only then is it worth psycopg_pool's check, a round
    trip, which would otherwise cost every checkout the time of a query."""
    if connection.closed:
        return False
    try:
        return not readable_now(connection.fileno())
    except (OSError, ValueError):
        return False


class PoolBusy(PoolTimeout):
    """Postgres is up, but no pooled connection came free within DB_POOL_BUSY_TIMEOUT."""


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        # Django builds these on every connect, and django-prometheus then defines a new cursor
        # class on each call (about 0.1 ms of CPU, twice per request: issue 13). With a pool they
        # go unused once it exists: connections come from the pool, opened with the pool's own
        # copy of these parameters, which is what is handed back.
        pool = self._connection_pools.get(self.alias)
        if pool is not None:
            return dict(pool.kwargs)
        return super().get_connection_params()

    def get_new_connection(self, conn_params: Any) -> Any:
        pool = self.pool
        if pool is None:
            return super().get_new_connection(conn_params)
        for attempt in range(_CHECKOUTS):
            connection = self._checkout(conn_params, pool)
            try:
                if not is_quiet(connection):
                    ConnectionPool.check_connection(connection)
                return connection
            except psycopg.Error:
                # Returned broken, the pool discards it and opens a replacement.
                pool.putconn(connection)
                if attempt == _CHECKOUTS - 1:
                    raise
                logger.warning("a pooled database connection was dead; checking the other idle ones")
                pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    def _checkout(self, conn_params: Any, pool: ConnectionPool[Any]) -> Any:
        """Django's checkout (one wait of DB_POOL_TIMEOUT), repeated while the pool is merely busy."""
        busy_until = time.monotonic() + settings.DB_POOL_BUSY_TIMEOUT
        while True:
            failed_connects = pool.get_stats().get("connections_errors", 0)
            try:
                return super().get_new_connection(conn_params)
            except PoolTimeout:
                if pool.get_stats().get("connections_errors", 0) > failed_connects:
                    raise  # the pool could not reach Postgres meanwhile: it is down, say so now
                if time.monotonic() >= busy_until:
                    raise PoolBusy(f"every pooled connection stayed busy for {settings.DB_POOL_BUSY_TIMEOUT:g} s "
                                   "(raise DB_POOL_MAX_SIZE)") from None
