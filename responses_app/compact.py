"""`POST /v1/responses/compact`: a context compacted into a `CompactedResponse`, whose `output` starts
a new chain (as `input`, without `previous_response_id`) on any provider type.

The body is the SDK's `ResponseCompactParams` (`model`, `input`, `instructions`,
`previous_response_id`, `prompt_cache_*`, `service_tier`, `image`), validated by create's own schema
so every error names its parameter as create's would; parameters the gateway does not know are
accepted and passed on to a Responses-native upstream's compact endpoint, as create does. The
context is the caller's own `previous_response_id` chain (loaded exactly as create loads it), then
`input`. How each provider compacts: responses_app.compaction. Nothing is stored; the rate limiter
charges it as a turn, and settles it with the pass's real usage.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone

from gateway_project.api_errors import invalid_request
from gateway_project.json_body import parse_json_object
from responses_app import compaction
from responses_app.context import TurnContext
from responses_app.ids import new_id
from responses_app.pipeline import load_chain, request_items, upstream_errors
from responses_app.providers.base import ProviderRequest
from responses_app.providers.registry import get_registry
from responses_app.response_object import render_usage, unix
from responses_app.schema import CreateResponseRequest, parse_create_request

# What the gateway reads of a compact body itself; everything else goes to a Responses-native upstream as sent.
OWNED = ("model", "input", "instructions", "previous_response_id")
# The compact parameters create's schema validates too (the rest of ResponseCompactParams is owned).
VALIDATED = (*OWNED, "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "service_tier", "image")


def parse_compact_request(body: bytes) -> tuple[CreateResponseRequest, dict[str, Any]]:
    """The request as create's schema validates it, and the parameters passed on as sent."""
    data = parse_json_object(body)
    # `input` may be left out when a previous response gives the context: a placeholder passes
    # create's validation and is dropped again (it names nothing an error could point at).
    without_input = data.get("input") is None and bool(data.get("previous_response_id"))
    validated = {k: v for k, v in data.items() if k in VALIDATED}
    if without_input:
        validated["input"] = "-"
    request = parse_create_request(json.dumps(validated).encode())
    if without_input:
        request.input_items = []
    return request, {k: v for k, v in data.items() if k not in OWNED}


def compact(ctx: TurnContext, body: bytes) -> dict[str, Any]:
    """The `response.compaction` object for a compact request's body."""
    request, passthrough = parse_compact_request(body)
    route = get_registry(ctx.config).route(request.model, ctx.may_use)
    ctx.admit(body_bytes=len(body), max_output_tokens=None)
    chain = load_chain(request.previous_response_id, ctx.owner)
    history = chain.items if chain else []
    items = history + request_items(request, history)
    if not items:
        raise invalid_request("There is nothing to compact: 'input' is empty.", param="input", code="empty_array")
    context = compaction.open_context(items, owner=ctx.owner, first_input=len(history),
                                      native=compaction.native(route))
    provider_request = ProviderRequest(model=route.upstream_model, items=context, instructions=request.instructions,
                                       user=request.user, passthrough=passthrough, cancel=ctx.cancel,
                                       deadline=ctx.deadline)
    with upstream_errors("the compaction"):
        result = route.provider.compact(provider_request)
    if result.summary is not None:
        output = [item for item in items if compaction.is_user_message(item)]
        output.append(compaction.sealed_item(result.summary, ctx.owner))
    else:
        output = result.output or []
    usage = result.usage.as_dict() if result.usage is not None else None
    ctx.record_usage(usage)
    # `usage` is required here: an upstream that reported none is shown as zero (the limiter still
    # settles the request by its estimate, as it does a turn without usage).
    return {"id": new_id("resp"), "object": "response.compaction", "created_at": unix(timezone.now()),
            "output": output, "usage": render_usage(usage or {})}
