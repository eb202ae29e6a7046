"""Redis clients for the gateway's own uses (the rate limiter, background responses' event logs).

Each client draws on a bounded pool that a caller waits on, like the Postgres pool: at most
`REDIS_POOL_MAX_SIZE` connections per worker process and client, a request waiting up to
`REDIS_POOL_TIMEOUT` seconds for one of them. redis-py's default pool does not wait: it opens a
connection per concurrent caller up to 100 and refuses the next one at once ("Too many
connections"). A gevent worker holds hundreds of requests at a time, so a burst of them reaching
the limiter together exceeded that, and the limiter then admitted the refused requests unlimited
(`rate_limit.fail_open`), just when limits matter most (issue 13's 1,000 streams). A Redis call
takes well under a millisecond, so a few connections serve a worker's whole burst in turn.

Under gevent the pool's queue and lock are gevent's (the worker patches the standard library
before Django loads), so a request waiting for a connection lets the others run.
"""

from __future__ import annotations

import redis
from django.conf import settings


def client(url: str, *, socket_timeout: float) -> redis.Redis:
    """A client on its own bounded, waiting pool. `socket_timeout` bounds each connect and each
    reply (a Redis that is down or stuck); the wait for a free connection is the pool's."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=settings.REDIS_POOL_MAX_SIZE, timeout=settings.REDIS_POOL_TIMEOUT,
        socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
    return redis.Redis(connection_pool=pool)
