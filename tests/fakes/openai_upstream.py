"""A fake OpenAI-compatible upstream speaking Chat Completions exactly (JSON and SSE).

Script it per test with `Reply` (text, tool calls, usage, pacing, a cut mid-stream), `Fail`
(an error status with OpenAI's error body) or `Raw` (arbitrary bytes, for malformed answers).
Every request is recorded, so tests assert what the gateway sent upstream.
`quote_tool_result` appends the content of the last `tool` message the request carried to the
text: the final answer of a tool round trip then shows that the tool's result reached the upstream.
For structured output, script the JSON the requested `response_format` schema describes as the text.
A request's `stop` (1 to 4 sequences, else a 400) cuts the text before the first one it contains
(finish_reason `stop`, no tool calls), as the model would have stopped there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Writer
from tests.fakes.steps import Fail, Pacing, Raw, cut_at_stop, wait_first_byte, write_frames, write_raw

__all__ = ["Fail", "FakeOpenAI", "Raw", "Reply"]


@dataclass
class Reply(Pacing):
    text: str = "Hello from the fake upstream."
    # How the text is split into stream chunks; default: word by word.
    chunks: list[str] | None = None
    tool_calls: list[dict[str, str]] = field(default_factory=list)  # {"id", "name", "arguments"}
    refusal: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 11
    completion_tokens: int = 7
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    send_usage: bool = True
    quote_tool_result: bool = False

    def stream_chunks(self) -> list[str]:
        if self.chunks is not None:
            return self.chunks
        if not self.text:
            return []
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }


def last_tool_result(request: dict[str, Any]) -> str:
    """The content of the last `tool` message of a Chat Completions request, as text."""
    results = [m.get("content") for m in request.get("messages") or [] if m.get("role") == "tool"]
    if not results:
        return ""
    content = results[-1]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


class FakeOpenAI(FakeServer):
    name = "openai"

    def __init__(self) -> None:
        super().__init__()
        self.default_step = Reply()

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        if not recorded.path.endswith("/chat/completions"):
            writer.json(404, {"error": {"message": f"no route {recorded.path}", "type": "invalid_request_error",
                                        "param": None, "code": None}})
            return
        if not wait_first_byte(writer, step):
            return
        if isinstance(step, Fail):
            writer.json(step.status, {"error": {"message": step.message, "type": step.type or "server_error",
                                                "param": None, "code": None}}, headers=step.headers)
            return
        if isinstance(step, Raw):
            write_raw(writer, step)
            return
        request = recorded.json or {}
        stop = request.get("stop")
        if isinstance(stop, list) and not 1 <= len(stop) <= 4:
            writer.json(400, {"error": {"message": "Invalid 'stop': expected an array of 1 to 4 strings.",
                                        "type": "invalid_request_error", "param": "stop", "code": "invalid_value"}})
            return
        if step.quote_tool_result:
            step = replace(step, text=step.text + last_tool_result(request))
        text, matched = cut_at_stop(step.text, stop)
        if matched is not None:
            # The model stops at the sequence (left out of the text), as it would without one: `stop`.
            step = replace(step, text=text, chunks=None, tool_calls=[], finish_reason="stop")
        if request.get("stream"):
            self._stream(step, request, writer)
        else:
            writer.json(200, self._completion(step, request))

    @staticmethod
    def _base(request: dict[str, Any], object_: str) -> dict[str, Any]:
        return {"id": "chatcmpl-fake123", "object": object_, "created": int(time.time()),
                "model": request.get("model", "fake-model"), "system_fingerprint": "fp_fake"}

    def _completion(self, step: Reply, request: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": step.text or None, "refusal": step.refusal}
        if step.tool_calls:
            message["tool_calls"] = [
                {"id": call["id"], "type": "function",
                 "function": {"name": call["name"], "arguments": call["arguments"]}}
                for call in step.tool_calls
            ]
        body = self._base(request, "chat.completion")
        body["choices"] = [{"index": 0, "message": message, "finish_reason": step.finish, "logprobs": None}]
        if step.send_usage:
            body["usage"] = step.usage()
        return body

    def _stream(self, step: Reply, request: dict[str, Any], writer: Writer) -> None:
        base = self._base(request, "chat.completion.chunk")

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            return "data: " + json.dumps({**base, "choices": choices, **extra}) + "\n\n"

        frames = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
        content = [chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
                   for piece in step.stream_chunks()]
        if step.refusal:
            content.append(chunk([{"index": 0, "delta": {"refusal": step.refusal}, "finish_reason": None}]))
        for index, call in enumerate(step.tool_calls):
            args = call["arguments"]
            half = len(args) // 2
            content.append(chunk([{"index": 0, "delta": {"tool_calls": [{
                "index": index, "id": call["id"], "type": "function",
                "function": {"name": call["name"], "arguments": ""}}]}, "finish_reason": None}]))
            for piece in (args[:half], args[half:]):
                content.append(chunk([{"index": 0, "delta": {"tool_calls": [{
                    "index": index, "function": {"arguments": piece}}]}, "finish_reason": None}]))
        frames += content
        frames.append(chunk([{"index": 0, "delta": {}, "finish_reason": step.finish}]))
        include_usage = (request.get("stream_options") or {}).get("include_usage")
        if step.send_usage and include_usage:
            frames.append(chunk([], usage=step.usage()))
        frames.append("data: [DONE]\n\n")

        write_frames(writer, frames, step)
