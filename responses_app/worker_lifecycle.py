"""A worker process's part in keeping every turn settled, whatever happens to the process.

Started by gunicorn's `post_worker_init` hook (gateway_project/gunicorn.conf.py), in each worker:

- **Lease.** The worker holds a `WorkerLease` row, renewed every `HEARTBEAT` seconds; every turn it
  opens is stamped with the lease id. A lease that is gone stale, or whose process no longer exists
  on this host, belongs to a dead worker (SIGKILL, OOM, a crash).
- **Sweep.** At boot and every `SWEEP_EVERY` seconds a worker settles the turns that dead workers
  left `in_progress` (as `incomplete`, with what was stored: the input), and any turn older than
  the longest a turn may run. So an id a client saw in `response.created` always resolves.
- **Deferred settlements.** When the database refused a turn's final write, the turn's settlement
  is kept here and retried on each heartbeat until the database answers again.
- **Cancellations.** Every half second, the background turns this worker runs are looked up, so a
  cancel served by any worker or instance stops them (responses_app/background.py).
- **Shutdown.** When the worker stops accepting (SIGTERM, or `max_requests` recycling), open
  streams run on; only shortly before gunicorn's `graceful_timeout` would kill them mid-write are
  they cancelled (reason `shutdown`), which ends each stream with `response.incomplete` and stores
  it so. The default graceful_timeout is the turn timeout plus a margin, so by default no stream
  that is within its timeouts is ever cut.

Outside gunicorn (tests, `manage.py`) nothing runs by itself: tests call `sweep()` and
`retry_deferred()` directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError
from django.utils import timezone

from conversations_app.store import Lease, release_connection, store
from conversations_app.usage import rollup as usage_rollup
from gateway_project.observability import metrics, metrics_enabled
from responses_app.cancellation import SHUTDOWN, live_turns

logger = logging.getLogger(__name__)

HEARTBEAT = 10.0
SWEEP_EVERY = 30.0
# A lease not renewed for this long belongs to a dead worker (or one that cannot reach the
# database, whose turns could not be settled by it anyway).
STALE_AFTER = 60.0
# A turn can last at most server.turn_timeout; this much more and nobody is running it any more.
EXPIRY_MARGIN = 60.0

_lease_id = ""
# Writes of turns' ends the database refused, retried on each heartbeat (store.finish_turn or
# store.save_turn with their arguments bound).
_deferred: list[Callable[[], object]] = []
_lock = threading.Lock()


def lease_id() -> str:
    """The id turns opened by this process are stamped with ('' outside a gunicorn worker)."""
    return _lease_id


def _new_lease_id() -> str:
    # The process start time tells this pid apart from a later process that reuses it.
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}:{secrets.token_hex(3)}"


def _start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or '' where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


def _alive_here(lease: Lease) -> bool:
    """Whether the lease's process still runs (only meaningful for leases of this host)."""
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    parts = lease.id.split(":")
    started = parts[2] if len(parts) > 3 else ""
    return not started or _start_time(lease.pid) in ("", started)


# --- deferred settlements ----------------------------------------------------------------------

def defer(write: Callable[[], object]) -> None:
    with _lock:
        _deferred.append(write)


def retry_deferred() -> int:
    """Do the writes the database refused earlier; returns how many are still waiting."""
    with _lock:
        waiting = list(_deferred)
        _deferred.clear()
    failed: list[Callable[[], object]] = []
    for write in waiting:
        try:
            write()
            _recovered("deferred")
        except IntegrityError:
            pass  # written already (the first attempt committed after all)
        except DatabaseError:
            failed.append(write)
        finally:
            release_connection()
    if failed:
        with _lock:
            _deferred.extend(failed)
    return len(failed)


# --- the sweep ---------------------------------------------------------------------------------

def sweep() -> int:
    """Settle turns left `in_progress` by dead workers, and expired ones; returns how many."""
    try:
        host = socket.gethostname()
        stale_before = timezone.now() - timedelta(seconds=STALE_AFTER)
        dead = [lease.id for lease in store.leases() if lease.id != _lease_id
                and (lease.heartbeat_at < stale_before or (lease.host == host and not _alive_here(lease)))]
        settled = store.settle_abandoned(dead, "worker_lost")
        store.drop_leases(dead)
        _recovered("worker_lost", settled)
        expired = store.settle_expired(
            timezone.now() - timedelta(seconds=settings.GATEWAY.server.turn_timeout + EXPIRY_MARGIN))
        _recovered("expired", expired)
        if settled or expired:
            logger.warning("settled %d turns of dead workers (%s) and %d expired turns as incomplete",
                           settled, ", ".join(dead) or "none", expired)
        return settled + expired
    finally:
        release_connection()


def _recovered(reason: str, count: int = 1) -> None:
    if count and metrics_enabled():
        metrics.turns_recovered_total.labels(reason).inc(count)


# --- the worker's maintenance loop ------------------------------------------------------------

def start(worker: Any) -> None:
    """gunicorn `post_worker_init`: take a lease and start the maintenance loop."""
    global _lease_id
    _lease_id = _new_lease_id()
    usage_rollup.batched = True  # written by the maintenance loop, not by every turn
    from gateway_project import concurrency

    concurrency.start(_maintain, worker, name="gateway-maintenance")


def stop() -> None:
    """gunicorn `worker_exit` (graceful exit): write what is deferred, give the lease back."""
    try:
        retry_deferred()
        usage_rollup.flush()
        if _lease_id and not _deferred:
            store.drop_leases([_lease_id])
    except DatabaseError:
        logger.warning("could not release lease %s; the next sweep will", _lease_id)
    finally:
        release_connection()


def _maintain(worker: Any) -> None:
    host, pid = socket.gethostname(), os.getpid()
    next_sweep = 0.0
    database_down = False
    while worker.alive:
        try:
            store.renew_lease(_lease_id, host, pid)
            retry_deferred()
            usage_rollup.flush()
            if time.monotonic() >= next_sweep:
                sweep()
                next_sweep = time.monotonic() + SWEEP_EVERY
            if database_down:
                logger.warning("worker maintenance: the database answers again")
            database_down = False
        except DatabaseError as exc:
            if not database_down:
                logger.warning("worker maintenance: database unavailable (%s); retrying", exc)
            database_down = True
        finally:
            release_connection()
        deadline = time.monotonic() + HEARTBEAT
        while worker.alive and time.monotonic() < deadline:
            time.sleep(0.5)
            _poll_cancellations()
    _shut_down(worker.cfg.graceful_timeout)


def _poll_cancellations() -> None:
    """Background turns running here that a request on another worker or instance cancelled."""
    from responses_app import background  # it imports the pipeline, which imports this module

    with contextlib.suppress(DatabaseError):  # the heartbeat reports the database; the next poll retries
        background.poll_cancellations()


def _shut_down(graceful_timeout: float) -> None:
    """The worker stopped accepting. Let open turns finish until shortly before gunicorn's graceful
    timeout would kill them wherever they are, then cancel them so each settles itself."""
    from responses_app import websocket_mode  # it imports the pipeline, which imports this module

    # WebSocket clients are told to reconnect elsewhere (1001) as soon as nothing runs for them.
    websocket_mode.drain_all()
    margin = min(5.0, graceful_timeout / 3)
    cut_at = time.monotonic() + graceful_timeout - margin
    while len(live_turns) and time.monotonic() < cut_at:
        time.sleep(0.2)
    if not len(live_turns):
        return
    cancelled = live_turns.cancel_all(SHUTDOWN)
    logger.warning("shutting down: cut %d open turns short (stored as incomplete)", cancelled)
    give_up = time.monotonic() + margin - 0.5
    while len(live_turns) and time.monotonic() < give_up:
        time.sleep(0.1)
