"""`GET /v1/responses/{id}?stream=true&starting_after=N`: a stored response, as the stream a client
would have received.

The events are rebuilt from what is stored, by the code that builds live streams: the lifecycle
events carry the Response object as `response_object` renders it, and each output item is fed,
with its stored id, through `OutputAssembler`, so every event has exactly the shape, order and
ids of the live stream's. Text and arguments are not stored delta by delta: each content part is
replayed as one delta (and each function call's arguments as one), so a replay can have fewer
events than the live stream had. `sequence_number`s count the replay's own events from 0, and
`starting_after=N` sends only the events numbered above N (a replay is the same for every reader,
so a client that lost a replay can resume it).

A response still `in_progress` (a stream another worker is running, or a background response)
is followed: `response.created` and `response.in_progress` are sent at once, then the stored
status is polled (0.1 s at first, backing off to 1 s) until the turn settles, with keep-alive
comments as on a live stream; the output and the terminal event follow. Its output is only
written when it settles, so nothing of it can be sent earlier. Every turn settles (the worker
sweep settles the turns of dead workers, and any older than `server.turn_timeout` + 60 s); a
follower still waiting well after that, or whose response is deleted meanwhile, gets an `error`
event and the stream ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from datetime import timedelta
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from conversations_app.store import StoredTurn, release_connection, store
from gateway_project.config import GatewayConfig
from responses_app import worker_lifecycle
from responses_app.assembler import OutputAssembler, StreamEvent
from responses_app.cancellation import CancelToken
from responses_app.providers.base import (
    Event,
    Finish,
    FinishReason,
    OutputItem,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
)
from responses_app.response_object import render_response
from responses_app.sse import SseEncoder

logger = logging.getLogger(__name__)

# Statuses of a turn that has not ended yet.
LIVE = frozenset({"in_progress", "queued"})
# The event that ends the stream of a response settled so. A cancelled response has none: no
# event type in the API says so, and its stream just ends (responses_app/background.py).
TERMINAL = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}

POLL_FIRST = 0.1
POLL_MAX = 1.0
POLL_GROWTH = 1.5
# How long past `server.turn_timeout` a follower waits: the sweep settles such a turn within
# EXPIRY_MARGIN plus one sweep period; twice that is the "something is wrong" line.
FOLLOW_MARGIN = 2 * (worker_lifecycle.EXPIRY_MARGIN + worker_lifecycle.SWEEP_EVERY)

_LIMIT_REASONS: dict[str, FinishReason] = {"max_output_tokens": "length", "content_filter": "content_filter"}


def render_stored(stored: StoredTurn) -> dict[str, Any]:
    """The settled response, as retrieve and the stream's terminal event show it."""
    return _render(stored, live=False)


def _render(stored: StoredTurn, *, live: bool) -> dict[str, Any]:
    settings = {**stored.settings, "previous_response_id": stored.previous_response_id}
    if live:  # as the live stream's response.created and response.in_progress showed it
        return render_response(response_id=stored.response_id, created_at=stored.created_at, status="in_progress",
                               model=stored.model, instructions=stored.instructions, settings=settings, output=[],
                               usage=None)
    return render_response(
        response_id=stored.response_id, created_at=stored.created_at, status=stored.status, model=stored.model,
        instructions=stored.instructions, settings=settings, output=stored.output_items, usage=stored.usage,
        error=stored.error, incomplete_details=stored.incomplete_details, completed_at=stored.completed_at,
    )


def opening_events(stored: StoredTurn) -> list[StreamEvent]:
    response = _render(stored, live=True)
    return [{"type": "response.created", "response": response},
            {"type": "response.in_progress", "response": response}]


def _deltas(item: dict[str, Any], index: int) -> list[Event] | None:
    """The provider events that make the assembler build `item`; None for an item it does not build."""
    if item.get("type") == "message" and item.get("role") == "assistant":
        events: list[Event] = []
        for part in item.get("content") or []:
            if part.get("type") == "output_text" and part.get("text"):
                events.append(TextDelta(part["text"]))
            elif part.get("type") == "refusal" and part.get("refusal"):
                events.append(RefusalDelta(part["refusal"]))
            else:
                return None
        return events
    if item.get("type") == "function_call":
        return [ToolCallDelta(index, item.get("call_id"), item.get("name"), item.get("arguments") or "")]
    if item.get("type") == "compaction":
        return [OutputItem(item)]  # announced as the live stream did, its `compacting` event included
    return None


def _output_events(stored: StoredTurn) -> list[StreamEvent]:
    """The events that announced the stored output in the live stream, rebuilt by feeding it through
    the live stream's assembler with the stored ids.

    A live stream that ran to its end (completed, or cut by a length or content limit) closed every
    item; one that broke off (the upstream failed, the turn was cut short) left its open items
    `incomplete` and unannounced past their last delta."""
    output = stored.output_items
    limit = None
    if stored.status == "incomplete" and stored.incomplete_details:
        limit = _LIMIT_REASONS.get(str(stored.incomplete_details.get("reason")))
    # The ids the assembler mints, in order: messages' and calls' (a whole item brings its own).
    ids = iter([str(item.get("id")) for item in output if item.get("type") != "compaction"])
    assembler = OutputAssembler(new_id=lambda _prefix: next(ids, ""))
    events: list[StreamEvent] = []
    for index, item in enumerate(output):
        deltas = _deltas(item, index)
        if deltas is None:
            return _announced_whole(output)
        for delta in deltas:
            events += assembler.feed(delta)
    finished = (stored.status == "completed" or limit is not None
                or all(item.get("status") == "completed" for item in output))
    if finished:
        assembler.feed(Finish(limit or "stop"))
        events += assembler.finish()
    else:
        assembler.abandon()
    # An output the assembler would not have built so (a shape from elsewhere) is announced whole.
    return events if assembler.output == output else _announced_whole(output)


def _announced_whole(output: list[dict[str, Any]]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for index, item in enumerate(output):
        opened = {**item, "status": "in_progress"}
        if isinstance(item.get("content"), list):
            opened["content"] = []
        events += [{"type": "response.output_item.added", "output_index": index, "item": opened},
                   {"type": "response.output_item.done", "output_index": index, "item": item}]
    return events


def closing_events(stored: StoredTurn) -> list[StreamEvent]:
    """The output items' events and the terminal event of a settled response."""
    if stored.status not in TERMINAL:
        return _output_events(stored)
    terminal = {"type": TERMINAL[stored.status], "response": _render(stored, live=False)}
    return [*_output_events(stored), terminal]


def error_event(message: str, code: str) -> StreamEvent:
    """An `error` event in the form the spec (flat), OpenResponses (nested) and the SDK all read."""
    return {"type": "error", "code": code, "message": message, "param": None,
            "error": {"type": "server_error", "code": code, "message": message, "param": None}}


def replay(stored: StoredTurn, *, owner: str, config: GatewayConfig, starting_after: int,
           cancel: CancelToken) -> Iterator[str]:
    """The SSE frames of `stored`'s replay after event `starting_after` (-1: all), following it
    to its end while it is still running."""
    sse = SseEncoder()
    numbered = -1

    def send(events: list[StreamEvent]) -> Iterator[str]:
        nonlocal numbered
        for event in events:
            frame = sse.frame(event)  # numbers every event, sent or not
            numbered += 1
            if numbered > starting_after:
                yield frame

    yield from send(opening_events(stored))
    if stored.status in LIVE:
        outcome = yield from _follow(stored, owner=owner, config=config, cancel=cancel)
        if isinstance(outcome, str):
            if outcome:
                yield from send([error_event(*_FOLLOW_ERRORS[outcome])])
            return
        stored = outcome
    yield from send(closing_events(stored))


_FOLLOW_ERRORS = {
    "gone": ("The response was deleted while it was being followed.", "response_not_found"),
    "expired": ("The response has not ended in the time any response may run; retrieve it later.",
                "response_still_in_progress"),
}


def _follow(stored: StoredTurn, *, owner: str, config: GatewayConfig,
            cancel: CancelToken) -> Generator[str, None, StoredTurn | str]:
    """Wait for a running turn to settle, sending keep-alive comments. Returns the settled turn,
    or why not: 'gone', 'expired', or '' (the client left)."""
    release_connection()  # never hold a pooled connection through the wait
    keepalive = config.server.sse_keepalive or None
    give_up_at = stored.created_at + timedelta(seconds=config.server.turn_timeout + FOLLOW_MARGIN)
    delay = POLL_FIRST
    quiet_since = time.monotonic()
    while True:
        if cancel.sleep(delay):
            return ""
        delay = min(POLL_MAX, delay * POLL_GROWTH)
        try:
            status = store.response_status(stored.response_id, owner)
            settled = store.get_response(stored.response_id, owner) if status not in LIVE else None
        except DatabaseError:
            logger.warning("following response %s: the database did not answer; polling on", stored.response_id,
                           exc_info=True)
            continue
        finally:
            release_connection()
        if status is None or (status not in LIVE and settled is None):
            return "gone"
        if settled is not None:
            return settled
        if timezone.now() > give_up_at:
            return "expired"
        if keepalive and time.monotonic() - quiet_since >= keepalive:
            quiet_since = time.monotonic()
            yield SseEncoder().comment("keep-alive")
