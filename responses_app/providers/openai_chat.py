"""`openai` provider type: Chat Completions on any OpenAI-compatible endpoint.

Translates canonical Responses items to `messages` (function calls become assistant
`tool_calls`, their outputs `tool` messages, images `image_url` parts), and Chat Completions
answers, streamed or not, back to provider events. Usage is taken from the upstream's own final
`usage` (streams ask for it with `stream_options.include_usage`), never estimated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from responses_app.providers import http
from responses_app.providers.base import (
    Event,
    Finish,
    FinishReason,
    Provider,
    ProviderError,
    ProviderRequest,
    RefusalDelta,
    TextDelta,
    Usage,
)
from responses_app.providers.tooling import Toolset, history_call, tool_call, unsupported

DEFAULT_ENDPOINT = "https://api.openai.com/v1"

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                                    "function_call": "tool_calls", "content_filter": "content_filter"}


_TEXT_PARTS = frozenset(("input_text", "output_text"))


def _text_of(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    if len(parts) == 1:  # most messages: one part, and no join (every turn converts its whole chain)
        part = parts[0]
        return part.get("text", "") if part.get("type") in _TEXT_PARTS else ""
    return "".join(p.get("text", "") for p in parts if p.get("type") in _TEXT_PARTS)


def _user_part(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if url is None:
            raise ProviderError("bad_request",
                                "input_image parts with a file_id are not supported by Chat Completions upstreams.")
        return {"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_id", "file_data", "filename") if part.get(k)}
        return {"type": "file", "file": file}
    return None


def to_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item.get("type")
        if kind == "message":
            role, content = item["role"], item["content"]
            if role == "assistant":
                message: dict[str, Any] = {"role": "assistant", "content": _text_of(content) or None}
                refusals = [p["refusal"] for p in content if p.get("type") == "refusal"]
                if refusals:
                    message["refusal"] = "".join(refusals)
                messages.append(message)
            elif role in ("system", "developer"):
                messages.append({"role": role, "content": _text_of(content)})
            elif len(content) == 1 and content[0].get("type") == "input_text":  # most user messages
                messages.append({"role": "user", "content": content[0]["text"]})
            else:
                parts = [p for p in (_user_part(part) for part in content) if p is not None]
                simple = len(parts) == 1 and parts[0]["type"] == "text"
                messages.append({"role": "user", "content": parts[0]["text"] if simple else parts})
        elif kind in ("function_call", "custom_tool_call"):
            name, arguments = history_call(item)
            call = {"id": item["call_id"], "type": "function", "function": {"name": name, "arguments": arguments}}
            last = messages[-1] if messages else None
            # Consecutive calls (and the text before them) are one assistant turn in Chat terms.
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item["output"]
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": output if isinstance(output, str) else _text_of(output)})
        # Reasoning items, hosted tools' calls and other items have no Chat Completions form; they
        # are left out on the way up (docs/providers.md).
    return messages


def build_payload(request: ProviderRequest, *, stream: bool, provider: str = "openai",
                  unsupported_tools: str = "drop") -> dict[str, Any]:
    toolset = Toolset.of(request.tools)
    # Chat Completions has no hosted tools of its own to map to.
    unsupported(request, provider, unsupported_tools, toolset.hosted)
    payload: dict[str, Any] = {"model": request.model, "messages": to_messages(request.instructions, request.items)}
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.max_output_tokens is not None:
        payload["max_completion_tokens"] = request.max_output_tokens
    if request.stop:
        payload["stop"] = request.stop
    if toolset.functions:
        payload["tools"] = [
            {"type": "function", "function": {k: v for k, v in {
                "name": spec.name, "description": spec.description, "parameters": spec.parameters,
                "strict": spec.strict,
            }.items() if v is not None}}
            for spec in toolset.functions
        ]
        if request.parallel_tool_calls is not None:
            payload["parallel_tool_calls"] = request.parallel_tool_calls
    choice = request.tool_choice
    if (forced := toolset.named_choice(choice)) is not None:
        payload["tool_choice"] = {"type": "function", "function": {"name": forced}}
    elif isinstance(choice, str) and (toolset.functions or choice == "none"):
        payload["tool_choice"] = choice
    fmt = request.text_format
    if fmt and fmt.get("type") == "json_schema":
        schema = {"name": fmt["name"], "schema": fmt["schema"]}
        schema.update({k: fmt[k] for k in ("description", "strict") if fmt.get(k) is not None})
        payload["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt and fmt.get("type") == "json_object":
        payload["response_format"] = {"type": "json_object"}
    if request.user:
        payload["user"] = request.user
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


def parse_usage(usage: dict[str, Any] | None) -> Usage | None:
    if not usage:
        return None
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(prompt.get("cached_tokens") or 0),
        reasoning_tokens=int(completion.get("reasoning_tokens") or 0),
    )


class OpenAICompatibleProvider(Provider):
    """The HTTP side every client of an OpenAI-style API shares: base URL + `path`, bearer key,
    one pooled `http.Upstream` per provider entry. Subclasses say what they send (`payload`)."""

    path = ""

    def __init__(self, key: str, entry: Any) -> None:
        super().__init__(key, entry)
        self.url = (entry.endpoint or DEFAULT_ENDPOINT).rstrip("/") + self.path
        self.upstream = http.Upstream(self.url)
        self.timeout = http.Timeouts.of(entry)

    def url_for(self, request: ProviderRequest) -> str:
        return self.url

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.entry.api_key:
            headers["Authorization"] = f"Bearer {self.entry.api_key}"
        return headers

    def payload(self, request: ProviderRequest, *, stream: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _post(self, request: ProviderRequest, *, stream: bool) -> http.UpstreamResponse:
        return http.post(self.upstream, self.key, self.url_for(request), payload=self.payload(request, stream=stream),
                         headers=self.headers(), timeout=self.timeout, stream=stream,
                         cancel=request.cancel)

    def close(self) -> None:
        self.upstream.close()


class OpenAIChatProvider(OpenAICompatibleProvider):
    type = "openai"
    path = "/chat/completions"

    def payload(self, request: ProviderRequest, *, stream: bool) -> dict[str, Any]:
        return build_payload(request, stream=stream, provider=self.key, unsupported_tools=self.entry.unsupported_tools)

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        with self._post(request, stream=False) as response:
            body = http.read_json(self.key, response)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ProviderError("upstream", f"Provider {self.key!r} answered without choices.")
        message = choices[0].get("message") or {}
        events: list[Event] = []
        if message.get("content"):
            events.append(TextDelta(message["content"]))
        if message.get("refusal"):
            events.append(RefusalDelta(message["refusal"]))
        toolset = Toolset.of(request.tools)
        for index, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            events.append(tool_call(toolset, index, call.get("id"), function.get("name"),
                                    function.get("arguments") or ""))
        if (usage := parse_usage(body.get("usage"))) is not None:
            events.append(usage)
        events.append(Finish(_FINISH.get(choices[0].get("finish_reason") or "stop", "stop")))
        return iter(events)

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        response = self._post(request, stream=True)
        toolset = Toolset.of(request.tools)
        finished = False
        try:
            events = http.sse_events(self.key, response)
            for _event, data in events:
                if data.strip() == "[DONE]":
                    if not finished:  # a server that ends with [DONE] alone still said it was done
                        yield Finish("stop")
                    http.drain(events, response)  # the connection goes back to the pool
                    return
                chunk = http.parse_data(self.key, data)
                if chunk.get("error"):
                    raise ProviderError("upstream", f"Provider {self.key!r} reported an error mid-stream: "
                                        f"{(chunk['error'] or {}).get('message', '')}".rstrip(": "))
                for choice in chunk.get("choices") or []:
                    for event in self._choice_events(choice, toolset):
                        finished = finished or isinstance(event, Finish)
                        yield event
                if (usage := parse_usage(chunk.get("usage"))) is not None:
                    yield usage
            if not finished:
                # The connection closed cleanly, but neither a finish_reason nor [DONE] came: cut short.
                raise ProviderError("upstream", f"Provider {self.key!r} ended the stream before the answer "
                                    "was complete.")
        finally:
            # Closing mid-answer (client gone, error) drops the upstream connection at once.
            response.close()

    @staticmethod
    def _choice_events(choice: dict[str, Any], toolset: Toolset) -> Iterator[Event]:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            yield TextDelta(delta["content"])
        if delta.get("refusal"):
            yield RefusalDelta(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            function = call.get("function") or {}
            yield tool_call(toolset, int(call.get("index", 0)), call.get("id"), function.get("name"),
                            function.get("arguments") or "")
        if choice.get("finish_reason"):
            yield Finish(_FINISH.get(choice["finish_reason"], "stop"))
