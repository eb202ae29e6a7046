"""The live events of background responses, kept so that any reader can follow one while it runs.

A background turn outlives the request that created it, and the client that asked for a stream may
read it from another worker, another instance, or after a reconnect with `starting_after=N`
(`GET /v1/responses/{id}?stream=true`). So the turn's runner appends every SSE frame it produces
here, with its `sequence_number`, and readers follow the log: the numbers a reader gets are the
ones the first stream had, so a client resuming after event N misses nothing and sees nothing twice.

- In this process, always: a list per response and a condition to wake readers. A stream that the
  creating request itself returns reads from here, with no round trip.
- In Redis, when `REDIS_URL` is set: a stream (`XADD`) per response, so readers anywhere follow it
  (`XREAD BLOCK`). Kept while the turn runs and `RETENTION` seconds after its end; after that,
  and when Redis is not configured and the reader is in another process, a replay is rebuilt from
  what the database stored (responses_app/replay.py).

Appending never fails a turn: if Redis refuses, the log is marked broken there and readers fall
back to the database. The end of a log is an entry of its own (`END`), never sent to clients.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from responses_app.cancellation import CancelToken

logger = logging.getLogger(__name__)

END = "gateway.end"
# How long a finished response's events stay readable with their original numbers.
RETENTION = 600.0
# Seconds of silence after which a reader is handed a None (to send a keep-alive, check the database).
IDLE_TICK = 1.0
# In-process logs kept at most, oldest finished ones dropped first.
LOCAL_CAPACITY = 1000


@dataclass(frozen=True)
class Entry:
    sequence: int  # the event's sequence_number; -1 for END
    kind: str  # the event type, or END
    frame: str  # the SSE frame as the first stream sent it ("" for END)


@dataclass
class _Local:
    entries: list[Entry] = field(default_factory=list)
    ended_at: float | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)


class EventLog:
    def __init__(self, redis_url: str = "", *, key_prefix: str = "gateway:events:", retention: float = RETENTION,
                 running_for: float = 3600.0) -> None:
        self._local: OrderedDict[str, _Local] = OrderedDict()
        self._lock = threading.Lock()
        self._prefix = key_prefix
        self._retention = retention
        self._running_for = running_for  # how long a log may grow before its key expires anyway
        self._broken: set[str] = set()
        self._redis: Any = None
        if redis_url:
            from gateway_project import redis_clients

            self._redis = redis_clients.client(redis_url, socket_timeout=2.0)

    # --- writing (the turn's runner) ----------------------------------------------------------

    def open(self, response_id: str) -> None:
        with self._lock:
            self._local[response_id] = _Local()
            self._prune()

    def append(self, response_id: str, sequence: int, kind: str, frame: str) -> None:
        self._add(response_id, Entry(sequence, kind, frame))

    def close(self, response_id: str) -> None:
        self._add(response_id, Entry(-1, END, ""), ttl=self._retention)

    def _add(self, response_id: str, entry: Entry, ttl: float | None = None) -> None:
        local = self._local.get(response_id)
        if local is not None:
            with local.changed:
                local.entries.append(entry)
                if entry.kind == END:
                    local.ended_at = time.monotonic()
                local.changed.notify_all()
        if self._redis is None or response_id in self._broken:
            return
        key = self._prefix + response_id
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.xadd(key, {"s": entry.sequence, "k": entry.kind, "f": entry.frame})
            pipe.expire(key, int(ttl if ttl is not None else self._running_for + self._retention))
            pipe.execute()
        except Exception:  # any Redis trouble: readers elsewhere fall back to the database
            self._broken.add(response_id)
            logger.warning("could not append to the event log of %s in Redis; readers elsewhere will "
                           "follow it through the database", response_id, exc_info=True)

    def _prune(self) -> None:
        """Drop in-process logs that ended more than RETENTION ago, and the oldest beyond capacity."""
        now = time.monotonic()
        for response_id, local in list(self._local.items()):
            recent = local.ended_at is None or now - local.ended_at < self._retention
            if len(self._local) <= LOCAL_CAPACITY and recent:
                continue
            if local.ended_at is not None or len(self._local) > 2 * LOCAL_CAPACITY:
                del self._local[response_id]
                self._broken.discard(response_id)

    # --- reading (any request) ----------------------------------------------------------------

    def follow(self, response_id: str, after: int, cancel: CancelToken) -> Iterator[Entry | None] | None:
        """The log's entries numbered above `after`, as they come, up to and including END, and a
        None for each second of silence, so the reader can send a keep-alive or look at the
        database. Returns None when no log of this response is readable here."""
        local = self._local.get(response_id)
        if local is not None:
            return self._follow_local(local, after, cancel)
        if self._redis is None:
            return None
        key = self._prefix + response_id
        try:
            if not self._redis.exists(key):
                return None
        except Exception:
            logger.warning("could not read the event log of %s from Redis", response_id, exc_info=True)
            return None
        return self._follow_redis(key, after, cancel)

    @staticmethod
    def _follow_local(local: _Local, after: int, cancel: CancelToken) -> Iterator[Entry | None]:
        position = 0
        while not cancel.cancelled:
            with local.changed:
                if position >= len(local.entries):
                    local.changed.wait(IDLE_TICK)
                fresh = local.entries[position:]
            position += len(fresh)
            if not fresh:
                yield None
                continue
            for entry in fresh:
                if entry.kind == END:
                    yield entry
                    return
                if entry.sequence > after:
                    yield entry

    def _follow_redis(self, key: str, after: int, cancel: CancelToken) -> Iterator[Entry | None]:
        last = "0-0"
        while not cancel.cancelled:
            try:
                answer = self._redis.xread({key: last}, count=500, block=int(IDLE_TICK * 1000))
            except Exception:
                logger.warning("following %s in Redis failed; following the database instead", key, exc_info=True)
                return
            records = answer[0][1] if answer else []
            if not records:
                yield None
                continue
            for record_id, fields in records:
                last = record_id
                entry = Entry(int(fields[b"s"]), fields[b"k"].decode(), fields[b"f"].decode())
                if entry.kind == END:
                    yield entry
                    return
                if entry.sequence > after:
                    yield entry


_log: EventLog | None = None
_log_lock = threading.Lock()


def event_log() -> EventLog:
    global _log
    if _log is None:
        with _log_lock:
            if _log is None:
                server = settings.GATEWAY.server
                _log = EventLog(settings.REDIS_URL, running_for=server.turn_timeout + 120)
    return _log


def reset_event_log() -> None:
    """Forget the process's log (tests that change REDIS_URL)."""
    global _log
    _log = None
