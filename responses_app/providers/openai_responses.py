"""`openai` provider entries with `api: responses`: the upstream's own `/v1/responses`.

The gateway still owns storage and chaining: it replays the whole chain as `input` and sends
`store: false`, so the upstream keeps nothing and never sees a `previous_response_id`. Item ids the
gateway minted mean nothing upstream and are dropped; reasoning items are only replayed when they
carry `encrypted_content` (the only form a stateless upstream accepts).

This upstream speaks the client's own API, so the gateway passes on what it does not act on
itself: every tool as sent (custom, namespace, web_search, mcp, types the gateway has never seen),
`tool_choice` as sent, the parameters the gateway does not own (`include`, `reasoning`,
`client_metadata`, ... : the request's `passthrough`), input items of every type (those the
gateway did not build keep their ids: reasoning items need theirs), and output items other than
messages and function calls (reasoning, web_search_call, custom_tool_call, ...) come back whole,
as the upstream made them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from responses_app.providers import http
from responses_app.providers.anthropic import thinking_block
from responses_app.providers.base import (
    Compaction,
    Event,
    Finish,
    FinishReason,
    OutputItem,
    ProviderError,
    ProviderRequest,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from responses_app.providers.google import signature_of
from responses_app.providers.openai_chat import OpenAICompatibleProvider

logger = logging.getLogger(__name__)

# The item types whose ids and statuses the gateway may have minted (responses_app.items): those
# mean nothing upstream. Every other item is passed on exactly as it was sent or received.
_GATEWAY_BUILT = {"message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"}


def _input_item(item: dict[str, Any]) -> dict[str, Any] | None:
    kind = item.get("type")
    if kind == "reasoning" and (not item.get("encrypted_content") or signature_of(item) is not None
                                or thinking_block(item) is not None):
        return None  # nothing to replay, or a Gemini or Anthropic signature that OpenAI could not read
    if kind not in _GATEWAY_BUILT:
        return item
    out = {k: v for k, v in item.items() if k not in ("id", "status")}
    if kind == "message" and item.get("role") == "assistant":
        out["content"] = [{k: v for k, v in p.items() if k != "logprobs"} for p in item["content"]]
    return out


def build_payload(request: ProviderRequest, *, stream: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": request.model,
        "input": [i for i in (_input_item(item) for item in request.items) if i is not None],
        "store": False,
    }
    optional = {"instructions": request.instructions, "temperature": request.temperature, "top_p": request.top_p,
                "max_output_tokens": request.max_output_tokens, "user": request.user}
    payload.update({k: v for k, v in optional.items() if v is not None})
    if request.tools:
        payload["tools"] = [{k: v for k, v in tool.items() if v is not None} for tool in request.tools]
        if request.parallel_tool_calls is not None:
            payload["parallel_tool_calls"] = request.parallel_tool_calls
    if request.tool_choice is not None and (request.tools or request.tool_choice == "none"):
        payload["tool_choice"] = request.tool_choice
    text = {k: v for k, v in {"format": request.text_format, "verbosity": request.verbosity}.items() if v}
    if text:
        payload["text"] = text
    # Everything else the client sent that the gateway does not own, as sent.
    payload.update(request.passthrough)
    if request.stop:
        # The Responses API has no stop sequences: a Chat or Messages client's are not sent.
        logger.debug("stop sequences left out: the Responses API has no such parameter")
    if stream:
        payload["stream"] = True
    return payload


def parse_usage(usage: dict[str, Any] | None) -> Usage | None:
    if not usage:
        return None
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        cache_write_tokens=int((usage.get("input_tokens_details") or {}).get("cache_write_tokens") or 0),
        reasoning_tokens=int((usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def _finish(response: dict[str, Any], called: bool) -> FinishReason:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if called else "stop"


def _failed(provider: str, response: dict[str, Any]) -> ProviderError:
    message = (response.get("error") or {}).get("message") or "the upstream response failed"
    return ProviderError("upstream", f"Provider {provider!r} failed: {message}")


def _terminal(provider: str, response: dict[str, Any], called: bool) -> list[Event]:
    if response.get("status") == "failed":
        raise _failed(provider, response)
    events: list[Event] = []
    if (usage := parse_usage(response.get("usage"))) is not None:
        events.append(usage)
    events.append(Finish(_finish(response, called)))
    return events


class OpenAIResponsesProvider(OpenAICompatibleProvider):
    type = "openai"
    path = "/responses"

    def payload(self, request: ProviderRequest, *, stream: bool) -> dict[str, Any]:
        return build_payload(request, stream=stream)

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        with self._post(request, stream=False) as response:
            body = http.read_json(self.key, response)
        if not isinstance(body.get("output"), list):
            raise ProviderError("upstream", f"Provider {self.key!r} answered without output.")
        events: list[Event] = []
        calls = 0
        for item in body["output"]:
            if item.get("type") == "message":
                for part in item.get("content") or []:
                    if part.get("type") == "output_text" and part.get("text"):
                        events.append(TextDelta(part["text"]))
                    elif part.get("type") == "refusal" and part.get("refusal"):
                        events.append(RefusalDelta(part["refusal"]))
            elif item.get("type") == "function_call":
                events.append(ToolCallDelta(calls, item.get("call_id"), item.get("name"), item.get("arguments") or "",
                                            namespace=item.get("namespace")))
                calls += 1
            else:
                events.append(OutputItem(item))
                calls += item.get("type") == "custom_tool_call"
        events += _terminal(self.key, body, calls > 0)
        return iter(events)

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        response = self._post(request, stream=True)
        try:
            called = False
            events = http.sse_events(self.key, response)
            for _name, data in events:
                if data.strip() == "[DONE]":
                    break
                event = http.parse_data(self.key, data)
                kind = event.get("type")
                if kind == "response.output_text.delta" and event.get("delta"):
                    yield TextDelta(event["delta"])
                elif kind == "response.refusal.delta" and event.get("delta"):
                    yield RefusalDelta(event["delta"])
                elif kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
                    item = event["item"]
                    called = True
                    yield ToolCallDelta(int(event.get("output_index", 0)), item.get("call_id"), item.get("name"),
                                        item.get("arguments") or "", namespace=item.get("namespace"))
                elif kind == "response.output_item.done" and (event.get("item") or {}).get("type") not in (
                        "message", "function_call", None):
                    # Reasoning, hosted tools' calls, custom tool calls: passed on whole, as made.
                    called = called or event["item"]["type"] == "custom_tool_call"
                    yield OutputItem(event["item"])
                elif kind == "response.function_call_arguments.delta" and event.get("delta"):
                    yield ToolCallDelta(int(event.get("output_index", 0)), arguments=event["delta"])
                elif kind in ("response.completed", "response.incomplete", "response.failed"):
                    yield from _terminal(self.key, event.get("response") or {}, called)
                    http.drain(events, response)  # the connection goes back to the pool
                    return
                elif kind == "error":
                    raise ProviderError("upstream", f"Provider {self.key!r} reported an error mid-stream: "
                                        f"{event.get('message') or (event.get('error') or {}).get('message', '')}")
            raise ProviderError("upstream", f"Provider {self.key!r} ended the stream before response.completed.")
        finally:
            response.close()

    def compact(self, request: ProviderRequest) -> Compaction:
        """The upstream's own `POST /v1/responses/compact`: the context as `input` (exactly as create
        would send it), `instructions`, and the compact parameters the client sent, as sent. Its
        output (user messages and its `compaction` item) comes back opaque: the gateway never reads
        the item, and replays it verbatim to this upstream on later turns."""
        payload: dict[str, Any] = {"model": request.model, "input": build_payload(request, stream=False)["input"]}
        if request.instructions is not None:
            payload["instructions"] = request.instructions
        payload.update(request.passthrough)
        with http.post(self.upstream, self.key, self.url + "/compact", payload=payload, headers=self.headers(),
                       timeout=self.timeout, stream=False, cancel=request.cancel) as response:
            body = http.read_json(self.key, response)
        output = body.get("output")
        if not isinstance(output, list) or not all(isinstance(item, dict) for item in output):
            raise ProviderError("upstream", f"Provider {self.key!r} answered the compaction without output.")
        return Compaction(usage=parse_usage(body.get("usage")), output=output)

    def count_input_tokens(self, request: ProviderRequest) -> int:
        """The upstream's own count: `POST /v1/responses/input_tokens` takes the create payload's
        input fields (the same `input`, `instructions`, `tools`, `text`...) and answers
        `{"object": "response.input_tokens", "input_tokens": N}`."""
        payload = {k: v for k, v in build_payload(request, stream=False).items() if k in INPUT_TOKENS_FIELDS}
        with http.post(self.upstream, self.key, self.url + "/input_tokens", payload=payload, headers=self.headers(),
                       timeout=self.timeout, stream=False, cancel=request.cancel) as response:
            body = http.read_json(self.key, response)
        return http.read_count(self.key, body, "input_tokens")


# What `POST /v1/responses/input_tokens` accepts of a create payload (the SDK's InputTokenCountParams).
INPUT_TOKENS_FIELDS = ("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
                       "reasoning", "truncation")
