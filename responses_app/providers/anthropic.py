"""`anthropic` provider type: the Anthropic Messages API (responses-api.md §2).

Translation up: `instructions` and system/developer messages become the top-level `system`;
consecutive turns of one role are merged (the API wants user/assistant to alternate); function
calls become assistant `tool_use` blocks and their outputs user `tool_result` blocks; images go as
base64 or URL sources. `max_tokens` is required upstream, so a default applies when the client
sent no `max_output_tokens`.

Translation down: text and `tool_use` blocks, streamed (`message_start` ... `message_stop`, with
`ping`s anywhere and a possible mid-stream `error`) or whole. Usage counts cache reads and writes
as input, the way OpenAI counts cached tokens: input = input + cache_read + cache_creation.

Tools (providers.tooling): function, custom and namespaced tools become Anthropic tools; the
hosted `web_search` becomes Anthropic's server-side web search tool; other hosted tools follow
the entry's `unsupported_tools` policy. Structured output (`text.format` json_schema or
json_object), which the Messages API has no parameter for, is a forced call of one more tool,
`gateway_structured_output`, whose input schema is the requested schema: its input, streamed as it
is written, is the answer's text, so `responses.parse` works as on OpenAI.

Stop sequences (Chat's `stop`, Messages' `stop_sequences`) go as `stop_sequences`; a
`stop_sequence` stop says which one matched (`Finish.stop_sequence`).

Extended thinking (docs/providers.md): on when the client asked for it explicitly, Messages'
`thinking.budget_tokens` as sent or a reasoning effort as a budget (THINKING_BUDGETS), with
max_tokens above the budget and without the sampling settings Anthropic refuses then; left off
where Anthropic would refuse it (a forced tool, a prefill, a tool call replayed without its
thinking). `thinking` and `redacted_thinking` blocks come back as reasoning items carrying them
(THINKING_PREFIX, REDACTED_PREFIX) and go back up as those blocks while thinking is on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from responses_app.ids import new_id
from responses_app.providers import http
from responses_app.providers.base import (
    Event,
    Finish,
    FinishReason,
    OutputItem,
    Provider,
    ProviderError,
    ProviderRequest,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from responses_app.providers.tooling import Toolset, history_call, live_web_search, tool_call, unsupported
from responses_app.providers.translate import (
    arguments_object,
    merge_turn,
    output_text,
    parse_data_url,
    system_text,
    text_of,
)

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# The tool a structured-output request is answered through (see the module doc).
OUTPUT_TOOL = "gateway_structured_output"
WEB_SEARCH: dict[str, Any] = {"type": "web_search_20250305", "name": "web_search"}

# Extended thinking (see the module doc): the budget an explicit reasoning effort stands for, and
# Anthropic's smallest budget. `minimal` and `none` (absent here) ask for no thinking.
THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768, "max": 32768}
MIN_THINKING_BUDGET = 1024
# A reasoning item that carries an Anthropic block: a `thinking` block's signature behind
# THINKING_PREFIX in its encrypted_content (its text as the summary), or a `redacted_thinking`
# block's data behind REDACTED_PREFIX. Other providers never see such an item.
THINKING_PREFIX = "anthropic-thinking-signature:"
REDACTED_PREFIX = "anthropic-redacted-thinking:"

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "tool_use": "tool_calls",
    "max_tokens": "length", "model_context_window_exceeded": "length", "refusal": "refusal",
}
# Anthropic stops with `refusal` without saying anything the client could show as the refusal itself.
REFUSAL_TEXT = "The model declined to answer this request."

_ERROR_KINDS = {"overloaded_error": "unavailable", "rate_limit_error": "rate_limited", "api_error": "upstream",
                "invalid_request_error": "bad_request", "authentication_error": "auth", "permission_error": "auth"}


def _user_block(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if url is None:
            raise ProviderError("bad_request",
                                "input_image parts with a file_id are not supported by Anthropic upstreams.")
        if (data := parse_data_url(url)) is not None:
            return {"type": "image", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
        return {"type": "image", "source": {"type": "url", "url": url}}
    if kind == "input_file":
        if part.get("file_data") and (data := parse_data_url(part["file_data"])) is not None:
            return {"type": "document", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
        if part.get("file_url"):
            return {"type": "document", "source": {"type": "url", "url": part["file_url"]}}
        raise ProviderError("bad_request",
                            "input_file parts need file_data (a data: URL) or file_url for Anthropic upstreams.")
    return None


def thinking_item(block: dict[str, Any]) -> dict[str, Any]:
    """The reasoning item an upstream `thinking` or `redacted_thinking` block travels in."""
    if block.get("type") == "redacted_thinking":
        return {"id": new_id("rs"), "type": "reasoning", "summary": [],
                "encrypted_content": REDACTED_PREFIX + str(block.get("data") or "")}
    text = str(block.get("thinking") or "")
    return {"id": new_id("rs"), "type": "reasoning",
            "summary": [{"type": "summary_text", "text": text}] if text else [],
            "encrypted_content": THINKING_PREFIX + str(block.get("signature") or "")}


def thinking_block(item: dict[str, Any]) -> dict[str, Any] | None:
    """The Anthropic block reasoning `item` carries (`thinking_item`); None for any other item."""
    content = item.get("encrypted_content")
    if item.get("type") != "reasoning" or not isinstance(content, str):
        return None
    if content.startswith(REDACTED_PREFIX) and len(content) > len(REDACTED_PREFIX):
        return {"type": "redacted_thinking", "data": content[len(REDACTED_PREFIX):]}
    if content.startswith(THINKING_PREFIX) and len(content) > len(THINKING_PREFIX):
        text = "".join(str(part.get("text") or "") for part in item.get("summary") or [] if isinstance(part, dict))
        return {"type": "thinking", "thinking": text, "signature": content[len(THINKING_PREFIX):]}
    return None


def to_messages(items: list[dict[str, Any]], *, thinking: bool = False) -> list[dict[str, Any]]:
    """`items` as Messages turns; `thinking`: with the thinking blocks the reasoning items carry
    (sent only while thinking is on: Anthropic wants them back then, tool use above all)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "reasoning":
            if thinking and (block := thinking_block(item)) is not None:
                merge_turn(messages, "assistant", [block], key="content")
        elif kind == "message":
            role = item["role"]
            if role in ("system", "developer"):
                continue  # hoisted into `system`
            if role == "assistant":
                text = text_of(item["content"])
                merge_turn(messages, "assistant", [{"type": "text", "text": text}] if text else [], key="content")
            else:
                blocks = [b for b in (_user_block(p) for p in item["content"]) if b is not None]
                merge_turn(messages, "user", blocks, key="content")
        elif kind in ("function_call", "custom_tool_call"):
            name, arguments = history_call(item)
            block = {"type": "tool_use", "id": item["call_id"], "name": name, "input": arguments_object(arguments)}
            merge_turn(messages, "assistant", [block], key="content")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            block = {"type": "tool_result", "tool_use_id": item["call_id"], "content": output_text(item["output"])}
            merge_turn(messages, "user", [block], key="content")
        # Reasoning items made by other upstreams, hosted tools' calls and other items have no
        # Messages form: they are left out on the way up (docs/providers.md).
    return messages


def _tool_choice(request: ProviderRequest, toolset: Toolset, structured: bool) -> dict[str, Any]:
    choice = request.tool_choice
    if (forced := toolset.named_choice(choice)) is not None:
        out: dict[str, Any] = {"type": "tool", "name": forced}
    elif structured and not toolset.functions:
        out = {"type": "tool", "name": OUTPUT_TOOL}
    elif choice == "required" or structured:
        out = {"type": "any"}  # structured: a real tool, or the answer through the output tool
    elif choice == "none":
        out = {"type": "none"}
    else:
        out = {"type": "auto"}
    if request.parallel_tool_calls is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _web_search(tool: dict[str, Any]) -> dict[str, Any]:
    out = dict(WEB_SEARCH)
    location = tool.get("user_location") or {}
    if location:
        out["user_location"] = {"type": "approximate", **{k: v for k, v in location.items()
                                                          if k in ("city", "region", "country", "timezone") and v}}
    domains = (tool.get("filters") or {}).get("allowed_domains")
    if domains:
        out["allowed_domains"] = domains
    return out


def _output_schema(fmt: dict[str, Any]) -> dict[str, Any]:
    return fmt["schema"] if fmt.get("type") == "json_schema" else {"type": "object"}


def build_payload(request: ProviderRequest, *, stream: bool, provider: str = "anthropic",
                  unsupported_tools: str = "drop") -> dict[str, Any]:
    toolset = Toolset.of(request.tools)
    fmt = request.text_format or {}
    structured = fmt.get("type") in ("json_schema", "json_object")
    web = [tool for tool in toolset.hosted if live_web_search(tool)]
    unsupported(request, provider, unsupported_tools, [tool for tool in toolset.hosted if tool not in web])
    payload: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_output_tokens or DEFAULT_MAX_TOKENS,
        "messages": to_messages(request.items, thinking=True),
    }
    if system := system_text(request.instructions, request.items):
        payload["system"] = system
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    tools: list[dict[str, Any]] = [
        {k: v for k, v in {"name": spec.name, "description": spec.description,
                           "input_schema": spec.parameters}.items() if v is not None}
        for spec in toolset.functions
    ]
    tools += [_web_search(tool) for tool in web]
    if structured:
        tools.append({"name": OUTPUT_TOOL, "description": "Give the final answer, as the requested JSON.",
                      "input_schema": _output_schema(fmt)})
    if tools:
        payload["tools"] = tools
        payload["tool_choice"] = _tool_choice(request, toolset, structured)
    if request.stop:
        payload["stop_sequences"] = request.stop
    if request.user:
        payload["metadata"] = {"user_id": request.user}
    if not _think(payload, request, provider):
        payload["messages"] = to_messages(request.items)
    if stream:
        payload["stream"] = True
    return payload


def _thinking_budget(request: ProviderRequest) -> int | None:
    """The thinking tokens the client asked for: Messages' own budget, or an explicit effort's."""
    if request.reasoning_budget is not None:
        return request.reasoning_budget
    reasoning = request.passthrough.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    return THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None


def _refuses_thinking(payload: dict[str, Any]) -> str | None:
    """Why Anthropic would refuse `payload` with thinking on, if it would."""
    choice = (payload.get("tool_choice") or {}).get("type")
    if choice in ("any", "tool"):
        return f"a forced tool call (tool_choice {choice})"
    messages = payload["messages"]
    if messages and messages[-1]["role"] == "assistant":
        return "the last message is the assistant's (a prefill)"
    last: list[dict[str, Any]] = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), [])
    if any(block["type"] == "tool_use" for block in last) and last[0]["type"] not in ("thinking", "redacted_thinking"):
        return "the last assistant turn's tool call was replayed without its thinking block"
    return None


def _think(payload: dict[str, Any], request: ProviderRequest, provider: str) -> bool:
    """Turn extended thinking on in `payload` when the client asked for it and Anthropic would take
    it (docs/providers.md); False when it stays off."""
    budget = _thinking_budget(request)
    if budget is None:
        return False
    if request.max_output_tokens is None:
        payload["max_tokens"] = DEFAULT_MAX_TOKENS + budget  # the answer keeps its default room
    elif budget >= payload["max_tokens"]:
        # The client's limit bounds thinking and answer together (as OpenAI's max_output_tokens does).
        budget = payload["max_tokens"] // 2
    reason = _refuses_thinking(payload)
    if reason is None and budget < MIN_THINKING_BUDGET:
        reason = f"max_output_tokens {payload['max_tokens']} leaves no room for Anthropic's smallest budget"
    if reason is not None:
        payload["max_tokens"] = request.max_output_tokens or DEFAULT_MAX_TOKENS
        logger.debug("Provider %r: extended thinking left out: %s", provider, reason)
        return False
    payload["thinking"] = {"type": "enabled", "budget_tokens": budget}
    # What Anthropic refuses with thinking on: a temperature other than 1, a top_p below 0.95.
    if payload.get("temperature", 1) != 1:
        logger.debug("Provider %r: temperature left out: Anthropic takes none with thinking on", provider)
        del payload["temperature"]
    if payload.get("top_p", 1) < 0.95:
        logger.debug("Provider %r: top_p left out: Anthropic takes none below 0.95 with thinking on", provider)
        del payload["top_p"]
    return True


def parse_usage(usage: dict[str, Any] | None) -> Usage | None:
    if not usage:
        return None
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0) + cache_read + cache_write,
        output_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def wire_usage(usage: Usage | None) -> dict[str, int]:
    """`parse_usage` the other way round, for the gateway's own Messages API
    (surfaces_app.anthropic_messages): Anthropic counts cache reads and writes apart from input."""
    usage = usage or Usage()
    return {
        "input_tokens": max(0, usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


# `_STOP` the other way round (the gateway's Messages API): how an answer that ended for `reason` stopped.
STOP_REASONS: dict[str, str] = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                                "content_filter": "refusal", "refusal": "refusal"}


def _finish(stop_reason: str | None, *, called: bool, stop_sequence: str | None = None) -> list[Event]:
    reason = _STOP.get(stop_reason or "end_turn", "stop")
    if reason == "tool_calls" and not called:
        reason = "stop"  # only the structured-output tool was used: that was the answer
    events: list[Event] = []
    if reason == "refusal":
        events.append(RefusalDelta(REFUSAL_TEXT))
    matched = stop_sequence if stop_reason == "stop_sequence" and isinstance(stop_sequence, str) else None
    events.append(Finish(reason, stop_sequence=matched))
    return events


def _error(provider: str, body: dict[str, Any]) -> ProviderError:
    error = body.get("error") or {}
    kind = _ERROR_KINDS.get(error.get("type", ""), "upstream")
    message = error.get("message") or "unknown error"
    if kind == "bad_request":
        return ProviderError(kind, message)
    return ProviderError(kind, f"Provider {provider!r} reported an error mid-stream: {message}")


class AnthropicProvider(Provider):
    type = "anthropic"

    def __init__(self, key: str, entry: Any) -> None:
        super().__init__(key, entry)
        self.url = (entry.endpoint or DEFAULT_ENDPOINT).rstrip("/") + "/v1/messages"
        self.upstream = http.Upstream(self.url)
        self.timeout = http.Timeouts.of(entry)

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Accept": "application/json", "x-api-key": self.entry.api_key,
                "anthropic-version": self.entry.api_version or DEFAULT_VERSION}

    def _post(self, request: ProviderRequest, *, stream: bool) -> http.UpstreamResponse:
        payload = build_payload(request, stream=stream, provider=self.key,
                                unsupported_tools=self.entry.unsupported_tools)
        return http.post(self.upstream, self.key, self.url, payload=payload, headers=self.headers(),
                         timeout=self.timeout, stream=stream, cancel=request.cancel)

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        with self._post(request, stream=False) as response:
            body = http.read_json(self.key, response)
        if body.get("type") == "error":
            raise _error(self.key, body)
        if not isinstance(body.get("content"), list):
            raise ProviderError("upstream", f"Provider {self.key!r} answered without content.")
        toolset = Toolset.of(request.tools)
        events: list[Event] = []
        calls = 0
        for block in body["content"]:
            if block.get("type") in ("thinking", "redacted_thinking"):
                events.append(OutputItem(thinking_item(block)))
            elif block.get("type") == "text" and block.get("text"):
                events.append(TextDelta(block["text"]))
            elif block.get("type") == "tool_use" and block.get("name") == OUTPUT_TOOL:
                events.append(TextDelta(json.dumps(block.get("input") or {})))
            elif block.get("type") == "tool_use":
                events.append(tool_call(toolset, calls, block.get("id"), block.get("name"),
                                        json.dumps(block.get("input") or {})))
                calls += 1
        if (usage := parse_usage(body.get("usage"))) is not None:
            events.append(usage)
        events += _finish(body.get("stop_reason"), called=calls > 0, stop_sequence=body.get("stop_sequence"))
        return iter(events)

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        response = self._post(request, stream=True)
        try:
            yield from self._stream_events(response, Toolset.of(request.tools))
        finally:
            # Closing mid-answer (client gone, error) drops the upstream connection at once.
            response.close()

    def _stream_events(self, response: Any, toolset: Toolset) -> Iterator[Event]:
        usage: dict[str, Any] = {}
        stop_reason: str | None = None
        stop_sequence: str | None = None
        thinking: dict[int, dict[str, Any]] = {}  # thinking blocks being streamed, by index
        answer_blocks: set[int] = set()  # indexes of the structured-output tool's blocks: answer text
        call_blocks: set[int] = set()  # indexes of client tool calls (not server tools Anthropic runs itself)
        called = False
        events = http.sse_events(self.key, response)
        for _name, data in events:
            event = http.parse_data(self.key, data)
            kind = event.get("type")
            if kind == "message_start":
                usage.update((event.get("message") or {}).get("usage") or {})
                # Input usage is known now: an answer cut short still reports what its prompt cost.
                if (early := parse_usage(usage)) is not None:
                    yield early
            elif kind == "content_block_start":
                block = event.get("content_block") or {}
                index = int(event.get("index", 0))
                if block.get("type") == "thinking":
                    thinking[index] = dict(block)  # its text and signature follow as deltas
                elif block.get("type") == "redacted_thinking":
                    yield OutputItem(thinking_item(block))
                elif block.get("type") == "tool_use" and block.get("name") == OUTPUT_TOOL:
                    answer_blocks.add(index)
                elif block.get("type") == "tool_use":
                    called = True
                    call_blocks.add(index)
                    yield tool_call(toolset, index, block.get("id"), block.get("name"), "")
                elif block.get("type") == "text" and block.get("text"):
                    yield TextDelta(block["text"])
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                index = int(event.get("index", 0))
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield TextDelta(delta["text"])
                elif delta.get("type") == "thinking_delta" and index in thinking:
                    block = thinking[index]
                    block["thinking"] = (block.get("thinking") or "") + (delta.get("thinking") or "")
                elif delta.get("type") == "signature_delta" and index in thinking:
                    thinking[index]["signature"] = delta.get("signature") or ""
                elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                    if index in answer_blocks:
                        yield TextDelta(delta["partial_json"])  # the JSON answer, as it is written
                    elif index in call_blocks:
                        yield ToolCallDelta(index, arguments=delta["partial_json"])
                    # else: a `server_tool_use` (web search Anthropic runs itself): not the client's to run
            elif kind == "content_block_stop":
                if (block := thinking.pop(int(event.get("index", 0)), None)) is not None:
                    yield OutputItem(thinking_item(block))  # whole, once its signature has come
            elif kind == "message_delta":
                stop_reason = (event.get("delta") or {}).get("stop_reason") or stop_reason
                stop_sequence = (event.get("delta") or {}).get("stop_sequence") or stop_sequence
                # output_tokens is cumulative; input and cache counts may be restated here.
                usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            elif kind == "message_stop":
                if (final := parse_usage(usage)) is not None:
                    yield final
                yield from _finish(stop_reason, called=called, stop_sequence=stop_sequence)
                http.drain(events, response)  # the connection goes back to the pool
                return
            elif kind == "error":
                raise _error(self.key, event)
            # `ping` and unknown event types carry nothing to translate.
        raise ProviderError("upstream", f"Provider {self.key!r} ended the stream before message_stop.")

    def count_input_tokens(self, request: ProviderRequest) -> int:
        """Anthropic's own count: `POST /v1/messages/count_tokens` takes the message payload
        without `max_tokens` and the sampling settings, and answers `{"input_tokens": N}`."""
        payload = build_payload(request, stream=False)
        payload = {k: v for k, v in payload.items() if k in COUNT_TOKENS_FIELDS}
        with http.post(self.upstream, self.key, self.url + "/count_tokens", payload=payload, headers=self.headers(),
                       timeout=self.timeout, stream=False, cancel=request.cancel) as response:
            body = http.read_json(self.key, response)
        return http.read_count(self.key, body, "input_tokens")

    def close(self) -> None:
        self.upstream.close()


# What `POST /v1/messages/count_tokens` accepts of a message payload.
COUNT_TOKENS_FIELDS = ("model", "messages", "system", "tools", "tool_choice")
