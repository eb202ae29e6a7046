"""A fake OpenAI Responses API (`POST /v1/responses`), JSON and SSE, for `openai` entries with
`api: responses`. Stateless like a `store: false` call: it answers from the request alone. Also
`POST /v1/responses/input_tokens`, which refuses what its params do not have, as OpenAI does.

Besides text and function calls (namespaced or not), a `Reply` can answer with a reasoning item
(its summary, and its `encrypted_content` only when the request's `include` asks for
`reasoning.encrypted_content`, as OpenAI does) and with whole items before the answer
(`items_before`: reasoning items, hosted tools' calls such as `web_search_call`), streamed with
their own events, so tests assert what the gateway passes through in both directions.
`quote_tool_result` appends the last `function_call_output` the request carried to the text: the
final answer of a tool round trip then shows that the tool's result really reached the upstream.

Compaction as OpenAI does it: `POST /v1/responses/compact` (the params of the SDK's
`ResponseCompactParams` only) answers a `response.compaction` whose output is the input's user
messages followed by one `compaction` item of its own (script its content and usage with
`Compacted`); a create request with `context_management` whose input passes the threshold (a rough
count: a token per 4 bytes of its JSON) starts its output with such an item, streamed as
output_item.added, response.compaction.compacting, output_item.done. Its items are opaque tokens
starting `gAAAA` (Fernet, as OpenAI's are): a `compaction` item whose `encrypted_content` is not
one, on create or compact, is refused with OpenAI's 400, as OpenAI refuses what it cannot decrypt.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Writer
from tests.fakes.steps import Count, Fail, Pacing, wait_first_byte, write_frames

# The SDK's ResponseCompactParams: anything else in a compact request is a 400.
COMPACT_FIELDS = {"model", "input", "instructions", "previous_response_id", "prompt_cache_key", "prompt_cache_options",
                  "prompt_cache_retention", "service_tier", "image"}
# How this fake's (and OpenAI's) opaque compaction content starts.
OWN_ITEMS = "gAAAA"


@dataclass
class Compacted:
    """The answer of `POST /v1/responses/compact`, or the item a create's `context_management` makes."""

    encrypted_content: str = "gAAAAfake-compaction-1"
    input_tokens: int = 40
    output_tokens: int = 12


# The SDK's InputTokenCountParams: anything else in a count request is a 400.
INPUT_TOKENS_FIELDS = {"conversation", "input", "instructions", "model", "parallel_tool_calls", "personality",
                       "previous_response_id", "reasoning", "text", "tool_choice", "tools", "truncation"}


@dataclass
class Reply(Pacing):
    text: str = "Hello from the fake Responses API."
    tool_calls: list[dict[str, str]] = field(default_factory=list)  # {"call_id", "name", "arguments", "namespace"?}
    # Whole output items sent before the answer, as a real upstream sends reasoning items and hosted
    # tools' calls (e.g. {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {...}}).
    items_before: list[dict[str, Any]] = field(default_factory=list)
    incomplete_reason: str | None = None  # "max_output_tokens" | "content_filter"
    input_tokens: int = 21
    output_tokens: int = 6
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # A reasoning item first in the output: its summary text, and the opaque state a stateless
    # caller replays (sent only when the request includes "reasoning.encrypted_content").
    reasoning_summary: str | None = None
    encrypted_content: str | None = None
    quote_tool_result: bool = False
    # What a create's context_management compaction makes, when the input passes its threshold.
    compaction: Compacted = field(default_factory=Compacted)

    @property
    def reasons(self) -> bool:
        return self.reasoning_summary is not None or self.encrypted_content is not None


def last_tool_result(request: dict[str, Any]) -> str:
    """The output of the last `function_call_output` item of a Responses request, as text."""
    items = request.get("input")
    outputs = [item.get("output") for item in items if item.get("type") == "function_call_output"] \
        if isinstance(items, list) else []
    if not outputs:
        return ""
    output = outputs[-1]
    if isinstance(output, str):
        return output
    return "".join(part.get("text", "") for part in output or [] if isinstance(part, dict))


class FakeOpenAIResponses(FakeServer):
    name = "openai-responses"

    def __init__(self) -> None:
        super().__init__()
        self.default_step = Reply()

    # What the count endpoint answers unless a test scripts a `Count`.
    default_count = 23

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        if recorded.path == "/v1/responses/input_tokens":
            self._count(recorded, step, writer)
            return
        if (refused := foreign_compaction(recorded.json or {})) is not None:
            writer.json(400, {"error": {"message": refused, "type": "invalid_request_error", "param": "input",
                                        "code": "invalid_encrypted_content"}})
            return
        if recorded.path == "/v1/responses/compact":
            self._compact(recorded, step, writer)
            return
        if recorded.path != "/v1/responses":
            writer.json(404, {"error": {"message": f"no route {recorded.path}", "type": "invalid_request_error"}})
            return
        if not wait_first_byte(writer, step):
            return
        if isinstance(step, Fail):
            writer.json(step.status, {"error": {"message": step.message, "type": "server_error", "param": None,
                                                "code": None}}, headers=step.headers)
            return
        request = recorded.json or {}
        if step.quote_tool_result:
            step = replace(step, text=step.text + last_tool_result(request))
        if request.get("stream"):
            write_frames(writer, self._frames(step, request), step)
        else:
            writer.json(200, self._response(step, request, done=True))

    def _count(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        def error(status: int, message: str, param: str | None = None) -> None:
            writer.json(status, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                           "code": None}})

        request = recorded.json or {}
        if isinstance(step, Fail):
            writer.json(step.status, {"error": {"message": step.message, "type": "server_error", "param": None,
                                                "code": None}}, headers=step.headers)
        elif extra := sorted(set(request) - INPUT_TOKENS_FIELDS):
            error(400, f"Unknown parameter: '{extra[0]}'.", extra[0])
        else:
            count = step.input_tokens if isinstance(step, Count) else self.default_count
            writer.json(200, {"object": "response.input_tokens", "input_tokens": count})

    def _compact(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        request = recorded.json or {}
        if isinstance(step, Fail):
            writer.json(step.status, {"error": {"message": step.message, "type": "server_error", "param": None,
                                                "code": None}}, headers=step.headers)
            return
        if extra := sorted(set(request) - COMPACT_FIELDS):
            writer.json(400, {"error": {"message": f"Unknown parameter: '{extra[0]}'.", "type": "invalid_request_error",
                                        "param": extra[0], "code": "unknown_parameter"}})
            return
        compacted = step if isinstance(step, Compacted) else Compacted()
        items = request.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        output = [{"id": f"msg_upc{n}", "type": "message", "status": "completed", "role": "user",
                   "content": [{"type": "input_text", "text": item["content"]}] if isinstance(item["content"], str)
                   else item["content"]}
                  for n, item in enumerate(items) if item.get("type", "message") == "message"
                  and item.get("role") == "user"]
        output.append(compaction_item(compacted))
        writer.json(200, {"id": "resp_upcompact", "object": "response.compaction", "created_at": int(time.time()),
                          "output": output, "usage": _usage(compacted.input_tokens, compacted.output_tokens)})

    @staticmethod
    def _message(step: Reply) -> dict[str, Any]:
        return {"id": "msg_up1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": step.text, "annotations": []}]}

    @staticmethod
    def _reasoning(step: Reply, request: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {"id": "rs_up1", "type": "reasoning", "summary": []}
        if step.reasoning_summary:
            item["summary"] = [{"type": "summary_text", "text": step.reasoning_summary}]
        if step.encrypted_content and "reasoning.encrypted_content" in (request.get("include") or []):
            item["encrypted_content"] = step.encrypted_content
        return item

    def _response(self, step: Reply, request: dict[str, Any], *, done: bool) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if done:
            output += [compaction_item(step.compaction)] if compacts(request) else []
            output += [self._reasoning(step, request)] if step.reasons else []
            output += [dict(item) for item in step.items_before]
            output += [self._message(step)] if step.text else []
            output += [{"id": f"fc_up{i}", "type": "function_call", "status": "completed", **c}
                       for i, c in enumerate(step.tool_calls)]
        status = "in_progress" if not done else ("incomplete" if step.incomplete_reason else "completed")
        return {
            "id": "resp_up1", "object": "response", "created_at": int(time.time()), "status": status,
            "model": request.get("model"), "output": output, "store": False,
            "incomplete_details": {"reason": step.incomplete_reason} if step.incomplete_reason and done else None,
            "usage": _usage(step.input_tokens, step.output_tokens, step.cached_tokens,
                            step.reasoning_tokens) if done else None,
        }

    def _frames(self, step: Reply, request: dict[str, Any]) -> list[str]:
        events: list[dict[str, Any]] = [{"type": "response.created",
                                         "response": self._response(step, request, done=False)}]
        index = 0
        if compacts(request):
            item = compaction_item(step.compaction)
            events += [{"type": "response.output_item.added", "output_index": index, "item": item},
                       {"type": "response.compaction.compacting", "item_id": item["id"], "output_index": index},
                       {"type": "response.output_item.done", "output_index": index, "item": item}]
            index += 1
        if step.reasons:
            events += self._reasoning_events(self._reasoning(step, request), index)
            index += 1
        for item in step.items_before:
            events += self._item_events(item, index)
            index += 1
        if step.text:
            message = self._message(step)
            part = message["content"][0]
            where = {"item_id": "msg_up1", "output_index": index, "content_index": 0}
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": {**message, "status": "in_progress", "content": []}})
            events.append({"type": "response.content_part.added", **where, "part": {**part, "text": ""}})
            for word in step.text.split(" "):
                events.append({"type": "response.output_text.delta", **where,
                               "delta": word if word == step.text.split(" ")[0] else " " + word})
            events.append({"type": "response.output_text.done", **where, "text": step.text})
            events.append({"type": "response.content_part.done", **where, "part": part})
            events.append({"type": "response.output_item.done", "output_index": index, "item": message})
            index += 1
        for i, call in enumerate(step.tool_calls):
            item = {"id": f"fc_up{i}", "type": "function_call", "status": "in_progress", "call_id": call["call_id"],
                    "name": call["name"], "arguments": "",
                    **({"namespace": call["namespace"]} if call.get("namespace") else {})}
            events.append({"type": "response.output_item.added", "output_index": index + i, "item": item})
            events.append({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                           "output_index": index + i, "delta": call["arguments"]})
            events.append({"type": "response.function_call_arguments.done", "item_id": item["id"],
                           "output_index": index + i, "arguments": call["arguments"]})
            events.append({"type": "response.output_item.done", "output_index": index + i,
                           "item": {**item, "status": "completed", "arguments": call["arguments"]}})
        terminal = "response.incomplete" if step.incomplete_reason else "response.completed"
        events.append({"type": terminal, "response": self._response(step, request, done=True)})
        return [f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n"
                for n, e in enumerate(events)]

    @staticmethod
    def _reasoning_events(item: dict[str, Any], index: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = [{"type": "response.output_item.added", "output_index": index,
                                         "item": {"id": item.get("id"), "type": "reasoning", "summary": []}}]
        for n, part in enumerate(item.get("summary") or []):
            where = {"item_id": item.get("id"), "output_index": index, "summary_index": n}
            events.append({"type": "response.reasoning_summary_part.added", **where,
                           "part": {"type": "summary_text", "text": ""}})
            events.append({"type": "response.reasoning_summary_text.delta", **where, "delta": part["text"]})
            events.append({"type": "response.reasoning_summary_text.done", **where, "text": part["text"]})
            events.append({"type": "response.reasoning_summary_part.done", **where, "part": part})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        return events

    @classmethod
    def _item_events(cls, item: dict[str, Any], index: int) -> list[dict[str, Any]]:
        if item.get("type") == "reasoning":
            return cls._reasoning_events(item, index)
        events: list[dict[str, Any]] = [{"type": "response.output_item.added", "output_index": index,
                                         "item": {**item, "status": "in_progress"} if "status" in item else item}]
        # A search tool reports its progress in events named after its item type (web_search_call,
        # file_search_call).
        phases = ["in_progress", "searching", "completed"] if item.get("type", "").endswith("search_call") else []
        events += [{"type": f"response.{item['type']}.{phase}", "item_id": item.get("id"), "output_index": index}
                   for phase in phases]
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        return events


def _usage(input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens,
            "input_tokens_details": {"cached_tokens": cached}, "output_tokens_details": {"reasoning_tokens": reasoning}}


def compaction_item(compacted: Compacted) -> dict[str, Any]:
    return {"id": "cmp_up1", "type": "compaction", "encrypted_content": compacted.encrypted_content}


def foreign_compaction(request: dict[str, Any]) -> str | None:
    """Why the request is refused, when it carries a compaction item this upstream did not make."""
    items = request.get("input")
    for index, item in enumerate(items if isinstance(items, list) else []):
        if item.get("type") == "compaction" and not str(item.get("encrypted_content", "")).startswith(OWN_ITEMS):
            return f"The encrypted content of input[{index}] could not be decrypted or parsed."
    return None


def compacts(request: dict[str, Any]) -> bool:
    """A create whose context_management compaction threshold its input has reached (roughly)."""
    entries = request.get("context_management") or []
    thresholds = [e.get("compact_threshold") or 0 for e in entries if e.get("type") == "compaction"]
    return bool(thresholds) and len(json.dumps(request.get("input"))) // 4 >= thresholds[0]
