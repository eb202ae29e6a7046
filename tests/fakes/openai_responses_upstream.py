"""A fake OpenAI Responses API (`POST /v1/responses`), JSON and SSE, for `openai` entries with
`api: responses`. Stateless like a `store: false` call: it answers from the request alone. Also
`POST /v1/responses/input_tokens`, which refuses what its params do not have, as OpenAI does."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Writer
from tests.fakes.steps import Count, Fail, Pacing, wait_first_byte, write_frames

# The SDK's InputTokenCountParams: anything else in a count request is a 400.
INPUT_TOKENS_FIELDS = {"conversation", "input", "instructions", "model", "parallel_tool_calls", "personality",
                       "previous_response_id", "reasoning", "text", "tool_choice", "tools", "truncation"}


@dataclass
class Reply(Pacing):
    text: str = "Hello from the fake Responses API."
    tool_calls: list[dict[str, str]] = field(default_factory=list)  # {"call_id", "name", "arguments", "namespace"?}
    # Whole output items sent before the answer, as a real upstream sends reasoning items and hosted
    # tools' calls (e.g. {"type": "reasoning", "id": "rs_1", "encrypted_content": ...}).
    items_before: list[dict[str, Any]] = field(default_factory=list)
    incomplete_reason: str | None = None  # "max_output_tokens" | "content_filter"
    input_tokens: int = 21
    output_tokens: int = 6
    cached_tokens: int = 0
    reasoning_tokens: int = 0



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

    @staticmethod
    def _message(step: Reply) -> dict[str, Any]:
        return {"id": "msg_up1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": step.text, "annotations": []}]}

    def _response(self, step: Reply, request: dict[str, Any], *, done: bool) -> dict[str, Any]:
        output: list[dict[str, Any]] = list(step.items_before) if done else []
        output += [self._message(step)] if step.text and done else []
        if done:
            output += [{"id": f"fc_up{i}", "type": "function_call", "status": "completed", **c}
                       for i, c in enumerate(step.tool_calls)]
        status = "in_progress" if not done else ("incomplete" if step.incomplete_reason else "completed")
        return {
            "id": "resp_up1", "object": "response", "created_at": int(time.time()), "status": status,
            "model": request.get("model"), "output": output, "store": False,
            "incomplete_details": {"reason": step.incomplete_reason} if step.incomplete_reason and done else None,
            "usage": {"input_tokens": step.input_tokens, "output_tokens": step.output_tokens,
                      "total_tokens": step.input_tokens + step.output_tokens,
                      "input_tokens_details": {"cached_tokens": step.cached_tokens},
                      "output_tokens_details": {"reasoning_tokens": step.reasoning_tokens}} if done else None,
        }

    def _frames(self, step: Reply, request: dict[str, Any]) -> list[str]:
        events: list[dict[str, Any]] = [{"type": "response.created",
                                         "response": self._response(step, request, done=False)}]
        index = 0
        for item in step.items_before:
            events.append({"type": "response.output_item.added", "output_index": index, "item": item})
            events.append({"type": "response.output_item.done", "output_index": index, "item": item})
            index += 1
        if step.text:
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": {**self._message(step), "status": "in_progress", "content": []}})
            for word in step.text.split(" "):
                events.append({"type": "response.output_text.delta", "item_id": "msg_up1", "output_index": index,
                               "content_index": 0, "delta": word if word == step.text.split(" ")[0] else " " + word})
            events.append({"type": "response.output_item.done", "output_index": index, "item": self._message(step)})
            index += 1
        for i, call in enumerate(step.tool_calls):
            item = {"id": f"fc_up{i}", "type": "function_call", "status": "in_progress", "call_id": call["call_id"],
                    "name": call["name"], "arguments": "",
                    **({"namespace": call["namespace"]} if call.get("namespace") else {})}
            events.append({"type": "response.output_item.added", "output_index": index + i, "item": item})
            events.append({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                           "output_index": index + i, "delta": call["arguments"]})
        terminal = "response.incomplete" if step.incomplete_reason else "response.completed"
        events.append({"type": terminal, "response": self._response(step, request, done=True)})
        return [f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n"
                for n, e in enumerate(events)]
