"""The Messages API's views: parse, translate, run the turn (responses_app.http_turns), render."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.middleware.ratelimit import admitted_by_view
from responses_app import http_turns, input_tokens
from responses_app.context import TurnContext
from responses_app.views import api_view, one_call
from surfaces_app.anthropic_messages import render, translate
from surfaces_app.anthropic_messages.schema import CountTokensRequest, MessagesRequest, parse_body


@api_view("POST")
@admitted_by_view
def create_message(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    ctx = TurnContext.for_request(request)
    create = translate.create_request(parse_body(MessagesRequest, request.body),
                                      store=ctx.config.conversations.store_stateless_calls)
    if create.stream:
        return http_turns.run_stream(request, create, render.stream_frames, ctx)
    turn, response = http_turns.run_json(request, create, ctx)
    return http_turns.json_response(turn, render.message(turn, response))


def _count(ctx: TurnContext, body: bytes) -> dict[str, Any]:
    create = translate.count_request(parse_body(CountTokensRequest, body))
    return {"input_tokens": input_tokens.count_request(ctx, create)}


@api_view("POST")
def count_tokens(request: HttpRequest) -> HttpResponse:
    """Not `admitted_by_view`, like POST /v1/responses/input_tokens: one request, no tokens."""
    return one_call(request, _count)
