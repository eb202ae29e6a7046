"""`POST /v1/responses/input_tokens`: how many input tokens a create request would cost.

The body takes the input side of a create request (the SDK's `InputTokenCountParams`), validated
by the create request's own schema, so every error names its parameter exactly as create's would.
The count covers what create would send upstream: the `previous_response_id` chain (the caller's
own, as for create), this request's `input` and `instructions`, the tools and the text format.
It is routed like create (the caller's model allow-list applies) to the model's first servable
provider entry, which counts (see `Provider.count_input_tokens`). Nothing is stored; the rate
limiter charges one request and no tokens.
"""

from __future__ import annotations

import json
from typing import Any

from gateway_project.api_errors import invalid_request
from gateway_project.json_body import parse_json_object
from responses_app import compaction
from responses_app.context import TurnContext
from responses_app.items import canonical_items
from responses_app.pipeline import load_chain, load_conversation, upstream_errors
from responses_app.providers.base import ProviderRequest
from responses_app.providers.registry import get_registry
from responses_app.response_object import echoed_settings
from responses_app.schema import CreateResponseRequest, parse_create_request

# The SDK's InputTokenCountParams: the input side of a create request.
PARAMS = ("conversation", "input", "instructions", "model", "parallel_tool_calls", "personality",
          "previous_response_id", "reasoning", "text", "tool_choice", "tools", "truncation")
PERSONALITY_MAX_LENGTH = 64


def parse_count_request(body: bytes) -> CreateResponseRequest:
    data = parse_json_object(body)
    for name in data:
        if name not in PARAMS:
            raise invalid_request(f"Unknown parameter: '{name}'.", param=name or None, code="unknown_parameter")
    personality = data.pop("personality", None)
    if personality is not None and not isinstance(personality, str):
        raise invalid_request("Invalid type for 'personality': expected a string.", param="personality",
                              code="invalid_type")
    if personality is not None and not 0 < len(personality) <= PERSONALITY_MAX_LENGTH:
        raise invalid_request(f"Invalid value for 'personality': at most {PERSONALITY_MAX_LENGTH} characters.",
                              param="personality", code="invalid_value")
    # `input` may be left out when a previous response gives the context: a placeholder passes
    # create's validation and is dropped again (it names nothing an error could point at).
    without_input = data.get("input") is None and bool(data.get("previous_response_id") or data.get("conversation"))
    if without_input:
        data["input"] = "-"
    # Create's own validation, so errors (and their `param`) are exactly create's.
    request = parse_create_request(json.dumps(data).encode())
    if without_input:
        request.input_items = []
    return request


def count_input_tokens(ctx: TurnContext, body: bytes) -> dict[str, Any]:
    """The `response.input_tokens` object for a count request's body."""
    return {"object": "response.input_tokens", "input_tokens": count_request(ctx, parse_count_request(body))}


def count_request(ctx: TurnContext, request: CreateResponseRequest) -> int:
    """The input tokens `request` would cost (also for the Messages API's count_tokens)."""
    route = get_registry(ctx.config).route(request.model, ctx.may_use)
    chain = load_chain(request.previous_response_id, ctx.owner)
    history = chain.items if chain else load_conversation(request.conversation_id, ctx.owner) or []
    settings = echoed_settings(request)
    # The model's first provider entry that can serve it (a fallback's, when the model's own has no key).
    candidate = route.provider.candidates[0]
    # What create would send: the gateway's compaction items opened into their summaries.
    items = compaction.open_context(history + canonical_items(request.input_items), owner=ctx.owner,
                                    first_input=len(history), native=compaction.native(route))
    provider_request = ProviderRequest(
        model=candidate.model.upstream_model, items=items,
        instructions=request.instructions, tools=settings["tools"], tool_choice=settings["tool_choice"],
        parallel_tool_calls=request.parallel_tool_calls, text_format=settings["text"].get("format"),
        cancel=ctx.cancel, deadline=ctx.deadline,
    )
    with upstream_errors("the count"):
        return candidate.provider.count_input_tokens(provider_request)
