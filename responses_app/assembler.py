"""Turns provider events into Responses output items and the stream events that announce them.

Both the JSON and the SSE path run every answer through `OutputAssembler`, so a non-streamed
response and the `response.completed` of a stream are built by the same code. The event order
is the one the SDK's `responses.stream()` helper insists on (responses-api.md §1c, §3):
item added -> part added -> deltas -> text done -> part done -> item done, each function call its
own item with arguments delta/done.

Text and arguments arrive as many small deltas (10,000 in a long answer): they are collected in
`_Pieces` and joined when their part or item closes, never concatenated delta by delta (which is
quadratic, and ran on the gevent hub that every stream of the worker shares).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from responses_app.ids import new_id
from responses_app.providers.base import Event, Finish, OutputItem, RefusalDelta, TextDelta, ToolCallDelta, Usage

StreamEvent = dict[str, Any]


class _Pieces:
    """Text that arrives in small deltas, held compactly until it is read whole. Each delta is a str
    object of its own, about 50 bytes of header around a token of 3-4 characters: a stream held its
    answer's deltas as they came, about 60 bytes per token (60 KB per open stream at 1,000 tokens).
    Every `BLOCK` deltas are joined into one string, so an open stream holds about its text's size;
    each character is still copied only twice (into its block, then into the whole)."""

    __slots__ = ("_blocks", "_recent")
    BLOCK = 64

    def __init__(self) -> None:
        self._blocks: list[str] = []
        self._recent: list[str] = []

    def append(self, text: str) -> None:
        recent = self._recent
        recent.append(text)
        if len(recent) >= self.BLOCK:
            self._blocks.append("".join(recent))
            recent.clear()

    def __str__(self) -> str:
        return "".join(self._blocks) + "".join(self._recent)


@dataclass
class _OpenPart:
    kind: str  # "output_text" | "refusal"
    pieces: _Pieces = field(default_factory=_Pieces)


class OutputAssembler:
    def __init__(self, new_id: Callable[[str], str] = new_id) -> None:
        # Mints the id of each output item as it opens (the replay of a stored stream gives the stored ones).
        self._new_id = new_id
        self.output: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None  # the stop sequence that ended the answer, if the upstream said
        self._message: dict[str, Any] | None = None
        self._message_index = -1
        self._part: _OpenPart | None = None
        self._calls: dict[int, int] = {}  # provider tool-call index -> output index
        self._open_calls: list[int] = []
        self._arguments: dict[int, _Pieces] = {}  # output index -> argument fragments, while open

    # --- feeding ---------------------------------------------------------------------------

    def feed(self, event: Event) -> list[StreamEvent]:
        if isinstance(event, TextDelta):
            return self._delta("output_text", event.text)
        if isinstance(event, RefusalDelta):
            return self._delta("refusal", event.text)
        if isinstance(event, ToolCallDelta):
            return self._tool_call(event)
        if isinstance(event, OutputItem):
            return self._whole_item(event.item)
        if isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Finish):
            self.finish_reason = event.reason
            self.stop_sequence = event.stop_sequence
        return []

    def _delta(self, kind: str, text: str) -> list[StreamEvent]:
        if not text:
            return []
        events = self._open_message()
        if self._part is not None and self._part.kind != kind:
            events += self._close_part()
        if self._part is None:
            events += self._open_part(kind)
        self._part.pieces.append(text)  # type: ignore[union-attr]
        message = self._message
        base = {"item_id": message["id"], "output_index": self._message_index,  # type: ignore[index]
                "content_index": len(message["content"]) - 1}  # type: ignore[index]
        if kind == "refusal":
            return [*events, {"type": "response.refusal.delta", **base, "delta": text}]
        return [*events, {"type": "response.output_text.delta", **base, "delta": text, "logprobs": []}]

    def _open_message(self) -> list[StreamEvent]:
        if self._message is not None:
            return []
        self._message = {"id": self._new_id("msg"), "type": "message", "status": "in_progress",
                         "role": "assistant", "content": []}
        self._message_index = len(self.output)
        self.output.append(self._message)
        return [{"type": "response.output_item.added", "output_index": self._message_index,
                 "item": {**self._message, "content": []}}]

    def _open_part(self, kind: str) -> list[StreamEvent]:
        self._part = _OpenPart(kind)
        message = self._message
        assert message is not None  # noqa: S101 - parts open only inside an open message
        part = _render_part(kind, "")
        message["content"].append(part)
        return [{"type": "response.content_part.added", "item_id": message["id"],
                 "output_index": self._message_index, "content_index": len(message["content"]) - 1,
                 "part": dict(part, **({"text": ""} if kind == "output_text" else {"refusal": ""}))}]

    def _close_part(self) -> list[StreamEvent]:
        part, message = self._part, self._message
        if part is None or message is None:
            return []
        self._part = None
        index = len(message["content"]) - 1
        text = str(part.pieces)
        rendered = _render_part(part.kind, text)
        message["content"][index] = rendered
        base = {"item_id": message["id"], "output_index": self._message_index, "content_index": index}
        if part.kind == "refusal":
            done = {"type": "response.refusal.done", **base, "refusal": text}
        else:
            done = {"type": "response.output_text.done", **base, "text": text, "logprobs": []}
        return [done, {"type": "response.content_part.done", **base, "part": rendered}]

    def _close_message(self, status: str) -> list[StreamEvent]:
        if self._message is None:
            return []
        events = self._close_part()
        self._message["status"] = status
        events.append({"type": "response.output_item.done", "output_index": self._message_index,
                       "item": _copy(self._message)})
        self._message = None
        return events

    def _tool_call(self, delta: ToolCallDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if delta.index not in self._calls:
            events += self._close_message("completed")
            call_id = delta.call_id or new_id("call")
            item: dict[str, Any]
            if delta.kind == "custom":
                item = {"id": self._new_id("ctc"), "type": "custom_tool_call", "status": "in_progress",
                        "call_id": call_id, "name": delta.name or "", "input": ""}
            else:
                item = {"id": self._new_id("fc"), "type": "function_call", "status": "in_progress",
                        "call_id": call_id, "name": delta.name or "", "arguments": ""}
            if delta.namespace:
                item["namespace"] = delta.namespace
            self._calls[delta.index] = len(self.output)
            self._open_calls.append(len(self.output))
            self._arguments[len(self.output)] = _Pieces()
            self.output.append(item)
            events.append({"type": "response.output_item.added", "output_index": self._calls[delta.index],
                           "item": dict(item)})
        output_index = self._calls[delta.index]
        item = self.output[output_index]
        if delta.name and not item["name"]:
            item["name"] = delta.name
        if delta.arguments:
            pieces = self._arguments.get(output_index)
            if pieces is None:  # not a new object per delta, as setdefault's default would be
                pieces = self._arguments[output_index] = _Pieces()
            pieces.append(delta.arguments)
            if item["type"] == "function_call":
                # A custom call's input is the `input` member of these arguments: told whole at the end.
                events.append({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                               "output_index": output_index, "delta": delta.arguments})
        return events

    def _whole_item(self, item: dict[str, Any]) -> list[StreamEvent]:
        events = self._close_message("completed")
        output_index = len(self.output)
        self.output.append(item)
        events.append({"type": "response.output_item.added", "output_index": output_index, "item": item})
        if item.get("type") == "compaction":
            # The SDK's ResponseCompactionCompactingEvent, between the item's added and done.
            events.append({"type": "response.compaction.compacting", "item_id": item.get("id"),
                           "output_index": output_index})
        events.append({"type": "response.output_item.done", "output_index": output_index, "item": item})
        return events

    def at_boundary(self, event: Event) -> bool:
        """Whether the answer can end cleanly before `event`: nothing has been said yet, or `event`
        begins a new item after nothing but messages (a steered response ends here, and a response
        with a client tool call must not end without it)."""
        if not isinstance(event, (TextDelta, RefusalDelta, ToolCallDelta, OutputItem)):
            return False
        if not self.output:
            return True
        if any(item["type"] != "message" for item in self.output):
            return False
        if isinstance(event, ToolCallDelta):
            return event.index not in self._calls
        return isinstance(event, OutputItem)

    def end_steered(self) -> list[StreamEvent]:
        """End at a boundary for steering: what was said is complete; the response is `incomplete`
        with reason `steered`."""
        self.finish_reason = "steered"
        return self._close_message("completed")

    # --- ending ----------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return "incomplete" if self.finish_reason in ("length", "content_filter", "steered") else "completed"

    @property
    def incomplete_details(self) -> dict[str, str] | None:
        if self.finish_reason == "steered":
            return {"reason": "steered"}
        if self.finish_reason == "length":
            return {"reason": "max_output_tokens"}
        if self.finish_reason == "content_filter":
            return {"reason": "content_filter"}
        return None

    def finish(self) -> list[StreamEvent]:
        """Close every open item; the answer ended normally (or was cut by a limit)."""
        item_status = "incomplete" if self.status == "incomplete" else "completed"
        events = self._close_message(item_status)
        for output_index in self._open_calls:
            item = self.output[output_index]
            item["status"] = "completed"
            self._join_arguments(output_index)
            if item["type"] == "custom_tool_call":
                events.append({"type": "response.custom_tool_call_input.done", "item_id": item["id"],
                               "output_index": output_index, "input": item["input"]})
            else:
                events.append({"type": "response.function_call_arguments.done", "item_id": item["id"],
                               "name": item["name"], "output_index": output_index, "arguments": item["arguments"]})
            events.append({"type": "response.output_item.done", "output_index": output_index, "item": dict(item)})
        self._open_calls = []
        return events

    def abandon(self) -> None:
        """The answer broke off: keep what arrived, marked incomplete, without announcing it."""
        if self._part is not None and self._message is not None:
            self._message["content"][-1] = _render_part(self._part.kind, str(self._part.pieces))
            self._part = None
        if self._message is not None:
            self._message["status"] = "incomplete"
            self._message = None
        for output_index in self._open_calls:
            self.output[output_index]["status"] = "incomplete"
            self._join_arguments(output_index)
        self._open_calls = []

    def _join_arguments(self, output_index: int) -> None:
        fragments = self._arguments.pop(output_index, None)
        item = self.output[output_index]
        if item["type"] == "custom_tool_call":
            item["input"] = custom_input(str(fragments or ""))
        elif fragments is not None:
            item["arguments"] += str(fragments)


def _render_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "content": [dict(p) for p in item.get("content", [])]}


def custom_input(arguments: str) -> str:
    """A custom tool's input from the arguments of the function it was shown as (providers.tooling):
    the `input` string; whatever else the model wrote, as it wrote it."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments
