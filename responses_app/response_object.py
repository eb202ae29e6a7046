"""The Response object (responses-api.md §1b, "recommended object"): one renderer for create,
the stream's lifecycle events and retrieve, so all three always agree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from responses_app.schema import CreateResponseRequest

_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0, "top_p": 1.0, "parallel_tool_calls": True, "truncation": "disabled",
    "service_tier": "default", "background": False, "top_logprobs": 0, "presence_penalty": 0.0,
    "frequency_penalty": 0.0, "tool_choice": "auto", "metadata": {},
}


_ECHOED_WHEN_SENT = ("prompt", "prompt_cache_options", "prompt_cache_retention", "context_management", "moderation")


def echoed_settings(request: CreateResponseRequest) -> dict[str, Any]:
    """The request settings a Response echoes back, with OpenAI's defaults filled in."""
    settings: dict[str, Any] = {
        "previous_response_id": request.previous_response_id,
        "tools": [tool.model_dump(mode="json") for tool in request.tools],
        "tool_choice": (request.tool_choice if isinstance(request.tool_choice, str)
                        else request.tool_choice.model_dump()),
        "text": request.text.model_dump(mode="json", by_alias=True, exclude_none=True),
        "reasoning": request.reasoning,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "store": request.store,
        "safety_identifier": request.safety_identifier,
        "prompt_cache_key": request.prompt_cache_key,
    }
    for name, default in _DEFAULTS.items():
        value = getattr(request, name, None)
        settings.setdefault(name, default if value is None else value)
    # null when not sent, as OpenAI answers (the spec file's non-nullable typing is a known defect).
    settings["user"] = request.user
    settings["conversation"] = {"id": request.conversation_id} if request.conversation_id else None
    # Documented fields the gateway does not act on are still echoed back when sent.
    for name in _ECHOED_WHEN_SENT:
        if (value := getattr(request, name)) is not None:
            settings[name] = value
    return settings


def render_usage(usage: dict[str, int] | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.get("input_tokens", 0),
        "input_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0),
                                 "cache_write_tokens": usage.get("cache_write_tokens", 0)},
        "output_tokens": usage.get("output_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)},
        "total_tokens": usage.get("input_tokens", 0) + usage.get("output_tokens", 0),
    }


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def render_response(
    *,
    response_id: str,
    created_at: datetime,
    status: str,
    model: str,
    instructions: str | None,
    settings: dict[str, Any],
    output: list[dict[str, Any]],
    usage: dict[str, int] | None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
    completed_at: datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": unix(created_at),
        "completed_at": unix(completed_at) if status == "completed" else None,
        "status": status,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": instructions,
        "model": model,
        "output": output,
        "conversation": settings.get("conversation"),
    }
    body.update({k: v for k, v in settings.items() if k not in body})
    # null while in progress, or when the upstream reported none (never an estimate), as OpenAI sends it.
    body["usage"] = render_usage(usage)
    return body
