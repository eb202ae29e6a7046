"""Helpers for Chat Completions tests: posting a body and reading a stream's chunks."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import ApiClient
from tests.contract import validate

PATH = "/v1/chat/completions"


def chat(api: ApiClient, **body: Any) -> Any:
    body.setdefault("model", "gpt-test")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return api.post(PATH, body)


def chunks(response: Any) -> tuple[list[dict[str, Any]], bool]:
    """A streamed answer's chunks, each validated, and whether it ended with `data: [DONE]`.
    Keep-alive comments are skipped; every frame is `data: <one line>` and a blank line, LF only."""
    raw = b"".join(response.streaming_content).decode()
    assert "\r" not in raw and raw.endswith("\n\n"), raw[-200:]
    found, done = [], False
    for frame in raw.removesuffix("\n\n").split("\n\n"):
        assert "\n" not in frame, frame
        if frame.startswith(":"):
            continue
        assert not done, "nothing may follow [DONE]"
        assert frame.startswith("data: "), frame
        data = frame.removeprefix("data: ")
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        if "error" not in chunk:
            validate("ChatCompletionChunk", chunk)
        found.append(chunk)
    return found, done


def streamed_text(found: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in found if c.get("choices"))
