"""JSON on the hot path (every SSE frame, every upstream body and chunk, every stored turn) through
orjson, which encodes and decodes several times faster than the standard library (issue 13).

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
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """Compact JSON text."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
