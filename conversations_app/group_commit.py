"""Group commit: the turn writes of many requests sent to Postgres together, in one round trip.

A turn's write is one statement (conversations_app.turn_statements), but each request used to make
it on a pooled connection of its own, and under gevent a connection is held for the whole time
its greenlet waits to be scheduled again after the answer. When the worker's CPU is saturated
(1,000 streams opened at once on 2 cores) that wait is the hub's whole round of runnable greenlets:
measured, a one-statement write held its connection 46 ms at the median, 150 ms at p90 and up to
1.4 s, so 8 connections served a couple of hundred writes a second, and a tenth of a burst's
requests ran out of DB_POOL_BUSY_TIMEOUT (503) waiting for one.

Here requests hand their statement to a writer greenlet of the worker and wait. A writer takes
every statement waiting at that moment (up to MAX_BATCH) and sends them in one pipeline (psycopg's
pipeline mode: no round trip between them) that Postgres runs as one implicit transaction, so a
batch costs one connection hold, whatever its size. The busier the worker, the larger the
batches: the cost of the scheduling wait is shared instead of multiplied. Up to MAX_WRITERS write
at once, each on a pooled connection, so one batch held up does not hold up the next.

- **Failure stays each request's own.** When a batch fails (a foreign key that broke because a
  chain was purged, a deadlock), nothing of it was committed, and its statements are run again
  one at a time: each request gets its own statement's outcome, as if it had run it alone.
- **A lock held elsewhere** (a row another transaction keeps locked) holds a batch up for
  BATCH_LOCK_TIMEOUT at most; its statements are then run one at a time, each again giving up a
  lock after that long, and only those that gave up then wait for their lock, after the rest.
- **Order.** The statements of a batch are sorted by the conversation row they update, so two
  workers' batches lock conversations in the same order and cannot deadlock each other.
- **A database that is down** fails the batch's checkout (DB_POOL_TIMEOUT), and every request of
  the batch gets that error, as each would have got it from its own checkout. A connection lost
  under a batch fails the batch (whether it committed first cannot be known, so it is not run
  again), and statements being run one at a time stop at the first that can get no connection.
- **Where.** Only in a gevent worker, outside a transaction: elsewhere (the test client, manage.py,
  the ORM path of other databases) a statement runs on the caller's connection, as before.
- **Warm writers.** A writer whose queue ran dry keeps its connection for WARM_FOR more seconds, so
  that under steady traffic a statement is not also a pool checkout and a close (about 0.04 ms of
  CPU each way). It checks the connection before using it again, as a checkout does (a Postgres
  restart closes it meanwhile), and while it holds one that is alive a turn's "is the database
  there?" (`warm_connection_alive`, ConversationStore.check_available) needs no checkout either.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from django.db import DatabaseError, connection

from conversations_app import db_connection
from gateway_project import concurrency
from gateway_project.db_backends.postgresql.base import is_quiet

logger = logging.getLogger(__name__)

# Enough to absorb a burst in a few round trips, small enough that one batch's transaction stays short.
MAX_BATCH = 128
# Writers at once per worker (each holds a pooled connection while it writes): a batch held up in
# Postgres (a row lock) does not hold up the statements that arrive after it.
MAX_WRITERS = 4
# Smaller batches are run one statement after the other on the writer's connection: a pipeline
# costs about as much CPU as two more statements (entering and leaving pipeline mode, the lock
# timeout's statement), which pays off only when the batch is larger.
PIPELINE_FROM = 3
# A batch waits this long at most for a row lock; then it is run one statement at a time, and only
# the statement that needs the lock waits for it.
BATCH_LOCK_TIMEOUT = "500ms"
# Seconds an idle writer keeps its connection for the next statement before giving it back to the
# pool: long enough to span the gaps of steady traffic, short enough that an idle worker holds none.
WARM_FOR = 0.5


# Told when the write under way in this context has a database connection (`when_connected`).
_connected_callback: ContextVar[Callable[[], None] | None] = ContextVar("group_commit_connected", default=None)


@contextmanager
def when_connected(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` once the write made inside this block has a database connection to be
    written on (the writer's, or the caller's own), before the write itself: a stream starts its
    upstream call only then (Turn.write_opening_beside), so that a database that cannot be reached
    fails it before the upstream is paid, without a connection taken just to find that out."""
    token = _connected_callback.set(callback)
    try:
        yield
    finally:
        _connected_callback.reset(token)


def connected() -> None:
    """The write under way in this context has its connection (the ORM's writes say so themselves)."""
    if (callback := _connected_callback.get()) is not None:
        callback()


class _Statement:
    __slots__ = ("connected", "done", "error", "lock_key", "params", "sql")

    def __init__(self, sql: str, params: Sequence[Any], lock_key: str) -> None:
        self.sql = sql
        self.params = params
        self.lock_key = lock_key
        self.connected = _connected_callback.get()
        self.done = threading.Event()  # cooperative: used only in a gevent-patched worker
        self.error: BaseException | None = None


class GroupCommit:
    """One per worker process (`group_commit()`): statements waiting to be written, and the writer
    greenlets that write them. Writers are started as the load needs them (up to MAX_WRITERS) and
    then kept, holding a pooled connection only while they write: a greenlet started per batch
    cost 0.3-0.5 ms of CPU per request at concurrency 10 (its start, and the Django connection
    object each new greenlet builds)."""

    def __init__(self) -> None:
        self._queue: deque[_Statement] = deque()
        self._writers = 0
        self._idle: list[threading.Event] = []  # each idle writer's wake-up
        self._warm: dict[threading.Event, Any] = {}  # an idle writer's wake-up -> the connection it keeps

    def execute(self, sql: str, params: Sequence[Any], *, lock_key: str = "") -> None:
        """Run one statement in a batch, and return once it is committed (or raise its error).
        `lock_key`: the conversation row it updates, if any (the order of a batch)."""
        # The caller's own connection (an API key's lookup) would sit idle in the meantime; the
        # caller is outside a transaction (group_commit()).
        db_connection.release()
        statement = _Statement(sql, params, lock_key)
        self._queue.append(statement)
        if self._idle:
            self._idle.pop().set()
        elif self._writers < MAX_WRITERS:
            self._writers += 1
            concurrency.start(self._run, name="gateway-group-commit")
        # else every writer is busy, and each looks at the queue again before it rests.
        statement.done.wait()
        if statement.error is not None:
            raise statement.error

    def warm_connection_alive(self) -> bool:
        """Whether an idle writer keeps a connection that Postgres has not closed: the database was
        there a moment ago and still is, as far as a checkout's own check could tell."""
        return any(is_quiet(raw) for raw in self._warm.values())

    def _run(self) -> None:
        wake = threading.Event()
        try:
            while True:
                while self._queue:
                    batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
                    self._write(batch)
                # Cooperative scheduling: nothing runs between the look at the queue and the wait.
                if connection.connection is not None and self._rest(wake, WARM_FOR, connection.connection):
                    continue
                _close_quietly()  # the connection goes back to the pool while the writer rests
                if self._queue:  # it came while the connection was being given back
                    continue
                self._rest(wake, None, None)
        finally:
            self._writers -= 1
            if wake in self._idle:
                self._idle.remove(wake)
            self._warm.pop(wake, None)

    def _rest(self, wake: threading.Event, seconds: float | None, keeping: Any) -> bool:
        """Wait to be woken (True) or for `seconds` (False), as an idle writer keeping `keeping`."""
        wake.clear()
        self._idle.append(wake)
        if keeping is not None:
            self._warm[wake] = keeping
        try:
            woken = wake.wait(seconds)
        finally:
            self._warm.pop(wake, None)
        if not woken:
            self._idle.remove(wake)
        return woken

    def _write(self, batch: list[_Statement]) -> None:
        try:
            batch.sort(key=lambda statement: statement.lock_key)
            if connection.connection is not None and not is_quiet(connection.connection):
                _close_quietly()  # kept since the last batch, and closed by Postgres meanwhile
            try:
                connection.ensure_connection()
            except DatabaseError as unavailable:
                _fail(batch, unavailable)
                return
            for statement in batch:
                if statement.connected is not None:
                    statement.connected()
            if len(batch) < PIPELINE_FROM:
                _run_each(batch, lock_timeout=False)
            elif not _run_together(batch):
                # Each alone, a lock held elsewhere waited for only after all the others are written.
                _run_each(_run_each(batch, lock_timeout=True), lock_timeout=False)
        except BaseException as failure:
            # A bug, or the worker being stopped: nobody may wait forever on a statement.
            _fail([statement for statement in batch if not statement.done.is_set()], failure)
            if not isinstance(failure, Exception):
                raise
            logger.exception("group commit: a batch could not be written")


def _run_together(batch: list[_Statement]) -> bool:
    """The batch as one implicit transaction in one round trip. False when Postgres refused it: it
    committed nothing, and its statements are still to be run. A connection lost meanwhile fails
    them all, as it would have failed each: whether the transaction committed before the loss
    cannot be known, and running them again could write a turn twice."""
    try:
        _pipeline(batch)
    except DatabaseError as failed:
        lost = _connection_lost()
        _close_quietly()  # whatever state the failure left it in, the pool checks or replaces it
        if lost:
            _fail(batch, failed)
            return True
        logger.info("group commit: a batch of %d failed (%s); its statements run one at a time", len(batch),
                    str(failed).strip())
        return False
    for statement in batch:
        statement.done.set()
    return True


def _run_each(statements: list[_Statement], *, lock_timeout: bool) -> list[_Statement]:
    """Each statement in a transaction of its own; those that gave up waiting for a row lock
    (`lock_timeout`) are returned, still to be run. When no connection can be had for one, it and
    the rest fail with that error at once (a database that is down would refuse each in turn, a
    pool timeout apiece)."""
    held_up = []
    for position, statement in enumerate(statements):
        try:
            connection.ensure_connection()
        except DatabaseError as unavailable:
            _fail(statements[position:], unavailable)
            break
        if not _run(statement, lock_timeout=lock_timeout):
            held_up.append(statement)
    return held_up


def _run(statement: _Statement, *, lock_timeout: bool) -> bool:
    """One statement in a transaction of its own. False when it gave up waiting for a row lock
    (`lock_timeout`): it is still to be run; otherwise it is done, written or failed."""
    try:
        if lock_timeout:
            _pipeline([statement])
        else:
            with connection.cursor() as cursor:
                cursor.execute(statement.sql, statement.params)
    except DatabaseError as failed:
        _close_quietly()
        if lock_timeout and isinstance(failed.__cause__, psycopg.errors.LockNotAvailable):
            return False
        statement.error = failed
    statement.done.set()
    return True


def _connection_lost() -> bool:
    raw = connection.connection
    return raw is None or bool(raw.closed) or bool(getattr(raw, "broken", False))


def _pipeline(statements: list[_Statement]) -> None:
    """Send the statements in one round trip, run as one transaction that waits BATCH_LOCK_TIMEOUT
    at most for any row lock (set_config's local setting lasts until the pipeline's end)."""
    with connection.wrap_database_errors, connection.cursor() as cursor, connection.connection.pipeline():
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [BATCH_LOCK_TIMEOUT])
        for statement in statements:
            cursor.execute(statement.sql, statement.params)


def _fail(statements: list[_Statement], error: BaseException) -> None:
    for statement in statements:
        statement.error = error
        statement.done.set()


def _close_quietly() -> None:
    try:
        connection.close()
    except DatabaseError:
        logger.debug("group commit: closing a failed connection failed", exc_info=True)


_group_commit: GroupCommit | None = None
_owner_pid = 0


def group_commit() -> GroupCommit | None:
    """This worker's group commit, or None where statements run on the caller's connection."""
    global _group_commit, _owner_pid
    if db_connection.in_transaction() or not concurrency.gevent_active():
        return None
    if _group_commit is None or _owner_pid != os.getpid():  # a forked process starts its own writer
        _group_commit, _owner_pid = GroupCommit(), os.getpid()
    return _group_commit


def warm_connection_alive() -> bool:
    """Whether this worker's group commit keeps a live connection (False where there is none)."""
    batcher = group_commit()
    return batcher is not None and batcher.warm_connection_alive()


def execute(sql: str, params: Sequence[Any], *, lock_key: str = "") -> None:
    """Run one write statement: with the worker's group commit where there is one, else here."""
    batcher = group_commit()
    if batcher is not None:
        batcher.execute(sql, params, lock_key=lock_key)
        return
    connection.ensure_connection()
    connected()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
