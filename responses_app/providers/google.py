"""`google` provider type: Gemini `generateContent` and `streamGenerateContent?alt=sse`.

Translation up: `instructions` and system/developer messages become `systemInstruction`; the
assistant is the `model` role; function calls and their outputs become `functionCall` /
`functionResponse` parts. Gemini pairs a response with its call by function *name*, not by id,
so the name is looked up from the replayed `function_call` item with the same `call_id`.

Translation down: Gemini's function calls often carry no id, so the gateway mints the `call_id`
(`call_…`). Every streamed `data:` line is a whole `GenerateContentResponse`; usage and the
finish reason come on the last one. Thinking tokens are reasoning tokens, counted as output.

Thought signatures: a thinking model signs its function calls (`thoughtSignature` on the part),
and Gemini 3 refuses a history whose function calls come back unsigned. The signature is passed
on as a `reasoning` item just before the call, its `encrypted_content` the signature behind the
prefix `SIGNATURE_PREFIX`; clients keep reasoning items (the chain stores them; Codex and the
Agents SDK replay them), and on the way up the signature is put back on the call that follows
it. Other providers never see such an item (providers.openai_responses drops it). A call that has
no signature (made by another model, or replayed without its reasoning item) gets Google's
documented placeholder for Gemini 3 and later models, which would refuse it otherwise.

Tools (providers.tooling): function, custom and namespaced tools become function declarations;
the hosted `web_search` becomes Gemini's Google Search grounding (`google_search`); other hosted
tools follow the entry's `unsupported_tools` policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

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
    TextDelta,
    Usage,
)
from responses_app.providers.tooling import Toolset, history_call, live_web_search, tool_call, unsupported
from responses_app.providers.translate import (
    arguments_object,
    guess_media_type,
    merge_turn,
    output_text,
    parse_data_url,
    system_text,
    text_of,
)

DEFAULT_ENDPOINT = "https://generativelanguage.googleapis.com/v1beta"

_FILTERED = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}


def _user_part(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "input_text":
        return {"text": part["text"]}
    if kind in ("input_image", "input_file"):
        url = part.get("image_url") or part.get("file_data") or part.get("file_url")
        if url is None:
            raise ProviderError("bad_request", f"{kind} parts with a file_id are not supported by Gemini upstreams.")
        if (data := parse_data_url(url)) is not None:
            return {"inlineData": {"mimeType": data[0], "data": data[1]}}
        default = "image/jpeg" if kind == "input_image" else "application/pdf"
        return {"fileData": {"mimeType": guess_media_type(url, default), "fileUri": url}}
    return None


# Marks a reasoning item that carries a Gemini thought signature (see the module docstring).
SIGNATURE_PREFIX = "gemini-thought-signature:"
# Google's documented stand-in for a signature a replayed function call never had.
UNSIGNED = "skip_thought_signature_validator"


def _function_response(output: Any) -> dict[str, Any]:
    text = output_text(output)
    # Gemini wants an object; a tool that already answered with a JSON object is passed as is.
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"output": text}


def signature_of(item: dict[str, Any]) -> str | None:
    """The Gemini thought signature a reasoning item carries, if it is one of ours."""
    content = item.get("encrypted_content")
    if item.get("type") == "reasoning" and isinstance(content, str) and content.startswith(SIGNATURE_PREFIX):
        return content[len(SIGNATURE_PREFIX):]
    return None


def signature_item(signature: str) -> dict[str, Any]:
    return {"id": new_id("rs"), "type": "reasoning", "summary": [], "encrypted_content": SIGNATURE_PREFIX + signature}


def to_contents(items: list[dict[str, Any]], *, sign_calls: bool = False) -> list[dict[str, Any]]:
    names = {item["call_id"]: history_call(item)[0] for item in items
             if item.get("type") in ("function_call", "custom_tool_call")}
    contents: list[dict[str, Any]] = []
    signature: str | None = None  # for the next function call
    for item in items:
        kind = item.get("type")
        if kind == "reasoning":
            signature = signature_of(item)
            continue
        if kind == "message":
            role = item["role"]
            if role in ("system", "developer"):
                continue  # hoisted into systemInstruction
            if role == "assistant":
                text = text_of(item["content"])
                merge_turn(contents, "model", [{"text": text}] if text else [], key="parts")
            else:
                parts = [p for p in (_user_part(part) for part in item["content"]) if p is not None]
                merge_turn(contents, "user", parts, key="parts")
        elif kind in ("function_call", "custom_tool_call"):
            name, arguments = history_call(item)
            part: dict[str, Any] = {"functionCall": {"name": name, "args": arguments_object(arguments)}}
            if signature is not None:
                part["thoughtSignature"] = signature
                signature = None
            merge_turn(contents, "model", [part], key="parts")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            called = names.get(item["call_id"])
            if called is None:
                raise ProviderError("bad_request", f"No function_call with call_id {item['call_id']!r} precedes its "
                                    "function_call_output; Gemini needs the function's name.")
            part = {"functionResponse": {"name": called, "response": _function_response(item["output"])}}
            merge_turn(contents, "user", [part], key="parts")
    if sign_calls:
        _sign_unsigned_calls(contents)
    return contents


def _sign_unsigned_calls(contents: list[dict[str, Any]]) -> None:
    """Gemini 3 refuses a model turn whose (first) function call has no signature. Calls that never
    had one (made by another model, or replayed by a client that dropped reasoning items) get the
    placeholder Google documents for that case."""
    for content in contents:
        if content["role"] != "model":
            continue
        calls = [part for part in content["parts"] if "functionCall" in part]
        if calls and not calls[0].get("thoughtSignature"):
            calls[0]["thoughtSignature"] = UNSIGNED


def needs_signatures(model: str) -> bool:
    """Gemini 3 and later validate thought signatures on replayed function calls."""
    match = re.match(r"(?:models/)?gemini-(\d+)", model)
    return match is not None and int(match.group(1)) >= 3


def _tool_config(request: ProviderRequest, toolset: Toolset) -> dict[str, Any] | None:
    choice = request.tool_choice
    if (forced := toolset.named_choice(choice)) is not None:
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [forced]}}
    mode = {"required": "ANY", "none": "NONE", "auto": "AUTO"}.get(choice if isinstance(choice, str) else "auto",
                                                                  "AUTO")
    return {"functionCallingConfig": {"mode": mode}}


def build_payload(request: ProviderRequest, *, provider: str = "google",
                  unsupported_tools: str = "drop") -> dict[str, Any]:
    toolset = Toolset.of(request.tools)
    search = [tool for tool in toolset.hosted if live_web_search(tool)]
    unsupported(request, provider, unsupported_tools, [tool for tool in toolset.hosted if tool not in search])
    payload: dict[str, Any] = {"contents": to_contents(request.items, sign_calls=needs_signatures(request.model))}
    if system := system_text(request.instructions, request.items):
        payload["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.max_output_tokens is not None:
        config["maxOutputTokens"] = request.max_output_tokens
    if request.stop:
        config["stopSequences"] = request.stop
    fmt = request.text_format
    if fmt and fmt.get("type") == "json_schema":
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = fmt["schema"]
    elif fmt and fmt.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    if config:
        payload["generationConfig"] = config
    tools: list[dict[str, Any]] = []
    if toolset.functions:
        tools.append({"functionDeclarations": [
            {k: v for k, v in {"name": spec.name, "description": spec.description,
                               "parametersJsonSchema": spec.parameters}.items() if v is not None}
            for spec in toolset.functions
        ]})
        payload["toolConfig"] = _tool_config(request, toolset)
    if search:
        tools.append({"google_search": {}})
    if tools:
        payload["tools"] = tools
    return payload


def parse_usage(meta: dict[str, Any] | None) -> Usage | None:
    if not meta:
        return None
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(meta.get("promptTokenCount") or 0),
        output_tokens=int(meta.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(meta.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _finish(reason: str | None, called: bool) -> FinishReason:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if called else "stop"


class _Answer:
    """Turns a sequence of GenerateContentResponse chunks (one for generate, many for a stream) into events."""

    def __init__(self, toolset: Toolset) -> None:
        self.toolset = toolset
        self.calls = 0
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.blocked = False

    def feed(self, chunk: dict[str, Any]) -> Iterator[Event]:
        if (usage := parse_usage(chunk.get("usageMetadata"))) is not None:
            self.usage = usage  # cumulative: the last one counts
        candidates = chunk.get("candidates") or []
        if not candidates and (chunk.get("promptFeedback") or {}).get("blockReason"):
            self.blocked = True
        for candidate in candidates[:1]:
            for part in (candidate.get("content") or {}).get("parts") or []:
                if part.get("thought"):
                    continue  # thought summaries are not part of the answer
                if part.get("text"):
                    yield TextDelta(part["text"])
                elif "functionCall" in part:
                    if part.get("thoughtSignature"):
                        yield OutputItem(signature_item(part["thoughtSignature"]))
                    call = part["functionCall"] or {}
                    yield tool_call(self.toolset, self.calls, call.get("id") or new_id("call"), call.get("name"),
                                    json.dumps(call.get("args") or {}))
                    self.calls += 1
            if candidate.get("finishReason"):
                self.finish_reason = candidate["finishReason"]

    def end(self) -> Iterator[Event]:
        if self.usage is not None:
            yield self.usage
        yield Finish("content_filter" if self.blocked else _finish(self.finish_reason, self.calls > 0))


class GoogleProvider(Provider):
    type = "google"

    def __init__(self, key: str, entry: Any) -> None:
        super().__init__(key, entry)
        self.base = (entry.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.upstream = http.Upstream(self.base)
        self.timeout = http.Timeouts.of(entry)

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Accept": "application/json", "x-goog-api-key": self.entry.api_key}

    def _post(self, request: ProviderRequest, method: str, *, stream: bool) -> http.UpstreamResponse:
        url = f"{self.base}/models/{quote(request.model, safe='')}:{method}"
        payload = build_payload(request, provider=self.key, unsupported_tools=self.entry.unsupported_tools)
        return http.post(self.upstream, self.key, url, payload=payload, headers=self.headers(),
                         timeout=self.timeout, stream=stream,
                         cancel=request.cancel)

    def generate(self, request: ProviderRequest) -> Iterator[Event]:
        with self._post(request, "generateContent", stream=False) as response:
            body = http.read_json(self.key, response)
        if "candidates" not in body and "promptFeedback" not in body:
            raise ProviderError("upstream", f"Provider {self.key!r} answered without candidates.")
        answer = _Answer(Toolset.of(request.tools))
        events = list(answer.feed(body))
        events += answer.end()
        return iter(events)

    def stream(self, request: ProviderRequest) -> Iterator[Event]:
        response = self._post(request, "streamGenerateContent?alt=sse", stream=True)
        try:
            answer = _Answer(Toolset.of(request.tools))
            for _name, data in http.sse_events(self.key, response):
                chunk = http.parse_data(self.key, data)
                if chunk.get("error"):
                    message = (chunk["error"] or {}).get("message", "")
                    raise ProviderError("upstream", f"Provider {self.key!r} reported an error mid-stream: {message}")
                yield from answer.feed(chunk)
            if answer.finish_reason is None and not answer.blocked:
                raise ProviderError("upstream", f"Provider {self.key!r} ended the stream without a finishReason.")
            yield from answer.end()
        finally:
            response.close()

    def count_input_tokens(self, request: ProviderRequest) -> int:
        """Gemini's own count: `models/{model}:countTokens` with the whole `generateContentRequest`
        (so the system instruction and the tools are counted too), answered with `totalTokens`."""
        model = quote(request.model, safe="")
        payload = {"generateContentRequest": {"model": f"models/{request.model}", **build_payload(request)}}
        with http.post(self.upstream, self.key, f"{self.base}/models/{model}:countTokens", payload=payload,
                       headers=self.headers(), timeout=self.timeout, stream=False,
                       cancel=request.cancel) as response:
            body = http.read_json(self.key, response)
        # Proto3 JSON leaves out a zero, so a missing count is 0.
        return http.read_count(self.key, body, "totalTokens", default=0)

    def close(self) -> None:
        self.upstream.close()
