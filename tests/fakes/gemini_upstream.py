"""A fake Gemini API: `POST /v1beta/models/{model}:generateContent` (JSON) and
`:streamGenerateContent?alt=sse` (one whole GenerateContentResponse per `data:` line, no event
names, no [DONE]; usage and finishReason on the last chunk), with Google's error body; and
`:countTokens` (`{"totalTokens"}` for a `generateContentRequest` or bare `contents`).

A `Reply` can open with a thought summary (a part with `thought: true`) and sign its first
function call (or text) with a `thoughtSignature`, as thinking models do; the signature must come
back on that part in the next turn. `quote_tool_result` appends the last `functionResponse` the
request carried to the text, so a tool round trip's final answer shows it reached the upstream.
`generationConfig.stopSequences` cut the text before the first one it contains (finishReason STOP).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Writer
from tests.fakes.steps import Count, Fail, Pacing, cut_at_stop, wait_first_byte, write_frames

_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+)"
                   r":(?P<method>generateContent|streamGenerateContent\?alt=sse|countTokens)$")
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass
class Reply(Pacing):
    text: str = "Hello from the fake Gemini."
    chunks: list[str] | None = None
    function_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name", "args"}
    finish_reason: str = "STOP"
    prompt_tokens: int = 17
    candidates_tokens: int = 8
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    thought: str | None = None
    thought_signature: str | None = None
    quote_tool_result: bool = False

    def stream_chunks(self) -> list[str]:
        if self.chunks is not None:
            return self.chunks
        words = self.text.split(" ") if self.text else []
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def usage(self) -> dict[str, Any]:
        usage = {"promptTokenCount": self.prompt_tokens, "candidatesTokenCount": self.candidates_tokens,
                 "totalTokenCount": self.prompt_tokens + self.candidates_tokens + self.thoughts_tokens}
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        if self.cached_tokens:
            usage["cachedContentTokenCount"] = self.cached_tokens
        return usage


def last_tool_result(request: dict[str, Any]) -> str:
    """The response of the last `functionResponse` part of a generateContent request, as text."""
    results = [part["functionResponse"].get("response") for content in request.get("contents") or []
               for part in content.get("parts") or [] if "functionResponse" in part]
    if not results:
        return ""
    response = results[-1]
    if isinstance(response, dict) and set(response) == {"output"} and isinstance(response["output"], str):
        return response["output"]
    return json.dumps(response)


class FakeGemini(FakeServer):
    name = "gemini"

    def __init__(self) -> None:
        super().__init__()
        self.default_step = Reply()

    def handle(self, recorded: Recorded, step: Any, writer: Writer) -> None:
        match = _PATH.match(recorded.path)
        if match is None:
            writer.json(404, {"error": {"code": 404, "message": f"no route {recorded.path}", "status": "NOT_FOUND"}})
            return
        if not recorded.headers.get("x-goog-api-key"):
            writer.json(403, {"error": {"code": 403, "message": "API key missing", "status": "PERMISSION_DENIED"}})
            return
        if not wait_first_byte(writer, step):
            return
        if isinstance(step, Fail):
            writer.json(step.status, {"error": {"code": step.status, "message": step.message,
                                                "status": _STATUS.get(step.status, "UNKNOWN")}}, headers=step.headers)
            return
        model = match.group("model")
        if match.group("method") == "countTokens":
            self._count(recorded, model, step, writer)
            return
        if step.quote_tool_result:
            step = replace(step, text=step.text + last_tool_result(recorded.json or {}))
        stops = ((recorded.json or {}).get("generationConfig") or {}).get("stopSequences")
        text, matched = cut_at_stop(step.text, stops)
        if matched is not None:  # Gemini stops there, with finishReason STOP as for a natural end
            step = replace(step, text=text, chunks=None, function_calls=[], finish_reason="STOP")
        if match.group("method") == "generateContent":
            writer.json(200, self._chunk(model, self._parts(step, whole=True), step, last=True))
            return
        pieces = self._parts(step, whole=False)
        frames = [f"data: {json.dumps(self._chunk(model, [p], step, last=i == len(pieces) - 1))}\r\n\r\n"
                  for i, p in enumerate(pieces)]
        write_frames(writer, frames, step)

    # What countTokens answers unless a test scripts a `Count`.
    default_count = 29

    def _count(self, recorded: Recorded, model: str, step: Any, writer: Writer) -> None:
        request = recorded.json or {}
        inner = request.get("generateContentRequest")
        # Either a whole GenerateContentRequest (naming its model) or bare contents, never both.
        valid = (set(request) == {"generateContentRequest"} and isinstance(inner, dict)
                 and inner.get("model") == f"models/{model}" and isinstance(inner.get("contents"), list)) or (
                     set(request) == {"contents"} and isinstance(request["contents"], list))
        if not valid:
            writer.json(400, {"error": {"code": 400, "message": "Invalid countTokens request",
                                        "status": "INVALID_ARGUMENT"}})
            return
        count = step.input_tokens if isinstance(step, Count) else self.default_count
        writer.json(200, {"totalTokens": count, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": count}]})

    @staticmethod
    def _parts(step: Reply, *, whole: bool) -> list[dict[str, Any]]:
        texts = ([step.text] if step.text else []) if whole else step.stream_chunks()
        parts: list[dict[str, Any]] = [{"text": step.thought, "thought": True}] if step.thought is not None else []
        answer: list[dict[str, Any]] = [{"text": t} for t in texts]
        answer += [{"functionCall": {"name": c["name"], "args": c["args"]}} for c in step.function_calls]
        if step.thought_signature and answer:
            # Gemini signs the first function call, or the first text part when there is none.
            signed = next((p for p in answer if "functionCall" in p), answer[0])
            signed["thoughtSignature"] = step.thought_signature
        parts += answer
        return parts or [{"text": ""}]

    @staticmethod
    def _chunk(model: str, parts: list[dict[str, Any]], step: Reply, *, last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": "fake-resp"}
        if last:
            candidate["finishReason"] = step.finish_reason
            chunk["usageMetadata"] = step.usage()
        else:
            # Gemini reports the prompt count on every chunk; the totals only on the last.
            chunk["usageMetadata"] = {"promptTokenCount": step.prompt_tokens, "totalTokenCount": step.prompt_tokens}
        return chunk
