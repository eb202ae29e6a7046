"""A fake Anthropic Messages API (`POST /v1/messages`), JSON and SSE, exactly as Anthropic sends them:
named events `message_start` ... `message_stop` with `ping`s in between, tool_use blocks with
`input_json_delta` fragments, usage with cache counts, and a mid-stream `error` event on request.
Also `POST /v1/messages/count_tokens`, which refuses fields its params do not have, as Anthropic does.

Script it with `Reply`, `Fail` (an error status with Anthropic's error body), `Raw` or `Count`.
A `Reply` can also open with a `thinking` block (streamed as `thinking_delta`s and a closing
`signature_delta`), sent only when the request enabled extended thinking, or a `redacted_thinking`
block, and carry server-tool blocks (`server_tool_use`, `web_search_tool_result`) as
Anthropic's hosted web search sends them. `quote_tool_result` appends the content of the last
`tool_result` block the request carried to the text, so a tool round trip's final answer shows
that the tool's result reached the upstream.

Requests are checked as Anthropic checks them: with `thinking` on, budget_tokens at least 1024 and
below max_tokens, no temperature but 1, no top_p below 0.95, no top_k, no forced tool_choice, no
prefill, and the last assistant turn with a tool call starting with a thinking block this fake
issued (signature and text unchanged); a 400 `invalid_request_error` otherwise. `stop_sequences`
cut the text before the first one it contains (stop_reason `stop_sequence`, `stop_sequence` set).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Writer
from tests.fakes.steps import Count, Fail, Pacing, Raw, cut_at_stop, wait_first_byte, write_frames, write_raw

# What `POST /v1/messages/count_tokens` accepts (Anthropic's MessageCountTokensParams); anything else is a 400.
COUNT_TOKENS_FIELDS = {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
                       "cache_control"}


@dataclass
class Reply(Pacing):
    text: str = "Hello from the fake Anthropic."
    chunks: list[str] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"id", "name", "input"}
    stop_reason: str | None = None
    input_tokens: int = 13
    output_tokens: int = 9
    cache_read: int = 0
    cache_creation: int = 0
    # Streams: send a `ping` before every content block; replace the tail with an `error` event after N frames.
    pings: bool = True
    error_after: int | None = None
    error_type: str = "overloaded_error"
    # Extended thinking: a `thinking` block with its signature, before everything else.
    thinking: str | None = None
    signature: str = "sig-fake-thinking"
    redacted: str | None = None  # a `redacted_thinking` block's data, after the thinking
    stop_sequence: str | None = None  # set by the fake when a request's stop sequence cut the text
    # Blocks of Anthropic-run tools, sent as given after the thinking, e.g. {"type": "server_tool_use",
    # "id": "srvtoolu_1", "name": "web_search", "input": {...}} and {"type": "web_search_tool_result", ...}.
    server_blocks: list[dict[str, Any]] = field(default_factory=list)
    quote_tool_result: bool = False

    def stream_chunks(self) -> list[str]:
        if self.chunks is not None:
            return self.chunks
        words = self.text.split(" ") if self.text else []
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    @property
    def stop(self) -> str:
        return self.stop_reason or ("tool_use" if self.tool_calls else "end_turn")


def last_tool_result(request: dict[str, Any]) -> str:
    """The content of the last `tool_result` block of a Messages request, as text."""
    results = [block.get("content") for message in request.get("messages") or []
               if isinstance(message.get("content"), list)
               for block in message["content"] if block.get("type") == "tool_result"]
    if not results:
        return ""
    content = results[-1]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content or [] if isinstance(block, dict))


def _frame(data: dict[str, Any]) -> str:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"


class FakeAnthropic(FakeServer):
    name = "anthropic"

    def __init__(self) -> None:
        super().__init__()
        self.default_step = Reply()
        # The thinking blocks this fake sent, signature -> text: a replayed one must match.
        self.issued: dict[str, str] = {}

    # What the count endpoint answers unless a test scripts a `Count`.
    default_count = 37

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        if recorded.path == "/v1/messages/count_tokens":
            self._count(recorded, step, writer)
            return
        if recorded.path != "/v1/messages":
            writer.json(404, {"type": "error", "error": {"type": "not_found_error", "message": recorded.path}})
            return
        if not recorded.headers.get("x-api-key") or recorded.headers.get("anthropic-version") != "2023-06-01":
            writer.json(401, {"type": "error",
                              "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
            return
        if not wait_first_byte(writer, step):
            return
        if isinstance(step, Fail):
            error = {"type": step.type or "api_error", "message": step.message}
            writer.json(step.status, {"type": "error", "error": error, "request_id": "req_fake"}, headers=step.headers)
            return
        if isinstance(step, Raw):
            write_raw(writer, step)
            return
        request = recorded.json or {}
        if (refused := self._refusal(request)) is not None:
            writer.json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": refused},
                              "request_id": "req_fake"})
            return
        if step.quote_tool_result:
            step = replace(step, text=step.text + last_tool_result(request))
        text, matched = cut_at_stop(step.text, request.get("stop_sequences"))
        if matched is not None:
            step = replace(step, text=text, chunks=None, tool_calls=[], stop_reason="stop_sequence",
                           stop_sequence=matched)
        if (request.get("thinking") or {}).get("type") != "enabled":
            step = replace(step, thinking=None, redacted=None)  # Claude thinks only when asked to
        elif step.thinking is not None:
            self.issued[step.signature] = step.thinking
        if request.get("stream"):
            write_frames(writer, self._frames(step, request), step)
        else:
            writer.json(200, self._message(step, request))

    def _refusal(self, request: dict[str, Any]) -> str | None:
        """Anthropic's 400 for what it refuses with extended thinking on (see the module doc)."""
        thinking = request.get("thinking")
        if thinking is None:
            return None
        budget = thinking.get("budget_tokens")
        if thinking.get("type") != "enabled" or not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= request.get("max_tokens", 0):
            return "`max_tokens` must be greater than `thinking.budget_tokens`."
        if request.get("temperature", 1) != 1:
            return "`temperature` may only be set to 1 when thinking is enabled."
        if request.get("top_p", 1) < 0.95 or "top_k" in request:
            return "`top_p` must be at least 0.95 and `top_k` is not allowed when thinking is enabled."
        if (request.get("tool_choice") or {}).get("type") in ("any", "tool"):
            return "Thinking may not be enabled when tool_choice forces tool use."
        messages = request.get("messages") or []
        if messages and messages[-1].get("role") == "assistant":
            return "Prefilling the assistant message is not supported when thinking is enabled."
        for message in messages:
            for block in message.get("content") if isinstance(message.get("content"), list) else []:
                if block.get("type") == "thinking" and self.issued.get(block.get("signature")) != block.get("thinking"):
                    return "Invalid `signature` in `thinking` block."
        last: Any = next((m["content"] for m in reversed(messages) if m.get("role") == "assistant"), [])
        if isinstance(last, list) and any(b.get("type") == "tool_use" for b in last) \
                and last[0].get("type") not in ("thinking", "redacted_thinking"):
            return ("Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, "
                    "a final `assistant` message must start with a thinking block.")
        return None

    def _count(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
            writer.json(status, {"type": "error", "error": {"type": kind, "message": message}}, headers=headers)

        request = recorded.json or {}
        if not recorded.headers.get("x-api-key") or recorded.headers.get("anthropic-version") != "2023-06-01":
            error(401, "authentication_error", "invalid x-api-key")
        elif isinstance(step, Fail):
            error(step.status, step.type or "api_error", step.message, step.headers)
        elif isinstance(step, Raw):
            write_raw(writer, step)
        elif extra := sorted(set(request) - COUNT_TOKENS_FIELDS):
            error(400, "invalid_request_error", f"{extra[0]}: Extra inputs are not permitted")
        elif not request.get("model") or not isinstance(request.get("messages"), list):
            error(400, "invalid_request_error", "model and messages are required")
        else:
            count = step.input_tokens if isinstance(step, Count) else self.default_count
            writer.json(200, {"input_tokens": count})

    @staticmethod
    def _usage(step: Reply, *, output: int) -> dict[str, Any]:
        return {"input_tokens": step.input_tokens, "output_tokens": output,
                "cache_read_input_tokens": step.cache_read, "cache_creation_input_tokens": step.cache_creation}

    def _message(self, step: Reply, request: dict[str, Any]) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if step.thinking is not None:
            content.append({"type": "thinking", "thinking": step.thinking, "signature": step.signature})
        if step.redacted is not None:
            content.append({"type": "redacted_thinking", "data": step.redacted})
        content += [dict(block) for block in step.server_blocks]
        content += [{"type": "text", "text": step.text}] if step.text else []
        content += [{"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["input"]}
                    for c in step.tool_calls]
        return {"id": "msg_fake123", "type": "message", "role": "assistant", "model": request.get("model"),
                "content": content, "stop_reason": step.stop, "stop_sequence": step.stop_sequence,
                "usage": self._usage(step, output=step.output_tokens)}

    def _frames(self, step: Reply, request: dict[str, Any]) -> list[str]:
        message = self._message(step, request)
        start = {**message, "content": [], "stop_reason": None, "usage": self._usage(step, output=1)}
        frames = [_frame({"type": "message_start", "message": start})]
        index = 0
        if step.thinking is not None:
            frames.append(_frame({"type": "content_block_start", "index": index,
                                  "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
            frames.append(_frame({"type": "content_block_delta", "index": index,
                                  "delta": {"type": "thinking_delta", "thinking": step.thinking}}))
            frames.append(_frame({"type": "content_block_delta", "index": index,
                                  "delta": {"type": "signature_delta", "signature": step.signature}}))
            frames.append(_frame({"type": "content_block_stop", "index": index}))
            index += 1
        if step.redacted is not None:
            frames.append(_frame({"type": "content_block_start", "index": index,
                                  "content_block": {"type": "redacted_thinking", "data": step.redacted}}))
            frames.append(_frame({"type": "content_block_stop", "index": index}))
            index += 1
        for block in step.server_blocks:
            if block["type"] == "server_tool_use":
                # Like tool_use: the block opens with an empty input, which follows as JSON fragments.
                frames.append(_frame({"type": "content_block_start", "index": index,
                                      "content_block": {**block, "input": {}}}))
                frames.append(_frame({"type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(block.get("input") or {})}}))
            else:
                frames.append(_frame({"type": "content_block_start", "index": index, "content_block": block}))
            frames.append(_frame({"type": "content_block_stop", "index": index}))
            index += 1
        if step.text:
            if step.pings:
                frames.append(_frame({"type": "ping"}))
            frames.append(_frame({"type": "content_block_start", "index": index,
                                  "content_block": {"type": "text", "text": ""}}))
            frames += [_frame({"type": "content_block_delta", "index": index,
                               "delta": {"type": "text_delta", "text": c}})
                       for c in step.stream_chunks()]
            frames.append(_frame({"type": "content_block_stop", "index": index}))
            index += 1
        for call in step.tool_calls:
            if step.pings:
                frames.append(_frame({"type": "ping"}))
            frames.append(_frame({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}}))
            args = json.dumps(call["input"])
            for piece in (args[: len(args) // 2], args[len(args) // 2:]):
                frames.append(_frame({"type": "content_block_delta", "index": index,
                                      "delta": {"type": "input_json_delta", "partial_json": piece}}))
            frames.append(_frame({"type": "content_block_stop", "index": index}))
            index += 1
        frames.append(_frame({"type": "message_delta", "delta": {"stop_reason": step.stop,
                                                                  "stop_sequence": step.stop_sequence},
                              "usage": {"output_tokens": step.output_tokens}}))
        frames.append(_frame({"type": "message_stop"}))
        if step.error_after is not None:
            frames = [*frames[: step.error_after], _frame({"type": "error", "error": {
                "type": step.error_type, "message": "Overloaded"}})]
        return frames
