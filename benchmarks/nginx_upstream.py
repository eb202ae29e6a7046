"""An upstream that costs almost nothing: Debian's nginx answering OpenAI-shaped bodies from memory.

    with NginxUpstream() as upstream:
        POST {upstream.url}/json/v1/chat/completions  -> a chat.completion (JSON)
        POST {upstream.url}/sse/v1/chat/completions   -> chat.completion.chunk events (SSE)
        POST {upstream.url}/json/v1/responses         -> a response (JSON)
        POST {upstream.url}/sse/v1/responses          -> response.* events (SSE)

nginx answers without reading the request body, so the gateway cannot tell it whether to stream;
the prefix (`/json` or `/sse`) chooses instead, and the suite configures one
gateway provider per prefix. The bodies are what OpenAI sends for a short answer (every field the
openai SDK's models carry, usage included), so the gateway's parsing work is real; the test suite
checks that the SDK accepts them in strict mode (tests/benchmarks/). nginx runs as its own process,
unprivileged, on a free loopback port, with its config in a temporary directory, as
tests/e2e/nginx.py runs it in front of gateways.
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks import english
from tests.e2e.nginx import Nginx

MODEL = "gpt-4o-mini-2024-07-18"
CREATED = 1764547200  # fixed: the bodies are constants in nginx's config
WORDS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."]
TEXT = "".join(WORDS)
# An answer of ordinary length (suite.py's `long` scenario): 300 English words, a chunk each when
# streamed. Storing it costs what real answers cost (its items' JSON, the admin's search words).
LONG_WORDS = [(" " if index else "") + word for index, word in enumerate(english.words(300))]
LONG_TEXT = "".join(LONG_WORDS)


def chat_usage(words: list[str] = WORDS) -> dict[str, Any]:
    return {"prompt_tokens": 19, "completion_tokens": len(words), "total_tokens": 19 + len(words),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def chat_completion(words: list[str] = WORDS) -> dict[str, Any]:
    return {"id": "chatcmpl-bench0001", "object": "chat.completion", "created": CREATED, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words), "refusal": None,
                                                 "annotations": []},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": chat_usage(words), "service_tier": "default", "system_fingerprint": "fp_bench"}


def sse(events: list[dict[str, Any]], *, done: bool = False) -> str:
    frames = [f"data: {json.dumps(event, separators=(',', ':'))}\n\n" for event in events]
    return "".join(frames) + ("data: [DONE]\n\n" if done else "")


def chat_stream(words: list[str] = WORDS) -> str:
    """A word per chunk, then the finish chunk and the usage chunk (`stream_options.include_usage`)."""
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": "chatcmpl-bench0001", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
                "service_tier": "default", "system_fingerprint": "fp_bench", "choices": choices, **extra}

    def delta(content: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}

    events = [chunk([delta({"role": "assistant", "content": "", "refusal": None})])]
    events += [chunk([delta({"content": word})]) for word in words]
    events.append(chunk([delta({}, "stop")]))
    events.append(chunk([], usage=chat_usage(words)))
    return sse(events, done=True)


def response_object(status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": "resp_bench0001", "object": "response", "created_at": CREATED, "status": status,
            "background": False, "error": None, "incomplete_details": None, "instructions": None,
            "max_output_tokens": None, "max_tool_calls": None, "model": MODEL, "output": output,
            "parallel_tool_calls": True, "previous_response_id": None, "prompt_cache_key": None,
            "reasoning": {"effort": None, "summary": None}, "safety_identifier": None, "service_tier": "default",
            "store": False, "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto", "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
            "usage": usage, "user": None, "metadata": {}}


def responses_usage() -> dict[str, Any]:
    return {"input_tokens": 19, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": len(WORDS),
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 19 + len(WORDS)}


def message_item(status: str, text: str) -> dict[str, Any]:
    done = status == "completed"
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if done else []
    return {"id": "msg_bench0001", "type": "message", "status": status, "role": "assistant", "content": content}


def response_json() -> dict[str, Any]:
    return response_object("completed", [message_item("completed", TEXT)], responses_usage())


def response_stream() -> str:
    """The events OpenAI sends for one text message, a delta per word."""
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response_object("in_progress", [], None)},
        {"type": "response.in_progress", "response": response_object("in_progress", [], None)},
        {"type": "response.output_item.added", "output_index": 0, "item": message_item("in_progress", "")},
        {"type": "response.content_part.added", "item_id": "msg_bench0001", "output_index": 0, "content_index": 0,
         "part": part},
    ]
    events += [{"type": "response.output_text.delta", "item_id": "msg_bench0001", "output_index": 0,
                "content_index": 0, "delta": word, "logprobs": []} for word in WORDS]
    done_part = {**part, "text": TEXT}
    events += [
        {"type": "response.output_text.done", "item_id": "msg_bench0001", "output_index": 0, "content_index": 0,
         "text": TEXT, "logprobs": []},
        {"type": "response.content_part.done", "item_id": "msg_bench0001", "output_index": 0, "content_index": 0,
         "part": done_part},
        {"type": "response.output_item.done", "output_index": 0, "item": message_item("completed", TEXT)},
        {"type": "response.completed", "response": response_json()},
    ]
    for number, event in enumerate(events):
        event["sequence_number"] = number
    # OpenAI names every event in an `event:` line as well; the SDK reads `data:` alone.
    return "".join(f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"
                   for event in events)


def bodies() -> dict[str, tuple[str, str]]:
    """location -> (content type, body)."""
    return {
        "/json/v1/chat/completions": ("application/json", json.dumps(chat_completion(), separators=(",", ":"))),
        "/sse/v1/chat/completions": ("text/event-stream", chat_stream()),
        "/json/v1/responses": ("application/json", json.dumps(response_json(), separators=(",", ":"))),
        "/sse/v1/responses": ("text/event-stream", response_stream()),
        "/json/long/v1/chat/completions": ("application/json",
                                           json.dumps(chat_completion(LONG_WORDS), separators=(",", ":"))),
        "/sse/long/v1/chat/completions": ("text/event-stream", chat_stream(LONG_WORDS)),
    }


CONFIG = """
    access_log off;  # a log line per request would be a large part of this upstream's cost
    keepalive_requests 1000000;  # the gateway's pooled connections live for the whole run
    keepalive_timeout 300s;
    open_file_cache max=16;      # the bodies stay open: no open() per request
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/bodies;
        types {{ }}
        # The static module refuses POST with 405; error_page turns that into the file itself (an
        # internal GET). `return 200 '...'` would need no file, but nginx caps a config string at 4 KB,
        # less than the Responses stream.
        location /json/ {{ default_type application/json; error_page 405 =200 $uri; }}
        location /sse/ {{ default_type text/event-stream; error_page 405 =200 $uri; }}
    }}
}}
"""


class NginxUpstream(Nginx):
    """tests/e2e/nginx.py's process handling (start, config check, stop), with this config."""

    def __init__(self) -> None:
        super().__init__(upstream_ports=[])

    def config(self) -> str:
        return self.private() + CONFIG.format(dir=self.dir, port=self.port)

    def start(self) -> Nginx:
        for path, (_, body) in bodies().items():
            file = self.dir / "bodies" / path.lstrip("/")
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(body)
        return super().start()

    def __enter__(self) -> NginxUpstream:
        self.start()
        return self
