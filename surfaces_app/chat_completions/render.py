"""A turn in Chat Completions shapes: the Responses object → `chat.completion`, the Responses
stream events → `chat.completion.chunk` frames (`data: {...}`, then `data: [DONE]`).

The completion's id is the turn's response id with Chat's prefix: `resp_<hex>` is `chatcmpl-<hex>`,
so a stored call is found in the admin (and by `GET /v1/responses/resp_<hex>`) from the id the
client was given. Only the Responses object's public shape and the stream's public events are
read here, never the pipeline's internals, so a Chat client is told what a Responses client is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from gateway_project import fast_json
from responses_app.http_turns import Renderer
from responses_app.pipeline import Turn
from responses_app.response_object import unix

CHAT_PREFIX = "chatcmpl-"


def completion_id(response_id: str) -> str:
    return CHAT_PREFIX + response_id.removeprefix("resp_")


def response_id(chat_completion_id: str) -> str:
    """The stored response a chat completion id names (docs/chat-completions.md)."""
    return "resp_" + chat_completion_id.removeprefix(CHAT_PREFIX)


def finish_reason(response: dict[str, Any]) -> str | None:
    """`stop`, `tool_calls`, `length` or `content_filter`; None for a turn cut short for another
    reason (the server shutting down mid-stream), which Chat has no finish reason for."""
    if response["status"] == "completed":
        return "tool_calls" if any(item["type"] == "function_call" for item in response["output"]) else "stop"
    reason = (response.get("incomplete_details") or {}).get("reason")
    return {"max_output_tokens": "length", "content_filter": "content_filter"}.get(reason or "")


def usage(rendered: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Responses `usage` as Chat's CompletionUsage (None: the upstream reported none)."""
    if rendered is None:
        return None
    input_details, output_details = rendered["input_tokens_details"], rendered["output_tokens_details"]
    return {
        "prompt_tokens": rendered["input_tokens"],
        "completion_tokens": rendered["output_tokens"],
        "total_tokens": rendered["total_tokens"],
        "prompt_tokens_details": {"cached_tokens": input_details.get("cached_tokens", 0),
                                  "cache_write_tokens": input_details.get("cache_write_tokens", 0),
                                  "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": output_details.get("reasoning_tokens", 0),
                                      "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def message(output: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message of a Responses output: its text, refusal and function calls (other
    items, e.g. reasoning, have no Chat form)."""
    texts: list[str] = []
    refusals: list[str] = []
    annotations: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for item in output:
        if item["type"] == "message":
            for part in item["content"]:
                if part["type"] == "output_text":
                    annotations += _citations(part.get("annotations") or [], offset=sum(map(len, texts)))
                    texts.append(part["text"])
                elif part["type"] == "refusal":
                    refusals.append(part["refusal"])
        elif item["type"] == "function_call":
            calls.append({"id": item["call_id"], "type": "function",
                          "function": {"name": item["name"], "arguments": item["arguments"]}})
    body: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None,
                            "refusal": "".join(refusals) if refusals else None, "annotations": annotations}
    if calls:
        body["tool_calls"] = calls
    return body


def _citations(annotations: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    return [{"type": "url_citation", "url_citation": {
                "start_index": a["start_index"] + offset, "end_index": a["end_index"] + offset,
                "url": a["url"], "title": a.get("title", "")}}
            for a in annotations if a.get("type") == "url_citation"]


def completion(response: dict[str, Any]) -> dict[str, Any]:
    """The `chat.completion` of a finished turn's Responses object."""
    body: dict[str, Any] = {
        "id": completion_id(response["id"]),
        "object": "chat.completion",
        "created": response["created_at"],
        "model": response["model"],
        "choices": [{"index": 0, "message": message(response["output"]), "logprobs": None,
                     "finish_reason": finish_reason(response) or "length"}],
    }
    if (counted := usage(response["usage"])) is not None:
        body["usage"] = counted
    return body


# --- streams -----------------------------------------------------------------------------------

def _frame(data: dict[str, Any]) -> str:
    return f"data: {fast_json.dumps(data)}\n\n"


DONE = "data: [DONE]\n\n"
KEEP_ALIVE = ": keep-alive\n\n"


class ChunkStream:
    """One turn's Responses events as chat.completion.chunk frames."""

    def __init__(self, turn: Turn, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.base = {"id": completion_id(turn.response_id), "object": "chat.completion.chunk",
                     "created": unix(turn.created_at), "model": turn.request.model}
        self.calls: dict[int, int] = {}  # output index of a function call → its index among tool_calls

    def frames(self, event: dict[str, Any] | None) -> Iterator[str]:
        """One Responses event's frames (None: a keep-alive)."""
        if event is None:
            yield KEEP_ALIVE
            return
        if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
            yield from self._end(event["response"])
            return
        delta = self._delta(event)
        if delta is not None:
            yield self._chunk(delta)

    def _delta(self, event: dict[str, Any]) -> dict[str, Any] | None:
        kind = event["type"]
        if kind == "response.created":
            return {"role": "assistant", "content": "", "refusal": None}
        if kind == "response.output_text.delta":
            return {"content": event["delta"]}
        if kind == "response.refusal.delta":
            return {"refusal": event["delta"]}
        if kind == "response.output_item.added" and event["item"]["type"] == "function_call":
            item = event["item"]
            index = self.calls[event["output_index"]] = len(self.calls)
            # An item the upstream sent whole carries its arguments already; an assembled one gets deltas.
            return {"tool_calls": [{"index": index, "id": item["call_id"], "type": "function",
                                    "function": {"name": item["name"], "arguments": item.get("arguments", "")}}]}
        if kind == "response.function_call_arguments.delta" and event["output_index"] in self.calls:
            return {"tool_calls": [{"index": self.calls[event["output_index"]],
                                    "function": {"arguments": event["delta"]}}]}
        return None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        chunk = {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return _frame(chunk)

    def _end(self, response: dict[str, Any]) -> Iterator[str]:
        reason = finish_reason(response) if response["status"] != "failed" else None
        if reason is None:
            # Failed, or cut short with no Chat reason: an error the SDK raises, and no [DONE].
            error = response.get("error") or {"code": "server_error",
                                              "message": "The response was cut short; retry the request."}
            yield _frame({"error": {"message": error.get("message", ""), "type": "server_error", "param": None,
                                    "code": error.get("code")}})
            return
        yield self._chunk({}, reason)
        if self.include_usage:
            yield _frame({**self.base, "choices": [], "usage": usage(response["usage"])})
        yield DONE


def chunks(include_usage: bool) -> Renderer:
    """The renderer for responses_app.http_turns.run_stream."""
    def render(turn: Turn) -> Callable[[dict[str, Any] | None], Iterator[str]]:
        return ChunkStream(turn, include_usage=include_usage).frames
    return render
