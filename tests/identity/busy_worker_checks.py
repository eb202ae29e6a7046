"""The limiter's Redis timeout measures Redis, not a busy worker: a reply that arrives while the
worker's other requests hold the CPU for longer than `redis_timeout` is read when the worker gets to
it, not taken for a Redis that is down (which, with `fail_open`, would admit requests unlimited just
when a worker is loaded). Run with threads and in a gevent-patched interpreter (tests/gevent_checks.py)."""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlsplit

from gateway_project import concurrency
from tests.fakes.slow_relay import slow_relay

TIMEOUT = 0.25
BUSY_FOR = 0.6  # well past TIMEOUT
# Redis's replies come through a relay this late, so the limiter surely waits for its reply (a
# loopback Redis may answer before the limiter first reads, and then nothing waits) and the worker
# is busy before the reply is there.
REPLY_DELAY = 0.05


def _busy() -> None:
    """Another request's CPU work: it never yields to the hub (under gevent) while it runs."""
    until = time.perf_counter() + BUSY_FOR
    while time.perf_counter() < until:
        pass


def _decide_while_busy(*, connected: bool) -> None:
    from tests.identity.conftest import SHARED_REDIS

    redis = urlsplit(SHARED_REDIS)
    with slow_relay(redis.hostname or "127.0.0.1", redis.port or 6379, REPLY_DELAY) as port:
        _decide_through(redis._replace(netloc=f"{redis.hostname}:{port}").geturl(), connected=connected)


def _decide_through(redis_url: str, *, connected: bool) -> None:
    # Imported here, after the standard library is patched (redis imports ssl) and Django set up.
    from identity_app.limiter import Limiter, Limits, RedisBuckets

    buckets = RedisBuckets(redis_url, prefix=f"test:busy:{secrets.token_hex(4)}:", timeout=TIMEOUT)
    limiter = Limiter(buckets, fail_open=True)
    if connected:
        buckets.client.ping()
    # Under gevent the helper runs at the hub's next turn, which is when this greenlet waits for
    # the reply (REPLY_DELAY late); the hub looks at the sockets again only when the helper is done.
    busy = concurrency.start(_busy)
    started = time.perf_counter()
    try:
        decision = limiter.acquire("subject", Limits(rpm=10, tpm=0), tokens=0)
        waited = time.perf_counter() - started
    finally:
        busy.join()
        keys = list(buckets.client.scan_iter(match=f"{buckets.prefix}*"))
        if keys:
            buckets.client.delete(*keys)
        buckets.client.close()
    assert decision is not None, "the limiter failed open: a reply read late was taken for a Redis timeout"
    assert decision.admitted
    if concurrency.gevent_active():
        # Otherwise the check proves nothing: the worker was not busy while the reply was awaited.
        assert waited >= BUSY_FOR * 0.9, waited


def a_reply_that_arrives_while_the_worker_is_busy_is_read() -> None:
    _decide_while_busy(connected=True)


def a_connection_made_while_the_worker_is_busy_is_used() -> None:
    _decide_while_busy(connected=False)


CHECKS = [a_reply_that_arrives_while_the_worker_is_busy_is_read, a_connection_made_while_the_worker_is_busy_is_used]

if __name__ == "__main__":
    from tests.gevent_checks import run_patched

    run_patched(CHECKS)
