"""Active API keys remembered per process, forgotten the moment any key changes anywhere.

Reading the key's row cost every authenticated request a Postgres round trip, about a tenth of
the CPU of a small request (issue 13). Revocation must still work at once, on every worker and
instance, however it is done (the admin, `manage.py revoke_api_key`, plain SQL), so what is
remembered is trusted only while nothing has been said against it:

- A trigger on the keys table (identity_app migration 0002) sends `NOTIFY gateway_api_keys` in
  the transaction of every statement that revokes, deletes, re-keys or re-owns a key or changes its
  allow-list or limits. Postgres delivers it to every listener when that transaction commits.
- Each process LISTENs on a connection of its own. Before it trusts anything it remembers, it
  looks whether that connection has something to read (a non-blocking select(), no round trip):
  a notification, or the server closing the connection. Either way everything is forgotten.
- A process that is not listening (its connection is being opened in the background, is down and
  not yet back, or the database is not Postgres) remembers nothing: each request reads its row.
- A row read while a notification was being handled is not remembered (the generation count),
  so a greenlet cannot put back a row that was read before the change.
- The process that makes a change forgets at once too, inside its transaction, without waiting
  for the commit's notification.
- Nothing is remembered longer than `auth.key_cache_ttl` (default 60 s; 0 switches this off). That
  bounds the one case the socket check cannot see: a listening connection cut off without being
  closed (a network partition, a failover to another server), until TCP keepalives declare it
  dead (about 25 s).

The window left: a request that reaches a worker after the revoking transaction committed but
before Postgres has written the notification to that worker's socket. The listener's backend is
signalled at commit and must be scheduled to send it: measured here, no stale answer in 200
revocations on an idle machine nor with three CPU-bound processes beside it; with the test suite
running on both cores, now and then one lookup 1-3 ms after the commit still found the key.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import psycopg
from django.db import connection

from gateway_project.concurrency import readable_now, start
from identity_app.models import ApiKey

logger = logging.getLogger(__name__)

CHANNEL = "gateway_api_keys"
# A listener that could not connect is tried again after this long; meanwhile rows are read.
RETRY_SECONDS = 5.0
# Keys are few; a flood of distinct valid keys only ever costs the row reads of before.
MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[ApiKey, float]] = {}
        self._generation = 0
        self._listener: psycopg.Connection[Any] | None = None
        self._retry_at = 0.0
        self._connecting = False
        self._failing = False
        self._closed = False
        self._lock = threading.Lock()

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def generation(self) -> int:
        """Take before reading a row; hand back to `remember`."""
        return self._generation

    def get(self, digest: str) -> ApiKey | None:
        """The active key with this hash, if remembered and still to be trusted."""
        if not self._listening():
            return None
        entry = self._entries.get(digest)
        if entry is None:
            return None
        record, read_at = entry
        if time.monotonic() - read_at >= self.ttl:
            self._entries.pop(digest, None)
            return None
        return record

    def remember(self, digest: str, record: ApiKey, generation: int) -> None:
        if self._listener is None or generation != self._generation:
            return  # not listening, or something changed while the row was being read
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (record, time.monotonic())

    def forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_listener()

    def _listening(self) -> bool:
        with self._lock:
            if self._listener is None:
                self._connect_soon()
                return False
            if not readable_now(self._listener.pgconn.socket):
                return True
            # A notification, or the server going away: either way nothing remembered holds.
            self.forget_all()
            pgconn = self._listener.pgconn
            try:
                pgconn.consume_input()
                while pgconn.notifies() is not None:
                    pass
            except psycopg.Error as exc:
                logger.warning("API key cache: the listening connection failed (%s); keys are read from the "
                               "database until it is back", exc)
                self._drop_listener()
                return False
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                self._drop_listener()
                return False
            return True

    def _connect_soon(self) -> None:
        """Start listening in the background: no request waits for the connection (nor for its
        connect timeout while Postgres is unreachable); until then rows are read."""
        now = time.monotonic()
        if self._connecting or now < self._retry_at:
            return
        self._connecting = True
        self._retry_at = now + RETRY_SECONDS
        start(self._connect, name="api-key-listener")

    def _connect(self) -> None:
        try:
            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            params.setdefault("application_name", "gateway-api-key-listener")
            # A connection cut off without being closed (a partition, a failover) shows no EOF;
            # TCP keepalives find it dead within about 25 s (the TTL bounds what is trusted meanwhile).
            params.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
            listener = psycopg.connect(**{**params, "autocommit": True})
            listener.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            if not self._failing:
                logger.warning("API key cache: cannot listen for key changes (%s); keys are read from the "
                               "database meanwhile", exc)
            self._failing = True
            return
        finally:
            self._connecting = False
        with self._lock:
            if self._closed:
                listener.close()
                return
            self._listener, self._failing = listener, False
            # Whatever was remembered before listening could have missed a change.
            self.forget_all()

    def _drop_listener(self) -> None:
        self.forget_all()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(psycopg.Error):  # closing a broken connection
                listener.close()


_cache: KeyCache | None = None
_cache_lock = threading.Lock()


def key_cache() -> KeyCache | None:
    """This process's cache, or None when keys are read every time (a TTL of 0, not Postgres)."""
    global _cache
    if _cache is None:
        from django.conf import settings

        ttl = settings.GATEWAY.auth.key_cache_ttl
        if ttl <= 0 or connection.vendor != "postgresql":
            return None
        with _cache_lock:
            if _cache is None:
                _cache = KeyCache(ttl)
    return _cache


def forget_keys() -> None:
    """A key changed in this process: forget now, before the commit's notification arrives."""
    if _cache is not None:
        _cache.forget_all()


def reset_key_cache() -> None:
    """Drop the process's cache and its listening connection (tests that change the config)."""
    global _cache
    with _cache_lock:
        if _cache is not None:
            _cache.close()
        _cache = None
