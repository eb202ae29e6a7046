"""Steering a running response over its WebSocket (`response.steer`), on every provider type: the
gateway owns the queue and starts the successor turn itself (docs/api.md#steering).

    response.steer {previous_response_id: R, input}     while R runs on this connection
      → response.steer.accepted {steer: {id, previous_response_id}}
    R reaches a safe output boundary (before its first output item, or where the model moves from
    a message to its next item, as long as it has called no client tool):
      → R ends `incomplete`, reason `steered`; its upstream call is closed
      → a successor is started on R's lane: R's settings, previous_response_id R, the queued input
        (its `response.created` is the commit point)
    R completes first:
      no client tool call in R  → the same automatic successor
      client tool calls in R    → response.steer.pending {required_input: the outputs R waits for};
                                  the client's next response.create for R gets the queued input
                                  prepended, in submission order, and keeps its own settings
    anything else → response.steer.failed, with the input given back

Queued input lives only on this connection: a closed connection drops it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gateway_project.api_errors import ApiError
from responses_app.ids import new_id
from responses_app.schema import MessageItem

if TYPE_CHECKING:
    from responses_app.pipeline import Turn
    from responses_app.websocket_mode import Lane, Session

logger = logging.getLogger(__name__)

# Queued submissions per response beyond which a steer is refused (`too_many_pending_steers`).
MAX_QUEUED = 8
# Ids of responses that ended on this connection, so a late steer is told why it cannot apply.
REMEMBERED = 256
STEER_FIELDS = frozenset({"previous_response_id", "input"})
PART_TYPES = frozenset({"input_text", "input_image", "input_file"})
# Output items that wait for the client (a tool result or an approval), and the input each needs.
CLIENT_OWNED = {
    "function_call": "function_call_output",
    "custom_tool_call": "custom_tool_call_output",
    "computer_call": "computer_call_output",
    "shell_call": "shell_call_output",
    "local_shell_call": "local_shell_call_output",
    "apply_patch_call": "apply_patch_call_output",
}


@dataclass
class Steer:
    id: str
    previous_response_id: str
    input: Any  # as the client sent it, to give back if it cannot be applied
    items: list[MessageItem]


class Invalid(Exception):
    pass


@dataclass
class Running:
    """A response running on this connection, and the steering queued for it."""

    lane: Lane
    response_id: str
    steerable: bool
    queued: list[Steer] = field(default_factory=list)
    sequence: int = 0
    # Once completed with client tool calls: the outputs it waits for (steer.pending's stubs).
    required: list[dict[str, Any]] = field(default_factory=list)

    def boundary_check(self) -> bool:
        """Asked by the pipeline at each safe output boundary: end the response here?"""
        return bool(self.queued)

    def next_sequence(self) -> int:
        sequence = self.sequence
        self.sequence += 1
        return sequence


class Steering:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.running: dict[str, Running] = {}
        # Completed responses that wait for client tool output, with the steering queued for them.
        self.waiting: dict[str, Running] = {}
        self.ended_ids: deque[str] = deque(maxlen=REMEMBERED)
        # Steering events that concern no response of this connection still need a sequence number.
        self._unattached = Running(lane=None, response_id="", steerable=False)  # type: ignore[arg-type]

    # --- the client's steer ------------------------------------------------------------------

    def steer(self, data: dict[str, Any]) -> None:
        target_id = data.get("previous_response_id")
        given = data.get("input")
        try:
            if set(data) - STEER_FIELDS:
                extra = ", ".join(sorted(set(data) - STEER_FIELDS))
                raise Invalid(f"Unknown parameter for response.steer: {extra}. It takes only 'previous_response_id' "
                              "and 'input'.")
            if not isinstance(target_id, str) or not target_id:
                raise Invalid("'previous_response_id' must name the response to steer.")
            items = steer_items(given)
        except Invalid as problem:
            self._failed(None, str(target_id or ""), given, "invalid_input", str(problem))
            return
        running = self.running.get(target_id)
        if running is None:
            if target_id in self.waiting:
                self._queue_waiting(target_id, given, items)
            elif target_id in self.ended_ids:
                self._failed(None, target_id, given, "response_already_completed",
                             f"Response '{target_id}' has ended and no longer accepts steering input.")
            else:
                self._failed(None, target_id, given, "response_not_found",
                             f"Response '{target_id}' is not running on this connection.")
            return
        if not running.steerable:
            self._failed(None, target_id, given, "steering_not_supported",
                         "Responses bound to a conversation or compacting their context automatically cannot be "
                         "steered.", running)
            return
        self._accept(running, target_id, given, items)

    def _queue_waiting(self, target_id: str, given: Any, items: list[MessageItem]) -> None:
        waiting = self.waiting[target_id]
        steer = self._accept(waiting, target_id, given, items)
        if steer is not None:
            self._pending(steer, waiting)

    def _accept(self, target: Running, target_id: str, given: Any, items: list[MessageItem]) -> Steer | None:
        if len(target.queued) >= MAX_QUEUED:
            self._failed(None, target_id, given, "too_many_pending_steers",
                         f"At most {MAX_QUEUED} steering submissions can wait for one response.", target)
            return None
        steer = Steer(new_id("steer"), target_id, given, items)
        target.queued.append(steer)
        self._send({"type": "response.steer.accepted", "steer": {"id": steer.id, "previous_response_id": target_id}},
                   target)
        return steer

    # --- the running response's life ---------------------------------------------------------

    def started(self, lane: Lane, turn: Turn) -> Running:
        running = Running(lane, turn.response_id,
                          steerable=not (turn.compacts_automatically or turn.api_conversation))
        self.running[turn.response_id] = running
        return running

    def ended(self, lane: Lane, turn: Turn, running: Running) -> None:
        """The response is over: apply or hand back what was queued for it."""
        self.running.pop(turn.response_id, None)
        self.ended_ids.append(turn.response_id)
        if not running.queued:
            return
        status = turn.final_status
        required = required_input(turn.assembler.output) if status == "completed" else []
        if self.session.gone:
            return
        if (status == "incomplete" and turn.steered) or (status == "completed" and not required):
            queued, running.queued = running.queued, []
            self._successor(lane, turn, queued)
        elif status == "completed":
            running.required = required
            self.waiting[turn.response_id] = running
            for steer in running.queued:
                self._pending(steer, running)
        else:
            queued, running.queued = running.queued, []
            for steer in queued:
                self._failed(steer.id, steer.previous_response_id, steer.input, "response_not_active",
                             f"Response '{turn.response_id}' ended {status} before the steering input could be "
                             "applied.", running)

    def _successor(self, lane: Lane, turn: Turn, queued: list[Steer]) -> None:
        from responses_app.websocket_mode import Job

        successor = turn.request.model_copy()
        successor.previous_response_id = turn.response_id
        successor.input_items = [item for steer in queued for item in steer.items]
        successor.passthrough = dict(turn.request.passthrough)
        successor.raw_tools = turn.request.raw_tools
        successor.raw_tool_choice = turn.request.raw_tool_choice
        job = Job(data={}, size=sum(len(str(steer.input)) for steer in queued), inherited=successor,
                  steers=queued)
        lane.queue.appendleft(job)  # next on this lane, before anything the client queued

    def successor_failed(self, job_steers: list[Steer], error: ApiError, stream_id: str | None) -> None:
        for steer in job_steers:
            self._failed(steer.id, steer.previous_response_id, steer.input, "successor_creation_failed",
                         f"The successor response could not be created: {error.message}", stream_id=stream_id)

    def take_queued(self, previous_response_id: Any) -> list[MessageItem]:
        """The steering queued for a completed response that waited for client tool output, which the
        client's response.create for it now brings: it goes first in that request's input."""
        if not isinstance(previous_response_id, str):
            return []
        waiting = self.waiting.pop(previous_response_id, None)
        return [item for steer in waiting.queued for item in steer.items] if waiting else []

    def connection_closed(self) -> None:
        self.running.clear()
        self.waiting.clear()

    # --- events ------------------------------------------------------------------------------

    def _pending(self, steer: Steer, waiting: Running) -> None:
        self._send({"type": "response.steer.pending", "reason": "waiting_for_required_input",
                    "required_input": waiting.required,
                    "steer": {"id": steer.id, "previous_response_id": steer.previous_response_id}}, waiting)

    def _failed(self, steer_id: str | None, target_id: str, given: Any, code: str, message: str,
                running: Running | None = None, *, stream_id: str | None = None) -> None:
        steer: dict[str, Any] = {"previous_response_id": target_id, "input": _given_back(given)}
        if steer_id is not None:
            steer["id"] = steer_id
        self._send({"type": "response.steer.failed", "steer": steer,
                    "error": {"type": "invalid_request_error", "code": code, "message": message}},
                   running, stream_id=stream_id)

    def _send(self, event: dict[str, Any], running: Running | None = None, *, stream_id: str | None = None) -> None:
        from gateway_project.websocket import ConnectionClosed

        numbering = self._unattached
        if running is not None:
            numbering, stream_id = running, running.lane.stream_id
        with contextlib.suppress(ConnectionClosed):
            self.session.send_numbered(event, numbering, stream_id)


def steer_items(given: Any) -> list[MessageItem]:
    """The messages a steer's `input` holds: a string, or user messages whose content is a string or
    input_text / input_image / input_file parts. Anything else is `invalid_input`."""
    if isinstance(given, str):
        if not given:
            raise Invalid("'input' must not be empty.")
        return [MessageItem(role="user", content=given)]
    if not isinstance(given, list) or not given:
        raise Invalid("'input' must be a string or a non-empty array of user messages.")
    items = []
    for index, item in enumerate(given):
        if not isinstance(item, dict) or set(item) - {"type", "role", "content"}:
            raise Invalid(f"input[{index}]: a steering message may only have 'type', 'role' and 'content'.")
        if item.get("type", "message") != "message" or item.get("role") != "user":
            raise Invalid(f"input[{index}]: steering accepts only messages with the 'user' role.")
        content = item.get("content")
        if isinstance(content, list) and any(not isinstance(part, dict) or part.get("type") not in PART_TYPES
                                             for part in content):
            raise Invalid(f"input[{index}].content: parts may only be input_text, input_image or input_file.")
        try:
            items.append(MessageItem.model_validate({"type": "message", "role": "user", "content": content}))
        except ValidationError as exc:
            raise Invalid(f"input[{index}]: {exc.errors()[0]['msg']}") from None
    return items


def _given_back(given: Any) -> Any:
    """A steer's input as response.steer.failed returns it: as sent when it is valid steering input
    (with each message's optional `type` filled in); otherwise, since no valid shape can hold it,
    its JSON text."""
    if isinstance(given, str):
        return given
    try:
        steer_items(given)
    except Invalid:
        return json.dumps(given, separators=(",", ":"))
    return [{"type": "message", **item} for item in given]


def required_input(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stubs of what a completed response waits for from the client."""
    stubs = []
    for item in output:
        kind = CLIENT_OWNED.get(item.get("type", ""))
        if kind is None:
            continue
        stub = {"type": kind, "call_id": item.get("call_id", "")}
        if kind == "function_call_output":
            stub["name"] = item.get("name", "")
        stubs.append(stub)
    return stubs
