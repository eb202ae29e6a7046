"""Background responses (`background: true`): the turn outlives the request that created it.

The request opens the turn (its `in_progress` row is committed, so any worker can read it) and
hands it to a runner in this worker process, a greenlet under gunicorn's gevent workers and a
thread elsewhere; then it answers at once: the Response `in_progress` as JSON, or, with `stream:
true`, a stream that *follows* the turn rather than drives it, so the client may hang up and come
back with `GET /v1/responses/{id}?stream=true&starting_after=N` on any worker.

- **Events.** The runner numbers the turn's events as a stream would and appends them to the event
  log (responses_app/event_log.py: in-process, and in Redis when configured). Followers read the
  log; a follower with no log to read (Redis not configured and another process, or the log
  expired) gets the replay rebuilt from the database (responses_app/replay.py).
- **Cancel.** `POST /v1/responses/{id}/cancel` marks the row `cancelled` at once, in the database,
  so the answer holds whichever worker or instance runs the turn and even if none does. The runner
  learns of it directly when the cancel was served by its own process, and otherwise from its
  worker's maintenance loop, which looks up the background turns it runs every half second
  (`poll_cancellations`). It then stops the upstream call and stores what was produced, keeping
  the status `cancelled`. No stream event type says "cancelled": a follower's stream just ends.
- **Death.** A runner dies with its worker: its turn is settled `incomplete` by the worker sweep
  (responses_app/worker_lifecycle.py), like any turn of a dead worker. A follower notices the
  row settled without the log's end and ends its stream with the stored terminal event.
- **Limits.** The rate-limit ticket is settled when the turn ends, not when the request does, so a
  background turn is charged its real usage like any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from django.db import DatabaseError, connections

from conversations_app.store import StoredTurn, release_connection, store
from gateway_project import concurrency
from gateway_project.config import GatewayConfig
from responses_app import event_log as events_module
from responses_app.cancellation import CANCELLED, CancelToken
from responses_app.event_log import END, Entry
from responses_app.pipeline import Turn, turn_events
from responses_app.replay import LIVE, TERMINAL, render_stored
from responses_app.sse import SseEncoder

logger = logging.getLogger(__name__)

# A follower that sees the row settled waits this long for the runner's last events before it
# concludes the runner is gone and ends the stream from the database.
SETTLE_GRACE = 3.0
# How often a follower waiting on a silent log looks at the row.
CHECK_EVERY = 2.0


class RunningHere:
    """The background turns this process runs: response id → the turn's cancel token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, CancelToken] = {}

    def add(self, response_id: str, token: CancelToken) -> None:
        with self._lock:
            self._tokens[response_id] = token

    def discard(self, response_id: str) -> None:
        with self._lock:
            self._tokens.pop(response_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def cancel(self, response_id: str) -> bool:
        with self._lock:
            token = self._tokens.get(response_id)
        return token is not None and token.cancel(CANCELLED)


running_here = RunningHere()


# --- running ----------------------------------------------------------------------------------

def start(turn: Turn) -> None:
    """Hand an opened, stored turn to a runner in this process."""
    events_module.event_log().open(turn.response_id)
    running_here.add(turn.response_id, turn.ctx.cancel)
    if turn.ctx.ticket is not None:
        turn.ctx.ticket.handed_over = True  # settled when the turn ends, not when the request does
    try:
        concurrency.start(_run, turn, name=f"background-{turn.response_id}")
    except BaseException:
        running_here.discard(turn.response_id)
        raise


def _run(turn: Turn) -> None:
    log = events_module.event_log()
    sse = SseEncoder()
    sequence = 0
    try:
        for batch in turn_events(turn, None, turn.route.provider.stream(turn.provider_request())):
            for event in batch:
                if event is not None:  # None is a keep-alive: followers send their own
                    log.append(turn.response_id, sequence, event["type"], sse.frame(event))
                    sequence += 1
    except Exception:
        logger.exception("background response %s failed", turn.response_id)
    finally:
        running_here.discard(turn.response_id)
        log.close(turn.response_id)
        if turn.ctx.ticket is not None:
            turn.ctx.ticket.settle()
        release_connection()
        connections.close_all()  # this greenlet's or thread's own connections


def cancel(response_id: str, owner: str) -> StoredTurn | None:
    """Cancel a background response (see the module docstring); the response as it now stands."""
    stored = store.cancel_response(response_id, owner)
    if stored is not None and stored.status == CANCELLED:
        running_here.cancel(response_id)
    return stored


def poll_cancellations() -> int:
    """Stop the turns running here that another worker or instance cancelled; how many."""
    ids = running_here.ids()
    if not ids:
        return 0
    try:
        cancelled = store.cancelled_among(ids)
    finally:
        release_connection()
    return sum(1 for response_id in cancelled if running_here.cancel(response_id))


# --- following --------------------------------------------------------------------------------

def follow(stored: StoredTurn, *, owner: str, config: GatewayConfig, starting_after: int,
           cancel: CancelToken) -> Iterator[str] | None:
    """The frames of a background response's event log after `starting_after`, following it to
    its end; None when there is no log of it to read here."""
    entries = events_module.event_log().follow(stored.response_id, starting_after, cancel)
    if entries is None:
        return None
    return _frames(entries, stored, owner=owner, config=config, starting_after=starting_after)


def _frames(entries: Iterator[Entry | None], stored: StoredTurn, *, owner: str, config: GatewayConfig,
            starting_after: int) -> Iterator[str]:
    keepalive = config.server.sse_keepalive or None
    last_sequence = starting_after
    quiet_since = time.monotonic()
    checked_at = time.monotonic()
    settled_at: float | None = None
    for entry in entries:
        now = time.monotonic()
        if entry is not None:
            if entry.kind == END:
                return
            last_sequence = entry.sequence
            quiet_since = now
            yield entry.frame
            continue
        if keepalive and now - quiet_since >= keepalive:
            quiet_since = now
            yield SseEncoder().comment("keep-alive")
        if settled_at is not None and now - settled_at >= SETTLE_GRACE:
            # Settled, and the runner has said nothing since: it is gone (its worker died).
            yield from _terminal_from_database(stored.response_id, owner, last_sequence)
            return
        if settled_at is None and now - checked_at >= CHECK_EVERY:
            checked_at = now
            status = _status(stored.response_id, owner)
            if status is None:
                return  # deleted meanwhile
            if status not in LIVE:
                settled_at = now


def _status(response_id: str, owner: str) -> str | None:
    try:
        return store.response_status(response_id, owner)
    except DatabaseError:
        logger.warning("following %s: the database did not answer", response_id, exc_info=True)
        return "in_progress"
    finally:
        release_connection()


def _terminal_from_database(response_id: str, owner: str, last_sequence: int) -> Iterator[str]:
    try:
        stored = store.get_response(response_id, owner)
    finally:
        release_connection()
    if stored is None or stored.status not in TERMINAL:
        return  # deleted, or cancelled: no event says so
    sse = SseEncoder()
    sse.skip_to(last_sequence + 1)
    yield sse.frame({"type": TERMINAL[stored.status], "response": render_stored(stored)})
