"""Helpers of the Messages API tests: a client posting to /v1/messages, and its stream parsed."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client


def post(path: str, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return Client().post(path, data=data, content_type="application/json", headers=headers)


def create(**body: Any) -> Any:
    body.setdefault("max_tokens", 256)
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return post("/v1/messages", body)


def events(response: Any) -> list[dict[str, Any]]:
    """A streamed answer's events, the framing checked: `event: <type>` names each data's type."""
    raw = b"".join(response.streaming_content).decode()
    out = []
    for frame in raw.split("\n\n"):
        if not frame:
            continue
        name, data = frame.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}", frame
        out.append(payload)
    return out
