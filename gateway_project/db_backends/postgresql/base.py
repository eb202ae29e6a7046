"""The gateway's Postgres backend: django-prometheus's (every query counted and timed), whose pooled
connections are checked at checkout, and a Postgres restart costs no request an error.

A restart kills every pooled connection at once, and each looks fine until used. psycopg_pool's
own check (Django's CONN_HEALTH_CHECKS) finds them one at a time and backs off 1 s, then 2 s,
between them, so a request that draws two dead connections runs out of its wait and fails
(measured: 3 of 40 requests after an idle restart). Here the check is the same
`ConnectionPool.check_connection`, made where Django takes a connection (`get_new_connection`, the
backend method Django meant for subclasses), and the first dead one makes the pool check all its
idle connections at once (`ConnectionPool.check()`): the request then gets a live connection, or a
new one within DB_POOL_TIMEOUT. Only public Django and psycopg_pool APIs are used.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from django_prometheus.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)

# A restart leaves no live idle connection after one sweep; more tries than this means the
# database went away again, and the request should hear so.
_CHECKOUTS = 3


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: Any) -> Any:
        pool = self.pool
        for attempt in range(_CHECKOUTS):
            connection = super().get_new_connection(conn_params)
            if pool is None:
                return connection
            try:
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
