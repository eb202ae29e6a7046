"""Helpers shared by the translations to non-OpenAI wire formats (Anthropic, Gemini).

Both keep the system prompt outside the conversation, want tool-call arguments as a JSON object
rather than a string, and take images as base64 data or a URL; these are the common pieces.
"""

from __future__ import annotations

import json
import mimetypes
from typing import Any

from responses_app.providers.base import ProviderError


def text_of(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(p.get("text") or p.get("refusal") or "" for p in parts
                   if p.get("type") in ("input_text", "output_text", "refusal"))


def system_text(instructions: str | None, items: list[dict[str, Any]]) -> str:
    """`instructions` first, then every system/developer message: these upstreams have one system slot."""
    texts = [instructions] if instructions else []
    texts += [text_of(item["content"]) for item in items
              if item.get("type") == "message" and item.get("role") in ("system", "developer")]
    return "\n\n".join(t for t in texts if t)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL; None for other URLs."""
    if not url.startswith("data:"):
        return None
    header, _, data = url.partition(",")
    media_type = header.removeprefix("data:").split(";")[0] or "application/octet-stream"
    if ";base64" not in header:
        raise ProviderError("bad_request", "Only base64 data: URLs are supported for images and files.")
    return media_type, data


def guess_media_type(url: str, default: str = "image/jpeg") -> str:
    return mimetypes.guess_type(url.split("?")[0])[0] or default


def arguments_object(arguments: str) -> dict[str, Any]:
    """A function call's `arguments` string as the JSON object these upstreams require."""
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        raise ProviderError("bad_request", "A function_call's arguments are not valid JSON.") from None
    if not isinstance(value, dict):
        raise ProviderError("bad_request", "A function_call's arguments must be a JSON object.")
    return value


def output_text(output: Any) -> str:
    """A function_call_output's output as text (it may be a string or content parts)."""
    return output if isinstance(output, str) else text_of(output)


def merge_turn(turns: list[dict[str, Any]], role: str, parts: list[dict[str, Any]], *, key: str) -> None:
    """Append `parts` as a `role` turn, joining it to the previous turn when that has the same role
    (both upstreams want user and model turns to alternate)."""
    if not parts:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(parts)
    else:
        turns.append({"role": role, key: list(parts)})
