"""`POST /v1/chat/completions`: parse, translate, run the one turn pipeline, render."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.middleware.ratelimit import admitted_by_view
from responses_app import http_turns
from responses_app.context import TurnContext
from responses_app.views import api_view
from surfaces_app.chat_completions import render
from surfaces_app.chat_completions.schema import parse_chat_request
from surfaces_app.chat_completions.translate import create_request


@api_view("POST")
@admitted_by_view
def create_chat_completion(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    chat = parse_chat_request(request.body)
    ctx = TurnContext.for_request(request)
    create = create_request(chat, store_by_default=ctx.config.conversations.store_stateless_calls)
    if create.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        return http_turns.run_stream(request, create, render.chunks(include_usage), ctx)
    turn, body = http_turns.run_json(request, create, ctx)
    return http_turns.json_response(turn, render.completion(body))
