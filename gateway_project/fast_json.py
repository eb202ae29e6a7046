"""JSON on the hot path (every SSE frame and WebSocket event, every upstream body and chunk, every
stored turn, a turn's JSON answer, every JSON log line) through orjson, which encodes and decodes
several times faster than the standard library (issue 13).

Whatever orjson will not take it hands back to the standard library, so what is accepted and what
comes out means the same as before: integers wider than 64 bits, lone surrogates, non-string keys
(dumps); NaN and Infinity literals, lone surrogate escapes (loads; which then raises
`json.JSONDecodeError` for input that is not JSON, as before). One difference remains: decoding, an
integer wider than 64 bits becomes a float (the standard library kept it exact). Only upstream
bodies are decoded here; no provider sends such numbers, and a client's body, parsed by
gateway_project.json_body, may not hold one.

Output is compact and UTF-8: non-ASCII characters as themselves rather than `\\u` escapes, the
same JSON to any parser. The fallback escapes them, so a lone surrogate never reaches a socket
unescaped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from django.http import HttpResponse


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON text. `default` turns what JSON has no type for into something it has."""
    return encode(value, default=default).decode()


def encode(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact JSON text, encoded in UTF-8: what a socket is given."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=default).encode()


def response(data: dict[str, Any], *, status: int = 200) -> HttpResponse:
    """A JSON answer, as Django's JsonResponse gives it (its encoder, DjangoJSONEncoder, is the
    standard library's; the bodies here hold only JSON's own types)."""
    return HttpResponse(encode(data), status=status, content_type="application/json")


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
