"""A turn in Anthropic's shapes: the `Message` object, and the stream's named events.

The id is the stored response's: `resp_<hex>` is answered as `msg_<hex>` (`message_id`), so a
stored call (conversations.store_stateless_calls) is found in the admin under `resp_<hex>`.

Output items become content blocks in order: a message's text (and refusal) parts -> `text`;
function calls -> `tool_use` with the arguments parsed into `input` (a custom tool's call: `input`
is `{"input": <its text>}`); reasoning items -> `thinking`, the summary as its text and the item
in its signature (translate.SIGNATURE_PREFIX) when the upstream gave it encrypted, or the
Anthropic `thinking` / `redacted_thinking` block it carries as an Anthropic upstream sent it; other items
(hosted tools' calls the upstream ran itself, compaction) have no Messages form and are left out.

The stream: `message_start` (empty content, usage 0), a `ping`, then per block
`content_block_start` / `content_block_delta` (text_delta, input_json_delta, thinking_delta,
signature_delta) / `content_block_stop`, then `message_delta` (stop_reason and the usage) and
`message_stop`. A `ping` also stands for each keep-alive while the upstream is silent. A turn that
fails mid-stream (or is cut by a shutdown) ends with `event: error` and Anthropic's error body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from gateway_project import fast_json
from gateway_project.api_errors import ApiError, anthropic_body
from responses_app.pipeline import Turn
from responses_app.providers.anthropic import STOP_REASONS, thinking_block, wire_usage
from surfaces_app.anthropic_messages.translate import signature

logger = logging.getLogger(__name__)


def message_id(response_id: str) -> str:
    return "msg_" + response_id.removeprefix("resp_")


def stop_reason(turn: Turn, output: list[dict[str, Any]]) -> str:
    finish = turn.assembler.finish_reason or "stop"
    if finish == "stop":
        if any(item.get("type") in ("function_call", "custom_tool_call") for item in output):
            return "tool_use"
        if turn.assembler.stop_sequence is not None:
            return "stop_sequence"  # only an Anthropic upstream says which one matched
        if any(part.get("type") == "refusal" for item in output if item.get("type") == "message"
               for part in item.get("content") or []):
            return "refusal"  # an OpenAI upstream's refusal: Anthropic stops with `refusal`
    return STOP_REASONS.get(finish, "end_turn")


def _stop_sequence(turn: Turn, reason: str) -> str | None:
    return turn.assembler.stop_sequence if reason == "stop_sequence" else None


def _usage(turn: Turn) -> dict[str, int]:
    return wire_usage(turn.assembler.usage)


def _tool_input(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("type") == "custom_tool_call":
        return {"input": item.get("input", "")}
    try:
        value = json.loads(item.get("arguments") or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        # The model wrote arguments that are not a JSON object; `input` must be one.
        logger.debug("tool call %s: arguments are not a JSON object, given as {}", item.get("call_id"))
        return {}
    return value


def _thinking(item: dict[str, Any]) -> dict[str, Any] | None:
    """The thinking block for reasoning `item`: the Anthropic block it carries as the upstream made it
    (`thinking` with its own signature, or `redacted_thinking`), else one made from it."""
    if (block := thinking_block(item)) is not None:
        return block
    text = "".join(part.get("text", "") for part in item.get("summary") or [] if isinstance(part, dict))
    sig = signature(item)
    if not text and not sig:
        return None
    return {"type": "thinking", "thinking": text, "signature": sig}


def content_blocks(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for item in output:
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                text = part.get("text") if part.get("type") == "output_text" else part.get("refusal")
                if text:
                    blocks.append({"type": "text", "text": text})
        elif kind in ("function_call", "custom_tool_call"):
            blocks.append({"type": "tool_use", "id": item["call_id"], "name": item["name"],
                           "input": _tool_input(item)})
        elif kind == "reasoning" and (block := _thinking(item)) is not None:
            blocks.append(block)
    return blocks


def message(turn: Turn, response: dict[str, Any]) -> dict[str, Any]:
    """The `Message` for a finished turn (`response`: its Responses object)."""
    output = response.get("output") or []
    reason = stop_reason(turn, output)
    return {
        "id": message_id(turn.response_id), "type": "message", "role": "assistant", "model": turn.request.model,
        "content": content_blocks(output), "stop_reason": reason, "stop_sequence": _stop_sequence(turn, reason),
        "usage": _usage(turn),
    }


# --- the stream --------------------------------------------------------------------------------

def frame(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {fast_json.dumps(event)}\n\n"


PING = frame({"type": "ping"})


def stream_frames(turn: Turn) -> Callable[[dict[str, Any] | None], Iterator[str]]:
    """The stream renderer (responses_app.http_turns.Renderer) of the Messages API."""
    return _Stream(turn).frames


class _Stream:
    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.blocks = 0  # content blocks opened so far: the next one's index
        self.open: dict[Any, int] = {}  # what an open block belongs to -> its index
        self.argued: set[int] = set()  # tool_use blocks that have had an input_json_delta

    def frames(self, event: dict[str, Any] | None) -> Iterator[str]:
        """One Responses event's frames (None: a keep-alive)."""
        if event is None:
            yield PING
            return
        for out in self._translate(event):
            yield frame(out)
            if out["type"] == "message_start":
                yield PING

    def _start(self, key: Any, block: dict[str, Any]) -> list[dict[str, Any]]:
        index = self.blocks
        self.blocks += 1
        self.open[key] = index
        return [{"type": "content_block_start", "index": index, "content_block": block}]

    def _stop(self, key: Any) -> list[dict[str, Any]]:
        index = self.open.pop(key, None)
        return [] if index is None else [{"type": "content_block_stop", "index": index}]

    def _delta(self, key: Any, delta: dict[str, Any]) -> list[dict[str, Any]]:
        index = self.open.get(key)
        return [] if index is None else [{"type": "content_block_delta", "index": index, "delta": delta}]

    def _translate(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event["type"]
        if kind == "response.created":
            turn = self.turn
            return [{"type": "message_start", "message": {
                "id": message_id(turn.response_id), "type": "message", "role": "assistant",
                "model": turn.request.model, "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": wire_usage(None)}}]
        if kind == "response.content_part.added":
            return self._start(("part", event["output_index"], event["content_index"]), {"type": "text", "text": ""})
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            return self._delta(("part", event["output_index"], event["content_index"]),
                               {"type": "text_delta", "text": event["delta"]})
        if kind == "response.content_part.done":
            return self._stop(("part", event["output_index"], event["content_index"]))
        if kind == "response.output_item.added":
            return self._item_added(event["output_index"], event["item"])
        if kind == "response.function_call_arguments.delta":
            return self._arguments(event["output_index"], event["delta"])
        if kind == "response.output_item.done":
            return self._item_done(event["output_index"], event["item"])
        if kind in ("response.completed", "response.incomplete"):
            return self._end(event)
        if kind == "response.failed":
            error = (event["response"].get("error") or {})
            status = 429 if error.get("code") == "rate_limit_exceeded" else 500
            return [anthropic_body(ApiError(status, error.get("message") or "The upstream failed."))]
        return []  # response.in_progress, the `.done` events of parts already closed, ...

    def _item_added(self, output_index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        if item.get("type") in ("function_call", "custom_tool_call"):
            return self._start(("item", output_index), {"type": "tool_use", "id": item["call_id"],
                                                        "name": item.get("name", ""), "input": {}})
        if item.get("type") == "reasoning" and (block := _thinking(item)) is not None:
            # A reasoning item arrives whole: its block opens, is said, and closes at once.
            key = ("item", output_index)
            if block["type"] == "redacted_thinking":
                return self._start(key, block) + self._stop(key)
            events = self._start(key, {"type": "thinking", "thinking": "", "signature": ""})
            if block["thinking"]:
                events += self._delta(key, {"type": "thinking_delta", "thinking": block["thinking"]})
            if block["signature"]:
                events += self._delta(key, {"type": "signature_delta", "signature": block["signature"]})
            return events + self._stop(key)
        return []

    def _arguments(self, output_index: int, fragment: str) -> list[dict[str, Any]]:
        key = ("item", output_index)
        if key in self.open:
            self.argued.add(self.open[key])
        return self._delta(key, {"type": "input_json_delta", "partial_json": fragment})

    def _item_done(self, output_index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        key = ("item", output_index)
        index = self.open.get(key)
        if index is None:
            return []
        events: list[dict[str, Any]] = []
        if index not in self.argued:
            # No fragments were streamed (a custom tool's input is told whole at its end).
            whole = json.dumps(_tool_input(item), separators=(",", ":"))
            if whole != "{}":
                events += self._delta(key, {"type": "input_json_delta", "partial_json": whole})
        return events + self._stop(key)

    def _end(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        response = event["response"]
        events = [stop for key in list(self.open) for stop in self._stop(key)]
        if response["status"] == "incomplete" and response.get("incomplete_details") is None:
            # Cut short with no limit reached (the gateway is shutting down): not an answer to build on.
            return [*events, anthropic_body(ApiError(503, "The gateway is shutting down; retry the request."))]
        reason = stop_reason(self.turn, response.get("output") or [])
        delta = {"stop_reason": reason, "stop_sequence": _stop_sequence(self.turn, reason)}
        return [*events, {"type": "message_delta", "delta": delta, "usage": _usage(self.turn)},
                {"type": "message_stop"}]
